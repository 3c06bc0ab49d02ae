"""The report's numbers: per-row statistics, the ratios to the fastest FP row and to FP
in the same execution, and the targets (issue 8)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from lowbit.bench.overhead.timing import summary
from lowbit.bench.overhead.variants import PEERS, Variant

# lowbit W2A2 against the fastest FP row in the same precision (step time), against FP
# in the same execution (peak memory) and against Brevitas in the same execution.
TIME_TARGET = {"cpu": 1.15, "cuda": 1.10}
MEMORY_TARGET = 1.3
PEER_SPEEDUP_TARGET = 2.0
_SERIES = ("step", "cpu", "faults")


def _stats(series: Mapping[str, list[float]]) -> dict[str, Any]:
    row: dict[str, Any] = summary(series["step"])
    row["times_ms"] = [round(1e3 * s, 3) for s in series["step"]]
    row["min_ms"] = 1e3 * min(series["step"])
    row["cpu_ms"] = 1e3 * statistics.median(series["cpu"])  # all threads' CPU time
    row["page_faults_per_step"] = statistics.median(series["faults"])
    row["parts"] = {k: summary(v) for k, v in series.items() if k not in _SERIES}
    return row


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fastest(rows: Mapping[str, Mapping[str, Any]], model: str, precision: str = "") -> str | None:
    """The name of the `model` row with the least median step time (in `precision`)."""
    names = [
        n for n, r in rows.items()
        if r["model"] == model and (not precision or r["precision"] == precision)
    ]  # fmt: skip
    return min(names, key=lambda n: rows[n]["median_ms"], default=None)


def variant_rows(
    variants: Sequence[Variant],
    times: Mapping[str, Mapping[str, list[float]]],
    memory: Mapping[str, Mapping[str, Any]],
    first_s: Mapping[str, float],
) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Every measured row with its ratios, and the name of the fastest FP row (the
    reference of every "× fastest FP" column; None when no FP row ran)."""
    rows: dict[str, dict[str, Any]] = {}
    for v in variants:
        if v.name not in times:
            continue
        mem = dict(memory.get(v.name, {}))
        rows[v.name] = {
            "label": v.label, "model": v.model, "compiled": v.compiled,
            "precision": v.precision, "channels_last": v.channels_last,
            "first_step_s": first_s.get(v.name), **_stats(times[v.name]),
            "memory": mem, "peak_mb": mem.get("peak_mb"),
        }  # fmt: skip
    ref = fastest(rows, "fp")
    same = {Variant.parse(n).same_execution: n for n, r in rows.items() if r["model"] == "fp"}
    for name, row in rows.items():
        r0 = rows[ref] if ref else {}
        row["ratio_fastest_fp"] = _ratio(row["median_ms"], r0.get("median_ms"))
        row["min_ratio_fastest_fp"] = _ratio(row["min_ms"], r0.get("min_ms"))
        row["cpu_ratio_fastest_fp"] = _ratio(row["cpu_ms"], r0.get("cpu_ms"))
        row["fp_same_execution"] = same.get(Variant.parse(name).same_execution)
        twin = rows.get(row["fp_same_execution"] or "", {})
        row["ratio_fp_same"] = _ratio(row["median_ms"], twin.get("median_ms"))
        row["memory_ratio_fp_same"] = _ratio(row["peak_mb"], twin.get("peak_mb"))
        row["ratio_peers"] = {
            p: row["median_ms"] / r["median_ms"]
            for p, r in rows.items()
            if r["model"] in PEERS and p != name and _twins(r, row)
        }
    return rows, ref


def _twins(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(a[k] == b[k] for k in ("compiled", "precision", "channels_last"))


def _precision_checks(rows: Mapping[str, Mapping[str, Any]], limit: float) -> list[dict]:
    """Per precision: the fastest W2A2 row vs the fastest FP row of that precision (time),
    and vs the FP row of its own execution (memory)."""
    checks = []
    for precision in sorted({r["precision"] for r in rows.values()}):
        w, f = fastest(rows, "lowbit_w2a2", precision), fastest(rows, "fp", precision)
        if w is None or f is None:
            continue
        t = _ratio(rows[w]["median_ms"], rows[f]["median_ms"])
        m = rows[w]["memory_ratio_fp_same"]
        checks.append({
            "precision": precision, "w2a2": w, "fp": f, "time_ratio": t,
            "time_met": t is not None and t <= limit,
            "memory_vs": rows[w]["fp_same_execution"], "memory_ratio": m,
            "memory_met": m is not None and m <= MEMORY_TARGET,
        })  # fmt: skip
    return checks


def _peer_checks(rows: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """Per Brevitas row: how much faster W2A2 is in the same execution."""
    out = []
    for name, r in rows.items():
        if r["model"] != "brevitas_w2a2":
            continue
        twins = [n for n, x in rows.items() if x["model"] == "lowbit_w2a2" and _twins(x, r)]
        for w in twins:
            s = r["median_ms"] / rows[w]["median_ms"]
            out.append({"peer": name, "w2a2": w, "speedup": s, "met": s >= PEER_SPEEDUP_TARGET})
    return out


def targets(rows: Mapping[str, Mapping[str, Any]], device_type: str) -> dict[str, Any]:
    """The targets of issue 8 and whether this run met them (None: nothing to compare)."""
    limit = TIME_TARGET.get(device_type, TIME_TARGET["cpu"])
    checks, peers = _precision_checks(rows, limit), _peer_checks(rows)
    return {
        "time_ratio": limit, "memory_ratio": MEMORY_TARGET, "peer_speedup": PEER_SPEEDUP_TARGET,
        "checks": checks, "peers": peers,
        "time_met": all(c["time_met"] for c in checks) if checks else None,
        "memory_met": all(c["memory_met"] for c in checks) if checks else None,
        "peers_met": all(p["met"] for p in peers) if peers else None,
    }  # fmt: skip
