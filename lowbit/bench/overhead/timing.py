"""Step times: warm-up, then interleaved repetitions (the order rotated every round, so
other jobs on a shared machine hit every row alike)."""

from __future__ import annotations

import gc
import resource
import statistics
import time
from collections.abc import Sequence

import torch

from lowbit.bench.overhead.steps import Bench, sync

# A compiled row's first step compiles (dynamo + inductor: tens of seconds on a CPU);
# the next may still specialise (e.g. on the optimizer state that appears after step
# one), so compiled rows take this many extra warm-up steps beyond the eager ones'.
COMPILED_EXTRA_WARMUP = 2


def warm_up(bench: Bench, device: torch.device, steps: int) -> float:
    """Run the row's warm-up steps; return the first one's seconds (for a compiled row,
    its compile time), which no statistic includes."""
    sync(device)
    t0 = time.perf_counter()
    bench.step()
    sync(device)
    first = time.perf_counter() - t0
    extra = COMPILED_EXTRA_WARMUP if bench.variant.compiled else 0
    for _ in range(max(steps - 1, 0) + extra):
        bench.step()
    sync(device)
    return first


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_steps(
    benches: Sequence[Bench], device: torch.device, reps: int
) -> dict[str, dict[str, list[float]]]:
    """Per row, over `reps` interleaved rounds: step seconds (wall and process CPU time,
    all threads), minor page faults, and the per-network parts a row reports."""
    out: dict[str, dict[str, list[float]]] = {
        b.name: {"step": [], "cpu": [], "faults": []} for b in benches
    }
    gc.collect()
    gc.disable()  # no collector pauses inside a timed step
    try:
        for r in range(reps):
            k = r % len(benches)
            for b in [*benches[k:], *benches[:k]]:
                sync(device)
                f0, c0, t0 = _minor_faults(), time.process_time(), time.perf_counter()
                parts = b.step()
                sync(device)
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
    """median, q25, q75 and IQR (q75 - q25) in milliseconds."""
    ms = sorted(1e3 * s for s in seconds)
    if len(ms) == 1:
        q25 = q75 = ms[0]
    else:
        q25, _, q75 = statistics.quantiles(ms, n=4, method="inclusive")
    return {"median_ms": statistics.median(ms), "q25_ms": q25, "q75_ms": q75, "iqr_ms": q75 - q25}
