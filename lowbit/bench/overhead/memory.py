"""Peak memory of a train step, measured in a fresh process per row (one for all rows
in quick mode or with --one-memory-process), so no row inherits another's allocations.

CPU: glibc is told to mmap every block over 64 KiB (MALLOC_MMAP_THRESHOLD_), so freed
tensors leave the resident set (RSS) at once and RSS follows the live tensor bytes.
After the warm-up steps the child resets the kernel's peak-RSS counter
(/proc/self/clear_refs, "5"), runs one step and reads the peak (VmHWM). Then

    peak_mb = state_mb + step_mb
    state_mb: the bytes of every tensor the row keeps between steps (parameters,
              buffers, gradients, optimizer state), counted from the tensors;
    step_mb:  VmHWM - RSS before the step: what the step adds at its peak
              (activations saved for backward, temporaries, new gradients).

Counting the state from the tensors rather than from RSS keeps out what compiling
leaves resident (generated code, FX graphs: tens of MB, not the step's memory), which
would otherwise count against compiled rows only. rss_peak_mb (VmHWM - RSS before the
network was built) is kept for reference. (tracemalloc does not see torch's memory.)
CUDA: the same with torch.cuda.memory_allocated / max_memory_allocated.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import traceback
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from lowbit.bench.overhead.steps import Bench, build_bench, compile_room, sync
from lowbit.bench.overhead.variants import Variant
from lowbit.quant import _kernels

MIB = 2.0**20
METHOD = (
    "a fresh process per row (one for all in quick mode or with --one-memory-process). "
    "peak MB = the bytes of the tensors the row keeps between steps (parameters, "
    "buffers, gradients, optimizer state, counted from the tensors) + what one step "
    "adds at its peak: on the CPU the peak resident set (VmHWM, reset through "
    "/proc/self/clear_refs before the step, with glibc mmapping every block over 64 KiB "
    "so freed tensors leave it at once) minus the RSS before the step; on CUDA "
    "torch.cuda.max_memory_allocated minus memory_allocated. What compiling leaves "
    "resident (generated code, graphs) is not counted."
)
CHILD = (
    "import sys; from lowbit.bench.overhead.memory import memory_main; memory_main(sys.argv[1:])"
)


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


def state_bytes(trainees: Iterable[Any]) -> int:
    """Bytes of the distinct storages of parameters, buffers, gradients and optimizer
    state of `trainees` (engine.Trainee)."""
    seen: dict[int, int] = {}
    for t in trainees:
        tensors = [*t.model.parameters(), *t.model.buffers()]
        tensors += [p.grad for p in t.model.parameters() if p.grad is not None]
        tensors += [v for s in t.optimizer.state.values() for v in s.values()]
        for v in tensors:
            if isinstance(v, torch.Tensor):
                st = v.untyped_storage()
                seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def _preload(variant: Variant) -> None:
    """Import what the row imports lazily, so the baseline RSS already holds it."""
    import lowbit.methods.joint_distill
    import lowbit.methods.stochastic_precision  # noqa: F401

    _kernels.cpu_extension()
    if variant.model == "brevitas_w2a2":
        with _kernels._quiet("torch.utils.cpp_extension"):
            import brevitas.nn  # noqa: F401
    if variant.model == "torch_ao_qat":
        import torch.ao.quantization  # noqa: F401


def _allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else _rss()


def _measured_step(bench: Bench, device: torch.device) -> tuple[int, int, str]:
    """(bytes before, peak bytes) around one step, and how they were read."""
    gc.collect()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        method = "torch.cuda.max_memory_allocated"
    else:
        method = "VmHWM after clear_refs" if _reset_peak_rss() else "ru_maxrss (not reset)"
    before = _allocated(device)
    bench.step()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _peak_rss()
    return before, peak, method


def measure_one(variant: Variant, device: torch.device, batch_size: int) -> dict[str, Any]:
    """Peak memory of one row's step (MiB), in this process."""
    _preload(variant)
    gc.collect()
    base = _allocated(device)
    bench = build_bench(variant, device, batch_size)
    for _ in range(3 if variant.compiled else 2):  # compile; optimizer state from step 1
        bench.step()
    before, peak, method = _measured_step(bench, device)
    state = state_bytes(bench.trainees)
    del bench
    gc.collect()
    return {
        "peak_mb": (state + peak - before) / MIB,
        "state_mb": state / MIB,
        "step_mb": (peak - before) / MIB,
        "rss_peak_mb": (peak - base) / MIB,
        "method": method,
    }


def memory_main(argv: Sequence[str]) -> None:
    """Child entry point: argv = row names (comma separated), batch size, threads, device.
    Prints one JSON line: name -> measurement, or name -> {"error": ...}."""
    names, batch_size, threads, device = argv
    torch.set_num_threads(int(threads))
    dev, n = torch.device(device), int(batch_size)
    with compile_room():
        warm = build_bench(Variant("fp"), dev, n)  # one-time costs (oneDNN, allocator)
        for _ in range(2):
            warm.step()
        del warm
        out: dict[str, Any] = {}
        for name in names.split(","):
            try:
                out[name] = measure_one(Variant.parse(name), dev, n)
            except Exception as e:  # one row's failure must not lose the others'
                traceback.print_exc()
                out[name] = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out))


def measure_memory(
    groups: Sequence[Sequence[str]], device: torch.device, batch_size: int, threads: int
) -> dict[str, dict[str, Any]]:
    """Run one child process per group of row names; errors are reported, not raised."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONWARNINGS="ignore")
    out: dict[str, dict[str, Any]] = {}
    for group in groups:
        args = [",".join(group), str(batch_size), str(threads), str(device)]
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            out.update({n: {"error": f"exit {proc.returncode}: {err}"} for n in group})
        else:
            out.update(json.loads(lines[-1]))
    return out
