"""What fake quantization costs a training step (issue 8): lowbit vs FP and peers.

One train step = forward + loss + backward + SGD step (Nesterov, the engine's own
`CrossEntropy` objective and `optimizer_step`), CIFAR ResNet-20 (10 classes) on one
random batch of 32x32 images, measured for:

- fp: the float network, eager;
- lowbit_w4a4, lowbit_w2a2: `quantize(model, w_bits, a_bits)` (paper §3.1 quantizers);
- lowbit_w2a2_sp: stochastic precision simulated: before every step a random half
  of the quantizers is disabled through their `enabled` flags (paper §3.3);
- lowbit_w2a2_kd: one joint-distillation step (paper §4): FP teacher + W2A2 student,
  `JointDistillation` objective; total and per network (teacher = its forward + its
  backward and step; student = its forward, backward and step);
- brevitas_w2a2 (if brevitas is installed): the same network with brevitas
  QuantConv2d (2-bit weights) and QuantReLU (2-bit) in place of every quantized conv
  and of every ReLU that feeds one;
- torch_ao_qat: eager-mode `prepare_qat` with the default fbgemm qconfig (int8 fake
  quantization), first conv and last fc left float as in the paper's layer policy.

Time: all variants live in one process and are stepped in turn, the order rotated each
repetition, so machine noise (other jobs on a shared machine) hits them alike; we report
the median and the inter-quartile range (IQR, q75 - q25) of per-step wall time, after
warm-up steps, and beside them the fastest step (min) and the median process CPU time
(all threads), which suffer less when other jobs compete for the cores. On CUDA, steps
run under AMP (float16 autocast + GradScaler) and channels_last, as the engine trains,
with a synchronize around each step.

Memory: a fresh subprocess per variant (one for all in quick mode). On the CPU it
reads the resident set size (RSS): it records RSS before the model is built, runs
warm-up steps, resets the kernel's peak-RSS counter (/proc/self/clear_refs, "5"), runs
one step and reads the peak (VmHWM). peak_mb = that peak - the RSS before the model,
i.e. parameters, gradients, optimizer state and everything the step holds at once
(activations saved for backward, temporaries), without the interpreter and libraries.
glibc is told to mmap every block over 64 KiB (MALLOC_MMAP_THRESHOLD_), so freed
tensors leave the RSS at once and RSS follows the live tensor bytes. (tracemalloc does
not see torch's allocations.) On CUDA: torch.cuda.max_memory_allocated, same baseline.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lowbit import engine
from lowbit.models import build_model
from lowbit.provenance import provenance
from lowbit.quant import _kernels, iter_quantizers, quantize
from lowbit.quant.convert import default_keep_fp

VARIANTS = (
    "fp",
    "lowbit_w4a4",
    "lowbit_w2a2",
    "lowbit_w2a2_sp",
    "lowbit_w2a2_kd",
    "brevitas_w2a2",
    "torch_ao_qat",
)
PEERS = ("brevitas_w2a2", "torch_ao_qat")
LABELS = {
    "fp": "FP32 eager",
    "lowbit_w4a4": "lowbit W4A4",
    "lowbit_w2a2": "lowbit W2A2",
    "lowbit_w2a2_sp": "lowbit W2A2, stochastic precision (half the quantizers on)",
    "lowbit_w2a2_kd": "lowbit W2A2 joint KD (FP teacher + W2A2 student)",
    "brevitas_w2a2": "Brevitas 2-bit (QuantConv2d + QuantReLU)",
    "torch_ao_qat": "torch.ao QAT int8 (fbgemm qconfig)",
}
TARGETS = {"time_ratio": 1.15, "memory_ratio": 1.3}  # lowbit W2A2 vs FP (issue 8)
NUM_CLASSES = 10


@dataclass
class Bench:
    """One variant: `step()` runs a train step and returns per-network seconds ({} if one)."""

    name: str
    step: Callable[[], dict[str, float]]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch(device: torch.device, batch_size: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, 32, 32, generator=g)  # (N, 3, 32, 32) normalised images
    y = torch.randint(0, NUM_CLASSES, (batch_size,), generator=g)
    x, y = x.to(device), y.to(device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _brevitas(fp: nn.Module, bits: int = 2) -> nn.Module:
    """ResNet-20 with brevitas layers where lowbit quantizes (its own per-tensor scales)."""
    with _kernels._quiet("torch.utils.cpp_extension"):  # brevitas imports it: a CUDA warning
        import brevitas.nn as qnn

    model = copy.deepcopy(fp)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    for name in convs[1:]:  # the first conv stays float
        c = model.get_submodule(name)
        q = qnn.QuantConv2d(
            c.in_channels,
            c.out_channels,
            c.kernel_size,
            stride=c.stride,
            padding=c.padding,
            bias=c.bias is not None,
            weight_bit_width=bits,
        )
        q.weight.data.copy_(c.weight.data)
        _swap(model, name, q)
    relus = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    for name in relus[:-1]:  # the last ReLU feeds the float fc
        _swap(model, name, qnn.QuantReLU(bit_width=bits))
    return model


def _torch_ao(fp: nn.Module) -> nn.Module:
    import warnings

    from torch.ao import quantization as tq

    model = copy.deepcopy(fp).train()
    model.qconfig = tq.get_default_qat_qconfig("fbgemm")
    for name in default_keep_fp(model):
        model.get_submodule(name).qconfig = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq.prepare_qat(model, inplace=True)
    return model


def _model(name: str, fp: nn.Module) -> nn.Module:
    if name == "fp":
        return copy.deepcopy(fp)
    if name == "lowbit_w4a4":
        return quantize(fp, 4, 4)
    if name.startswith("lowbit_w2a2"):
        return quantize(fp, 2, 2)
    if name == "brevitas_w2a2":
        return _brevitas(fp)
    if name == "torch_ao_qat":
        return _torch_ao(fp)
    raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")


def _plain_step(trainee: engine.Trainee, x: Tensor, y: Tensor) -> Callable[[], dict]:
    objective = engine.CrossEntropy()

    def step() -> dict[str, float]:
        objective([trainee], x, y)
        return {}

    return step


def _sp_step(trainee: engine.Trainee, x: Tensor, y: Tensor) -> Callable[[], dict]:
    """Stochastic precision, simulated: a fresh random half of the quantizers each step."""
    quantizers = [q for _, q in iter_quantizers(trainee.model)]
    g = torch.Generator().manual_seed(0)
    plain = _plain_step(trainee, x, y)

    def step() -> dict[str, float]:
        on = torch.randperm(len(quantizers), generator=g)[: len(quantizers) // 2].tolist()
        for i, q in enumerate(quantizers):
            q.enabled = i in on
        return plain()

    return step


def _kd_step(student: engine.Trainee, teacher: engine.Trainee, x: Tensor, y: Tensor):
    """JointDistillation step; per-network times from hooks on the teacher's forward and
    both optimizers' steps (teacher fwd | student fwd+bwd+step | teacher bwd+step)."""
    from lowbit.methods import JointDistillation

    objective, device, marks = JointDistillation(), x.device, {}

    def mark(key: str) -> Callable[..., None]:
        def hook(*_: object) -> None:
            _sync(device)
            marks[key] = time.perf_counter()

        return hook

    teacher.model.register_forward_hook(mark("teacher_fwd"))
    student.optimizer.register_step_post_hook(mark("student_step"))

    def step() -> dict[str, float]:
        t0 = time.perf_counter()
        objective([student, teacher], x, y)
        _sync(device)
        t1 = time.perf_counter()
        teacher_s = (marks["teacher_fwd"] - t0) + (t1 - marks["student_step"])
        return {"teacher": teacher_s, "student": marks["student_step"] - marks["teacher_fwd"]}

    return step


