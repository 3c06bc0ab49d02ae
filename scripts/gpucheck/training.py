"""Step `training`: real `lowbit stage` runs of W2A2 ResNet-20 on the carried CIFAR-10
subset, from scratch, several at once (each its own process).

    eager fp32, seeds 0, 1, 2     the run-to-run noise, measured (not assumed binomial)
    compiled fp32, seeds 0, 1     agreement with eager within that noise
    compiled bf16, seeds 0, 1     the README's GPU setting, the same test
    eager fp32 seed 0, again      what a second identical run differs by (the reference)
    eager fp32 seed 0, killed     SIGKILL mid-epoch, rerun: resumes and must end equal to
                                  the uninterrupted run within that reference

Every run must reach the accuracy floor. cuDNN runs its deterministic algorithms here
(torch.backends.cudnn.deterministic), so that identical runs can be identical.
Agreement of two groups: |mean difference| <= t(0.995, df) * pooled sd * sqrt(1/n1 + 1/n2),
a two-sided t test at the 1 % level on the seeds' own spread.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gpucheck.record import Record

GROUPS = {"eager": (False, "fp32"), "compiled": (True, "fp32"), "compiled-bf16": (True, "bf16")}


RUNNING: list[subprocess.Popen] = []  # every lowbit process of this step, to stop on TERM


def _stop(signum: int, frame: object) -> None:
    """The driver's cap: stop every run (each in its own process group), then exit."""
    for proc in RUNNING:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    os._exit(1)


def run(rec: Record, s: dict) -> None:
    signal.signal(signal.SIGTERM, _stop)
    p, work = s["sizes"]["training"], Path(s["work"]) / "training"
    params = _params(s, p, work)
    t0 = time.time()
    _lowbit(s, ["stage", "prepare", "-p", str(params)], work / "prepare.log")
    meta = json.loads((work / "prepared" / "meta.json").read_text())
    n_val = int(meta["counts"]["val"])
    rec.check("subset prepared", None, {**meta["counts"], "s": round(time.time() - t0, 1)})
    runs = [(f"{g}-s{seed}", g, seed) for g, n in p["seeds"].items() for seed in range(n)]
    runs.append(("eager-s0-again", "eager", 0))
    jobs = [lambda r=r: _one(s, params, work, *r) for r in runs] + [
        lambda: _killed(s, params, work)
    ]
    with ThreadPoolExecutor(p["parallel"]) as pool:
        results = dict(pool.map(lambda job: job(), jobs))
    for log in sorted(work.glob("*.log")):  # into the step's output, so into gpu-check.log
        print(
            f"--- {log.name}, last lines:\n"
            + "\n".join(log.read_text(errors="replace").splitlines()[-4:])
        )
    rec.info(runs={k: {m: v[m] for m in ("top1", "wall_s")} for k, v in results.items() if v})
    _floor(rec, results, p["floor"])
    _agreement(rec, results, n_val)
    _resumed(rec, results, work)


def _params(s: dict, p: dict, work: Path) -> Path:
    """params.yaml (JSON is YAML) of every run; the runs differ by --set only."""
    common = {
        "seed": 0,
        "dataset": "imagefolder",
        "data_root": str(Path(s["carry"], "cifar10").resolve()),
        "data_dir": str(work / "prepared"),
        "runs_dir": str(work / "runs" / "default"),
        "reports_dir": str(work / "reports"),
        "live_dir": None,
        "model": "resnet20",
        "device": s["device"],
        "batch_size": p["batch"],
        "workers": p["workers"],
        "augment": "cifar",
        "progress": False,
        "precision": "fp32",
        "compile": False,
    }
    raw = {
        "common": common,
        "prepare": {"image_size": 32, "encoding": "raw", "train_per_class": p["per_class"]},
        "direct": {
            "init": "scratch",
            "epochs": p["epochs"],
            "eval_every": p["epochs"],
            "optim": {"lr": p["lr"], "schedule": "cosine"},
        },
    }
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(json.dumps(raw, indent=1) + "\n")
    return work / "params.yaml"


