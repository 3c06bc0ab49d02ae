"""`lowbit bench overhead`: choose the rows, time them, measure their memory, write
overhead.json and overhead.md."""

from __future__ import annotations

import gc
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from lowbit.bench.overhead import memory as memory_mod
from lowbit.bench.overhead.markdown import markdown
from lowbit.bench.overhead.nets import NUM_CLASSES
from lowbit.bench.overhead.rows import targets, variant_rows
from lowbit.bench.overhead.steps import Bench, build_bench, compile_room
from lowbit.bench.overhead.timing import COMPILED_EXTRA_WARMUP, time_steps, warm_up
from lowbit.bench.overhead.variants import Variant, available, catalog, select
from lowbit.errors import ConfigError
from lowbit.provenance import provenance
from lowbit.quant import _kernels


@dataclass(frozen=True)
class OverheadSpec:
    """What to run. reps / warmup None: 20 / 3, or 2 / 1 in quick mode (which also cuts
    the batch to 4 and measures memory in one child process for all rows)."""

    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    variants: tuple[str, ...] = ("all",)  # patterns, see variants.select
    batch_size: int = 128
    reps: int | None = None
    warmup: int | None = None
    threads: int | None = None  # torch intra-op threads (None: as set now)
    quick: bool = False
    # Memory of every row in one child process (quick mode does so too): sound on CUDA,
    # whose counters are live tensor bytes, and much shorter there (one CUDA context and
    # one compile cache instead of one per row); on the CPU rows may inherit RSS pages.
    one_memory_process: bool = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name}: choose cpu, cuda or auto")
    return device


def _load() -> list[str]:
    try:
        return Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        return []


def _machine(device: torch.device) -> dict[str, Any]:
    prov = provenance(Path.cwd(), device, seed=0)
    return {
        **{k: prov[k] for k in ("cpu", "device", "device_name", "threads", "python", "hostname")},
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "git_commit": prov["git_commit"],
        "git_dirty": prov["git_dirty"],
        "lowbit_kernels": _kernels.backend_name(),
        "lowbit_kernels_detail": _kernels.backend_reason(),
        "loadavg_1_5_15": _load(),
    }


def _ready(
    variants: list[Variant], device: torch.device, batch_size: int, warmup: int
) -> tuple[list[Bench], dict[str, float], dict[str, str]]:
    """Build and warm up every row; a row that fails is reported, not raised."""
    benches, first, failed = [], {}, {}
    for v in variants:
        try:
            bench = build_bench(v, device, batch_size)
            first[v.name] = warm_up(bench, device, warmup)
            benches.append(bench)
        except Exception as e:  # e.g. a peer's fake-quant refusing bf16 inputs
            failed[v.name] = f"failed here: {type(e).__name__}: {str(e).splitlines()[0]}"
    return benches, first, failed


def _measure(spec: OverheadSpec, device: torch.device) -> dict[str, Any]:
    batch_size = min(spec.batch_size, 4) if spec.quick else spec.batch_size
    reps = spec.reps or (2 if spec.quick else 20)
    warmup = spec.warmup or (1 if spec.quick else 3)
    chosen, skipped = available(select(catalog(device), spec.variants, device))
    machine = _machine(device)
    with compile_room():
        benches, first, failed = _ready(chosen, device, batch_size, warmup)
        times = time_steps(benches, device, reps) if benches else {}
    ran = [b.variant for b in benches]
    del benches
    gc.collect()
    names = [v.name for v in ran]
    groups = [names] if spec.quick or spec.one_memory_process else [[n] for n in names]
    threads = torch.get_num_threads()
    memory = memory_mod.measure_memory(groups, device, batch_size, threads) if names else {}
    rows, ref = variant_rows(ran, times, memory, first)
    machine["loadavg_end"] = _load()
    config = {**asdict(spec), "model": "resnet20", "num_classes": NUM_CLASSES}
    config |= {"batch_size": batch_size, "reps": reps, "warmup": warmup}
    config["compiled_warmup"] = warmup + COMPILED_EXTRA_WARMUP
    return {
        "machine": machine,
        "config": config,
        "reference": {"row": ref, **{k: rows[ref][k] for k in ("label", "median_ms")}}
        if ref
        else None,
        "variants": rows,
        "skipped": {**skipped, **failed},
        "targets": targets(rows, device.type),
        "memory_method": memory_mod.METHOD,
    }


def run_overhead(
    spec: OverheadSpec = OverheadSpec(), out_dir: Path = Path("reports/bench")
) -> dict[str, Any]:
    """Measure the rows `spec` selects, write overhead.json and overhead.md to `out_dir`,
    return the result (torch's thread count is restored afterwards)."""
    device = resolve_device(spec.device)
    saved_threads = torch.get_num_threads()
    try:
        if spec.threads is not None:
            torch.set_num_threads(spec.threads)
        result = _measure(spec, device)
    finally:
        torch.set_num_threads(saved_threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "overhead.md").write_text(markdown(result))
    return result