def build_bench(name: str, device: torch.device, batch_size: int) -> Bench:
    """The variant's model(s), optimiser(s) and batch, ready to step."""
    torch.manual_seed(0)
    fp = build_model("resnet20", NUM_CLASSES)
    x, y = _batch(device, batch_size)
    spec = engine.OptimSpec(lr=0.01)  # small lr: keeps random-label steps finite
    trainee = engine.make_trainee(name, _model(name, fp), spec, device)
    trainee.model.train()
    if name == "lowbit_w2a2_sp":
        return Bench(name, _sp_step(trainee, x, y))
    if name == "lowbit_w2a2_kd":
        teacher = engine.make_trainee("teacher", copy.deepcopy(fp), spec, device)
        return Bench(name, _kd_step(trainee, teacher, x, y))
    return Bench(name, _plain_step(trainee, x, y))


def available(names: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The variants that can run here, and why the others cannot."""
    import importlib.util

    skipped = {}
    if "brevitas_w2a2" in names and importlib.util.find_spec("brevitas") is None:
        skipped["brevitas_w2a2"] = "brevitas not installed (pip install 'lowbit[bench]')"
    return [n for n in names if n not in skipped], skipped


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_steps(
    benches: Sequence[Bench], device: torch.device, reps: int, warmup: int
) -> dict[str, dict[str, list[float]]]:
    """Interleaved repetitions: per variant, step seconds (wall and process CPU time),
    per-network parts and minor page faults."""
    for b in benches:
        for _ in range(warmup):
            b.step()
    out: dict[str, dict[str, list[float]]] = {
        b.name: {"step": [], "cpu": [], "faults": []} for b in benches
    }
    gc.collect()
    gc.disable()  # no collector pauses inside a timed step
    try:
        for r in range(reps):
            k = r % len(benches)
            for b in [*benches[k:], *benches[:k]]:
                _sync(device)
                f0, c0, t0 = _minor_faults(), time.process_time(), time.perf_counter()
                parts = b.step()
                _sync(device)
                out[b.name]["step"].append(time.perf_counter() - t0)
                out[b.name]["cpu"].append(time.process_time() - c0)
                out[b.name]["faults"].append(float(_minor_faults() - f0))
                for key, s in parts.items():
                    out[b.name].setdefault(key, []).append(s)
            gc.collect()
    finally:
        gc.enable()
    return out


def summary(seconds: Sequence[float]) -> dict[str, float]:
    """median, q25, q75 and IQR in milliseconds."""
    ms = sorted(1e3 * s for s in seconds)
    if len(ms) == 1:
        q25 = q75 = ms[0]
    else:
        q25, _, q75 = statistics.quantiles(ms, n=4, method="inclusive")
    return {"median_ms": statistics.median(ms), "q25_ms": q25, "q75_ms": q75, "iqr_ms": q75 - q25}


# ---- memory, in a fresh process per variant ---------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _preload(name: str) -> None:
    """Import what the variant imports lazily, so the baseline RSS already holds it."""
    import lowbit.methods  # noqa: F401

    _kernels.cpu_extension()
    if name == "brevitas_w2a2":
        with _kernels._quiet("torch.utils.cpp_extension"):
            import brevitas.nn  # noqa: F401
    if name == "torch_ao_qat":
        import torch.ao.quantization  # noqa: F401


def _measure_memory(name: str, device: torch.device, batch_size: int) -> dict[str, Any]:
    _preload(name)
    gc.collect()
    cuda = device.type == "cuda"
    base = torch.cuda.memory_allocated(device) if cuda else _rss()
    bench = build_bench(name, device, batch_size)
    for _ in range(2):
        bench.step()  # optimizer state exists after the first step
    gc.collect()
    _sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        method = "torch.cuda.max_memory_allocated"
    else:
        method = "VmHWM after clear_refs" if _reset_peak_rss() else "ru_maxrss (not reset)"
    before = torch.cuda.memory_allocated(device) if cuda else _rss()
    bench.step()
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) if cuda else _peak_rss()
    del bench
    gc.collect()
    mib = 2.0**20
    return {
        "peak_mb": (peak - base) / mib,  # model + optimizer state + the step's peak
        "state_mb": (before - base) / mib,
        "method": method,
    }


def memory_main(argv: Sequence[str]) -> None:
    """Child entry point: argv = names (comma separated), batch size, threads, device."""
    names, batch_size, threads, device = argv
    torch.set_num_threads(int(threads))
    dev, n = torch.device(device), int(batch_size)
    warm = build_bench("fp", dev, n)  # one-time costs (oneDNN, allocator) go in the baseline
    for _ in range(2):
        warm.step()
    del warm
    out = {name: _measure_memory(name, dev, n) for name in names.split(",")}
    print(json.dumps(out))


def measure_memory(
    groups: Sequence[Sequence[str]], device: torch.device, batch_size: int, threads: int
) -> dict[str, dict[str, Any]]:
    """Run one child process per group of variants; errors are reported, not raised."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONWARNINGS="ignore")
    code = "import sys; from lowbit.bench.overhead import memory_main; memory_main(sys.argv[1:])"
    out: dict[str, dict[str, Any]] = {}
    for group in groups:
        args = [",".join(group), str(batch_size), str(threads), str(device)]
        proc = subprocess.run(
            [sys.executable, "-c", code, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            out.update({n: {"error": f"exit {proc.returncode}: {err}"} for n in group})
        else:
            out.update(json.loads(lines[-1]))
    return out


# ---- the report ---------------------------------------------------------------------------


def _variant_rows(
    times: dict[str, dict[str, list[float]]], memory: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    fp = times.get("fp")
    fp_t = statistics.median(fp["step"]) if fp else None
    fp_min = min(fp["step"]) if fp else None
    fp_cpu = statistics.median(fp["cpu"]) if fp else None
    fp_m = memory.get("fp", {}).get("peak_mb")
    rows: dict[str, dict[str, Any]] = {}
    for name, series in times.items():
        row: dict[str, Any] = {"label": LABELS[name], **summary(series["step"])}
        row["times_ms"] = [round(1e3 * s, 3) for s in series["step"]]
        row["min_ms"] = 1e3 * min(series["step"])
        row["cpu_ms"] = 1e3 * statistics.median(series["cpu"])  # all threads' CPU time
        row["page_faults_per_step"] = statistics.median(series["faults"])
        row["parts"] = {
            k: summary(v) for k, v in series.items() if k not in ("step", "cpu", "faults")
        }
        row["ratio_fp"] = row["median_ms"] / (1e3 * fp_t) if fp_t else None
        row["min_ratio_fp"] = row["min_ms"] / (1e3 * fp_min) if fp_min else None
        row["cpu_ratio_fp"] = row["cpu_ms"] / (1e3 * fp_cpu) if fp_cpu else None
        row["memory"] = memory.get(name, {})
        peak = row["memory"].get("peak_mb")
        row["peak_mb"] = peak
        row["memory_ratio_fp"] = peak / fp_m if peak is not None and fp_m else None
        rows[name] = row
    for name, row in rows.items():
        row["ratio_peers"] = {
            p: row["median_ms"] / rows[p]["median_ms"] for p in PEERS if p in rows and p != name
        }
    return rows


def _machine(device: torch.device) -> dict[str, Any]:
    prov = provenance(Path.cwd(), device, seed=0)
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = []
    return {
        **{k: prov[k] for k in ("cpu", "device", "device_name", "threads", "python", "hostname")},
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "git_commit": prov["git_commit"],
        "git_dirty": prov["git_dirty"],
        "lowbit_kernels": _kernels.backend_name(),
        "lowbit_kernels_detail": _kernels.backend_reason(),
        "loadavg_1_5_15": load,
    }


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "–" if v is None else format(v, spec)


def _busy(machine: dict[str, Any]) -> bool:
    """Was the machine shared: a load average above the core count during the run?"""
    loads = [float(v) for v in machine["loadavg_1_5_15"][:1] + machine.get("loadavg_end", [])[:1]]
    return bool(loads) and max(loads) > (machine["cpu_count"] or 1)


def _noise_note(machine: dict[str, Any]) -> str:
    return (
        f"Note: other jobs shared this machine (load average {machine['loadavg_1_5_15'][0]} "
        f"at the start, {(machine.get('loadavg_end') or ['?'])[0]} at the end, on "
        f"{machine['cpu_count']} cores), so wall times include waiting for a CPU. The min "
        "column (the least disturbed step) and the CPU time (all threads, spin-waits "
        "included) are less affected than the median."
    )


def markdown(result: dict[str, Any]) -> str:
    m, c = result["machine"], result["config"]
    peers = [p for p in PEERS if p in result["variants"]]
    head = ["Variant", "median ms", "IQR ms", "× FP", "min ms", "× FP (min)", "CPU ms"]
    head += ["× FP (CPU)", "peak MB", "memory × FP"]
    head += [f"× {LABELS[p].split(' (')[0]}" for p in peers]
    lines = [
        "# Fake-quantization overhead of one training step",
        "",
        f"ResNet-20 CIFAR, batch {c['batch_size']}, forward + backward + SGD step; "
        f"{c['reps']} interleaved repetitions after {c['warmup']} warm-up steps"
        f"{' (quick mode)' if c['quick'] else ''}.",
        f"Machine: {m['device_name']}, {m['threads']} threads, torch {m['torch']}, "
        f"lowbit kernels: {m['lowbit_kernels']}, load average at start "
        f"{' '.join(m['loadavg_1_5_15']) or 'n/a'}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in result["variants"].values():
        cells = [row["label"], _fmt(row["median_ms"], ".1f"), _fmt(row["iqr_ms"], ".1f")]
        cells += [_fmt(row["ratio_fp"]), _fmt(row["min_ms"], ".1f"), _fmt(row["min_ratio_fp"])]
        cells += [_fmt(row["cpu_ms"], ".1f"), _fmt(row["cpu_ratio_fp"])]
        cells += [_fmt(row["peak_mb"], ".0f"), _fmt(row["memory_ratio_fp"])]
        cells += [_fmt(row["ratio_peers"].get(p)) for p in peers]
        lines.append("| " + " | ".join(cells) + " |")
    for name, row in result["variants"].items():
        for part, s in row["parts"].items():
            lines.append(
                f"\n{LABELS[name]}: {part} {s['median_ms']:.1f} ms (IQR {s['iqr_ms']:.1f})."
            )
    for name, why in result["skipped"].items():
        lines.append(f"\nNot run: {name}: {why}.")
    t = result["targets"]
    lines += ["", _noise_note(m)] if _busy(m) else []
    lines += [
        "",
        f"Targets for lowbit W2A2: time ≤ {t['time_ratio']}× FP: "
        f"{'met' if t['time_met'] else 'NOT met'}; memory ≤ {t['memory_ratio']}× FP: "
        f"{'met' if t['memory_met'] else 'NOT met'}.",
        "",
        f"Memory: {result['memory_method']}",
    ]
    return "\n".join(lines) + "\n"


def run_overhead(
    out_dir: Path = Path("reports/bench"),
    batch_size: int = 128,
    reps: int = 20,
    threads: int | None = None,
    quick: bool = False,
    variants: Sequence[str] = VARIANTS,
) -> dict[str, Any]:
    """Measure every variant, write overhead.json and overhead.md to `out_dir`, return
    the result. `threads`: torch's intra-op threads for the run (default: as set now).
    `quick`: batch 4, 2 repetitions, 1 warm-up, memory in one process (a smoke run)."""
    saved_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        result = _run(batch_size, reps, quick, variants)
    finally:
        torch.set_num_threads(saved_threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "overhead.md").write_text(markdown(result))
    return result


def _run(batch_size: int, reps: int, quick: bool, variants: Sequence[str]) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if quick:
        batch_size, reps = min(batch_size, 4), 2
    warmup = 1 if quick else 3
    names, skipped = available(variants)
    machine = _machine(device)
    benches = [build_bench(n, device, batch_size) for n in names]
    times = time_steps(benches, device, reps, warmup)
    del benches
    groups = [names] if quick else [[n] for n in names]
    memory = measure_memory(groups, device, batch_size, torch.get_num_threads())
    rows = _variant_rows(times, memory)
    machine["loadavg_end"] = _machine_load()
    w2a2 = rows.get("lowbit_w2a2", {})
    return {
        "machine": machine,
        "config": {
            "model": "resnet20",
            "num_classes": NUM_CLASSES,
            "batch_size": batch_size,
            "reps": reps,
            "warmup": warmup,
            "quick": quick,
            "amp": device.type == "cuda",
        },
        "variants": rows,
        "skipped": skipped,
        "targets": {
            **TARGETS,
            "time_met": (w2a2.get("ratio_fp") or 1e9) <= TARGETS["time_ratio"],
            "memory_met": (w2a2.get("memory_ratio_fp") or 1e9) <= TARGETS["memory_ratio"],
        },
        "memory_method": (__doc__ or "").split("Memory: ", 1)[-1].strip().replace("\n", " "),
    }


def _machine_load() -> list[str]:
    try:
        return Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        return []


def main() -> None:
    """`lowbit bench overhead`: full run with the defaults; prints the Markdown table."""
    out_dir = Path("reports/bench")
    result = run_overhead(out_dir=out_dir)
    print(markdown(result))
    print(f"written: {out_dir / 'overhead.json'}, {out_dir / 'overhead.md'}")