def _command(s: dict, params: Path, name: str, group: str, seed: int) -> list[str]:
    compiled, precision = GROUPS[group]
    sets = {
        "common.seed": seed,
        "common.compile": str(compiled).lower(),
        "common.precision": precision,
        "common.runs_dir": str(params.parent / "runs" / name),
    }
    args = ["stage", "direct", "--bits", "2", "-p", str(params)]
    return [*args, *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]


def _start(s: dict, args: list[str], log: Path) -> subprocess.Popen:
    """`lowbit ARGS` with deterministic cuDNN, in its own process group, output to `log`."""
    code = (
        "import sys, torch; torch.backends.cudnn.deterministic = True; "
        "from lowbit.cli import app; sys.argv[0] = 'lowbit'; app()"
    )
    log.parent.mkdir(parents=True, exist_ok=True)
    p = s["sizes"]["training"]
    # runs share the machine's cores: torch's threads and inductor's compile workers each
    cores = str(max(1, (os.cpu_count() or 1) // p["parallel"]))
    env = {
        **os.environ,
        "TORCHINDUCTOR_COMPILE_THREADS": str(p["compile_threads"]),
        "OMP_NUM_THREADS": cores,
    }
    with open(log, "ab") as f:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=s["root"],
            env=env,
            start_new_session=True,
        )
    RUNNING.append(proc)
    return proc


def _lowbit(s: dict, args: list[str], log: Path) -> None:
    """`lowbit ARGS` to the end; an error names the command and the log's last lines."""
    rc = _start(s, args, log).wait()
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"lowbit {' '.join(args[:2])} exited {rc}: {' | '.join(tail)}")


def _one(s: dict, params: Path, work: Path, name: str, group: str, seed: int) -> tuple:
    try:
        _lowbit(s, _command(s, params, name, group, seed), work / f"{name}.log")
        return name, _result(work / "runs" / name)
    except Exception as e:  # a failed run is reported, the others still count
        print(f"{name}: {e}", flush=True)
        return name, None


def _result(runs_dir: Path) -> dict:
    (metrics,) = runs_dir.glob("direct/*/metrics.json")  # runs/direct/<the run's slug>
    out = metrics.parent
    m = json.loads(metrics.read_text())
    return {"top1": float(m["top1"]), "wall_s": float(m["wall_s"]), "model": str(out / "model.pt")}


