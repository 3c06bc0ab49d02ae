"""Step `steptime`: the time of one training step (forward, backward, SGD) of ResNet-20 on
32x32 images, full precision (FP) against W2A2, eager and compiled, fp32 and bf16,
through lowbit's engine (make_trainee, CrossEntropy) as a stage runs it.

Each row: its first step (which, compiled, holds the compile time: reported apart),
warm-up steps, then repetitions of a few steps between device synchronisations; the
step time is the median repetition. Reported: every row, W2A2 / the fastest FP row
(what quantization costs against the best the user could run) and eager / compiled
per network and precision (what compiling gains). The eager rows run first, then the
compiled W2A2 rows, so a cut-short step keeps the most telling numbers.
"""

from __future__ import annotations

import statistics
import time

import torch

from gpucheck.record import Record

ROWS = [
    ("fp", "eager", "fp32"),
    ("w2a2", "eager", "fp32"),
    ("fp", "eager", "bf16"),
    ("w2a2", "eager", "bf16"),
    ("w2a2", "compiled", "fp32"),
    ("fp", "compiled", "fp32"),
    ("w2a2", "compiled", "bf16"),
    ("fp", "compiled", "bf16"),
]


def run(rec: Record, s: dict) -> None:
    p, dev = s["sizes"]["steptime"], torch.device(s["device"])
    rows = [r for r in ROWS if p["compiled"] or r[1] == "eager"]
    ms: dict[tuple, float] = {}
    for net, mode, precision in rows:
        try:
            first, times = _time_row(net, mode == "compiled", precision, dev, p)
        except Exception as e:  # a row that fails is reported; the others still run
            rec.check(f"{net} {mode} {precision}", False, {}, f"{type(e).__name__}: {e}"[:300])
            continue
        ms[net, mode, precision] = statistics.median(times)
        rec.info(summary=_ratios(ms))  # so far: a step cut short still says it
        rec.check(
            f"{net} {mode} {precision}",
            None,
            {
                "median_ms": ms[net, mode, precision],
                "min_ms": min(times),
                "first_step_s": first,
                "images_per_s": p["batch"] / ms[net, mode, precision] * 1e3,
            },
        )
    _summary(rec, ms, p)


def _time_row(net: str, compiled: bool, precision: str, dev: torch.device, p: dict) -> tuple:
    """(first step in s, per-step ms of each repetition)."""
    from lowbit import engine
    from lowbit.models import build_model
    from lowbit.quant import quantize

    torch.manual_seed(0)
    model = build_model("resnet20", 10)
    if net == "w2a2":
        model = quantize(model, 2, 2)
    ex = engine.Execution(channels_last=True, precision=precision, compile=compiled)
    t = engine.make_trainee(net, model, engine.OptimSpec(lr=0.01), dev, ex)
    x = torch.randn(p["batch"], 3, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (p["batch"],), device=dev)
    step = engine.CrossEntropy()

    def steps(n: int) -> float:
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(n):
            step([t], x, y)
        _sync(dev)
        return time.perf_counter() - t0

    first = steps(1)
    steps(p["warmup"])
    return first, [steps(p["per_rep"]) / p["per_rep"] * 1e3 for _ in range(p["reps"])]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _ratios(ms: dict) -> dict:
    """W2A2 / the fastest FP row, and eager / compiled per network and precision."""
    fp = {k: v for k, v in ms.items() if k[0] == "fp"}
    out: dict = {}
    if fp:
        best = min(fp, key=fp.get)
        out["fastest_fp"] = f"{' '.join(best[1:])} {fp[best]:.3f} ms"
        out["w2a2_over_fastest_fp"] = {
            f"{m} {pr}": v / fp[best] for (n, m, pr), v in ms.items() if n == "w2a2"
        }
    out["compile_gain"] = {
        f"{n} {pr}": ms[n, "eager", pr] / v
        for (n, m, pr), v in ms.items()
        if m == "compiled" and (n, "eager", pr) in ms
    }
    return out


def _summary(rec: Record, ms: dict, p: dict) -> None:
    r = _ratios(ms)
    if "fastest_fp" in r:
        rec.check(f"W2A2 / fastest FP ({r['fastest_fp']})", None, r["w2a2_over_fastest_fp"])
    if r["compile_gain"]:
        rec.check("compiling gains (eager / compiled step time)", None, r["compile_gain"])
    if not p["compiled"]:
        rec.check("compiled rows", None, {}, "skipped in this profile (--quick)")
