"""determinism.md: the machine, how the runs were perturbed, and per stage whether its
runs are bitwise equal, else the first tensor and the first epoch at which they part."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

import torch

from lowbit.bench.determinism.compare import Difference, first_step
from lowbit.bench.determinism.runs import Measured, Perturbation
from lowbit.provenance import cpu_model


def _commit(root: Path) -> str:
    """HEAD of the checkout at root, "+ changes" when tracked files differ from it."""
    git = ["git", "-C", str(root)]
    try:
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "-uno"], capture_output=True, text=True
        )
    except OSError:
        return "unknown (no git)"
    return head.stdout.strip() + (" + changes" if dirty.stdout.strip() else "")


def machine(root: Path, env: dict[str, str]) -> dict[str, Any]:
    """What the result holds for: CPU, ATen's SIMD level, software, threads per run."""
    return {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "lowbit_commit": _commit(root),
        "threads": env.get("OMP_NUM_THREADS", "inherited (torch default: one per core)"),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def _first(diffs: list[Difference], file: str) -> str:
    hit = next((d for d in diffs if d.file == file), None)
    return "–" if hit is None else f"`{hit.where}`: {hit.detail}"


def _verdict(m: Measured) -> list[str]:
    """Cells: verdict, first differing tensor, first differing epoch-step."""
    if m.identical:
        return ["identical", "–", "–"]
    apart = [i + 1 for i, d in enumerate(m.diffs) if d]
    worst = next(d for d in m.diffs if d)
    step = first_step(worst)
    return [
        f"**differs** (run{'s' if len(apart) > 1 else ''} {', '.join(map(str, apart))} vs run 0)",
        _first(worst, "model.pt"),
        "–" if step is None else f"step {step} (epoch {step + 1}): {_history(worst)}",
    ]


def _history(diffs: list[Difference]) -> str:
    hit = next((d for d in diffs if d.file == "history.csv"), None)
    return "" if hit is None else hit.detail


def _details(m: Measured, limit: int = 12) -> list[str]:
    lines = [f"### {m.target.stage}: `lowbit {' '.join(m.target.argv)}`", ""]
    for i, diffs in enumerate(m.diffs, start=1):
        if diffs:
            lines.append(f"run {i} vs run 0: {len(diffs)} differences, the first {limit}:")
            lines += [f"- {d}" for d in diffs[:limit]]
            lines.append("")
    return lines


def markdown(results: list[Measured], info: dict[str, Any], command: str, vary: tuple = ()) -> str:
    """The whole report; `info` is machine() and more lines about the runs, `vary` the
    per-run variables (Perturbation.vary)."""
    runs = len(results[0].folders) if results else 0
    same = sum(m.identical for m in results)
    lines = [
        "# Determinism: one stage, several fresh processes, identical inputs",
        "",
        f"{same} of {len(results)} stages gave bitwise-identical runs ({runs} runs each): "
        "model.pt tensor by tensor, metrics.json, history.csv and the dvclive log, "
        "timings (seconds, images/s) left out.",
        "",
        f"    {command}",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        "",
        "## Runs",
        "",
        "Each run copies the prepared data and the init chain's outputs into a folder of",
        "its own and runs the stage as a fresh `lowbit stage` process, perturbed:",
        "",
        *[f"- run {i}: {Perturbation(i, vary).describe()}" for i in range(runs)],
        "",
        "## Result",
        "",
        "| stage | command | verdict | first differing tensor | first differing epoch "
        "| median s per run |",
        "|---|---|---|---|---|---|",
    ]
    for m in results:
        secs = f"{statistics.median(m.seconds):.1f}" if m.seconds else "–"
        cells = [m.target.stage, f"`lowbit {' '.join(m.target.argv)}`", *_verdict(m), secs]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for m in results:
        if not m.identical:
            lines += _details(m)
    return "\n".join(lines) + "\n"