def _killed(s: dict, params: Path, work: Path) -> tuple:
    """Seed 0 eager, SIGKILLed half an epoch after its (epochs // 2)-th checkpoint, rerun."""
    name, log = "eager-s0-resumed", work / "eager-s0-resumed.log"
    args = _command(s, params, name, "eager", 0)
    ckpt = work / "runs" / name / ".resume" / "direct"  # <slug>/round0.pt below
    try:
        proc = _start(s, args, log)
        seen = _watch(proc, ckpt, max(1, s["sizes"]["training"]["epochs"] // 2))
        gap = seen[-1] - seen[-2] if len(seen) > 1 else 1.0  # an epoch, as measured
        time.sleep(0.5 * min(gap, 30.0))  # into the next epoch
        killed = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _lowbit(s, args, log)  # the same command again: resumes from the checkpoint
        res = _result(work / "runs" / name)
        return name, {**res, "killed_mid_run": killed, "after_epochs": len(seen)}
    except Exception as e:
        print(f"{name}: {e}", flush=True)
        return name, None


def _watch(proc: subprocess.Popen, ckpt: Path, writes: int) -> list[float]:
    """Times at which the round's checkpoint was rewritten, until `writes` of them."""
    seen: list[float] = []
    last = None
    while proc.poll() is None and len(seen) < writes:
        time.sleep(0.05)
        try:
            (path,) = ckpt.glob("*/round0.pt")
            stamp = path.stat().st_mtime_ns
        except (ValueError, FileNotFoundError):  # not yet, or between write and rename
            continue
        if stamp != last:
            last = stamp
            seen.append(time.time())
    return seen


def _floor(rec: Record, results: dict, floor: float) -> None:
    top = {k: v["top1"] for k, v in results.items() if v}
    failed = sorted(k for k, v in results.items() if not v)
    ok = not failed and all(t >= floor for t in top.values())
    rec.check(
        f"every run reaches top-1 >= {floor} %",
        ok,
        {"min": min(top.values(), default=math.nan), "runs": len(top), "failed": failed},
    )


def agree(a: list[float], b: list[float], n_val: int) -> dict:
    """The t test above: pooled sd of the groups' own spreads, the allowed difference."""
    from scipy import stats

    df = len(a) + len(b) - 2
    ss = sum((x - sum(a) / len(a)) ** 2 for x in a) + sum((x - sum(b) / len(b)) ** 2 for x in b)
    sd = math.sqrt(ss / df) if df > 0 else math.nan
    floor = 100.0 / n_val  # one validation image: a spread of zero is not "no noise"
    allowed = float(stats.t.ppf(0.995, df)) * max(sd, floor) * math.sqrt(1 / len(a) + 1 / len(b))
    diff = sum(b) / len(b) - sum(a) / len(a)
    return {
        "diff": diff,
        "pooled_sd": sd,
        "df": df,
        "allowed": allowed,
        "agree": abs(diff) <= allowed,
    }


def _agreement(rec: Record, results: dict, n_val: int) -> None:
    groups = {
        g: [
            v["top1"]
            for k, v in results.items()
            if v and k.startswith(f"{g}-s") and not k.endswith(("again", "resumed"))
        ]
        for g in GROUPS
    }
    eager = groups["eager"]
    if len(eager) > 1:
        m = sum(eager) / len(eager)
        sd = math.sqrt(sum((x - m) ** 2 for x in eager) / (len(eager) - 1))
        rec.check("run-to-run noise (eager seeds)", None, {"top1": eager, "sd": sd})
    for g in ("compiled", "compiled-bf16"):
        if not groups[g] and not any(k.startswith(f"{g}-s") for k in results):
            rec.check(f"{g} vs eager", None, {}, "not in this profile (--quick)")
            continue
        if len(eager) < 2 or len(groups[g]) < 1:
            rec.check(f"{g} vs eager", False, {"eager": eager, g: groups[g]}, "too few runs")
            continue
        a = agree(eager, groups[g], n_val)
        rec.check(f"{g} vs eager fp32 top-1, within the noise", a.pop("agree"), {**a, g: groups[g]})


def _distance(a: str, b: str) -> float:
    """max over tensors of ||a - b|| / ||b|| between two runs' final student networks."""
    import torch

    sa = torch.load(a, weights_only=True)["nets"]["student"]["model"]
    sb = torch.load(b, weights_only=True)["nets"]["student"]["model"]
    d = 0.0
    for k, v in sb.items():
        if v.is_floating_point():
            d = max(
                d, float((sa[k].double() - v.double()).norm() / v.double().norm().clamp(min=1e-12))
            )
    return d


def _resumed(rec: Record, results: dict, work: Path) -> None:
    ref, again, res = (results.get(k) for k in ("eager-s0", "eager-s0-again", "eager-s0-resumed"))
    if not (ref and again and res):
        rec.check("kill and resume", False, {}, "a run of the comparison failed")
        return
    noise, off = _distance(again["model"], ref["model"]), _distance(res["model"], ref["model"])
    numbers = {
        "resumed_vs_ref": off,
        "identical_runs_differ_by": noise,
        "top1": [ref["top1"], again["top1"], res["top1"]],
        "killed_mid_run": res["killed_mid_run"],
        "after_epochs": res["after_epochs"],
    }
    ok = res["killed_mid_run"] and off <= 3 * noise + 1e-7
    note = (
        "bitwise-identical runs: the resumed one must be too"
        if noise == 0
        else ("runs of one seed differ on this device: the resumed one may differ up to 3x as much")
    )
    rec.check("killed mid-run and resumed = uninterrupted run", ok, numbers, note)
