"""overhead.md: the table of every row, the reference row, the targets, the caveats."""

from __future__ import annotations

from typing import Any

from lowbit.bench.overhead.variants import MODEL_LABELS

HEAD = (
    "Variant", "row", "median ms", "IQR ms", "min ms", "CPU ms", "peak MB", "1st step s",
    "× fastest FP", "× fastest FP (min)", "× fastest FP (CPU)", "× FP same exec",
    "memory × FP same exec",
)  # fmt: skip


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "–" if v is None else format(v, spec)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


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


def _table(result: dict[str, Any]) -> list[str]:
    rows = result["variants"]
    peers = sorted({p.split(".")[0] for r in rows.values() for p in r["ratio_peers"]})
    head = [*HEAD, *(f"× {MODEL_LABELS[p].split(' (')[0]} same exec" for p in peers)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        cells = [r["label"], f"`{name}`", _fmt(r["median_ms"], ".1f"), _fmt(r["iqr_ms"], ".1f")]
        cells += [_fmt(r["min_ms"], ".1f"), _fmt(r["cpu_ms"], ".1f"), _fmt(r["peak_mb"], ".0f")]
        cells += [_fmt(r["first_step_s"], ".1f"), _fmt(r["ratio_fastest_fp"])]
        cells += [_fmt(r["min_ratio_fastest_fp"]), _fmt(r["cpu_ratio_fastest_fp"])]
        cells += [_fmt(r["ratio_fp_same"]), _fmt(r["memory_ratio_fp_same"])]
        by_peer = {p.split(".")[0]: v for p, v in r["ratio_peers"].items()}
        cells += [_fmt(by_peer.get(p)) for p in peers]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _targets(result: dict[str, Any]) -> list[str]:
    t = result["targets"]
    lines = []
    for c in t["checks"]:
        lines.append(
            f"- {c['precision']}: fastest W2A2 row `{c['w2a2']}` takes {_fmt(c['time_ratio'])}× "
            f"the fastest FP {c['precision']} row `{c['fp']}` (target ≤ {t['time_ratio']}: "
            f"{'met' if c['time_met'] else 'NOT met'}); its peak memory is "
            f"{_fmt(c['memory_ratio'])}× `{c['memory_vs']}` (target ≤ {t['memory_ratio']}: "
            f"{'met' if c['memory_met'] else 'NOT met'})."
        )
    for p in t["peers"]:
        lines.append(
            f"- `{p['w2a2']}` is {p['speedup']:.2f}× faster than `{p['peer']}` "
            f"(target ≥ {t['peer_speedup']}: {'met' if p['met'] else 'NOT met'})."
        )
    return ["", "Targets for lowbit W2A2:", "", *lines] if lines else []


def _header(m: dict[str, Any], c: dict[str, Any]) -> list[str]:
    threads, reps = _count(m["threads"], "thread"), _count(c["reps"], "interleaved repetition")
    return [
        "# Fake-quantization overhead of one training step",
        "",
        f"Device: **{m['device_name']}** ({threads}; torch {m['torch']}; lowbit kernels: "
        f"{m['lowbit_kernels']}; load average at start {' '.join(m['loadavg_1_5_15']) or 'n/a'}).",
        "",
        f"ResNet-20 CIFAR, batch {c['batch_size']}, forward + loss + backward + SGD step; "
        f"{reps} after {_count(c['warmup'], 'warm-up step')} (compiled rows: "
        f"{c['compiled_warmup']}, the first one compiling, shown as “1st step s”)"
        f"{' (quick mode: a smoke run, not a measurement)' if c['quick'] else ''}.",
    ]


def markdown(result: dict[str, Any]) -> str:
    m, c, ref = result["machine"], result["config"], result["reference"]
    ref_line = (
        f"Fastest FP row: `{ref['row']}` ({ref['label']}, {ref['median_ms']:.1f} ms); every "
        "“× fastest FP” column is relative to it."
        if ref
        else "No FP row was measured: the “× fastest FP” columns are empty."
    )
    lines = [*_header(m, c), "", ref_line, "", *_table(result)]
    for name, row in result["variants"].items():
        for part, s in row["parts"].items():
            lines.append(f"\n`{name}`: {part} {s['median_ms']:.1f} ms (IQR {s['iqr_ms']:.1f}).")
    for name, why in result["skipped"].items():
        lines.append(f"\nNot run: `{name}`: {why}.")
    lines += _targets(result)
    lines += ["", _noise_note(m)] if _busy(m) else []
    lines += ["", f"Memory: {result['memory_method']}"]
    return "\n".join(lines) + "\n"
