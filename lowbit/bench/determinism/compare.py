"""Bitwise comparison of two finished runs of one stage from identical inputs.

A training stage writes (lowbit.training.results, lowbit.training.live), for its run
with slug G in the repository R:

    R/runs/<stage>/G/model.pt, metrics.json, history.csv
    R/dvclive/<stage>/G/plots/metrics/**.tsv, R/dvclive/metrics/<stage>/G.json

Two runs from the same inputs on one host and software stack must agree on every byte of
it that does not measure time or name the place: TIMING (seconds and throughput, in
metrics.json and history.csv; dvclive's `timestamp` column, when it writes one) and
PLACE (the checkpoint's absolute params folder and start time).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

TIMING = frozenset(
    {"wall_s", "images_per_s", "epoch_s", "cpu_s", "cost_s", "cost_cpu_s", "timestamp"}
)
PLACE = frozenset({"config.base_dir", "provenance.started"})


@dataclass(frozen=True)
class RunFiles:
    """Where one run's outputs lie: its output folder and its dvclive log (None: no log)."""

    out: Path  # runs/<stage>/<slug>
    live: Path | None = None  # dvclive/<stage>/<slug>
    live_metrics: Path | None = None  # dvclive/metrics/<stage>/<slug>.json


@dataclass(frozen=True)
class Difference:
    """One place where two runs differ; `step` is the 0-based epoch over all rounds of the
    stage (a history row, a dvclive step), None where the file has no steps."""

    file: str  # model.pt | metrics.json | history.csv | dvclive/<relative path>
    where: str  # a tensor or key name, or "epoch 3 (round 1): val_loss"
    detail: str  # "12 of 432 elements, max |a-b| 3e-08 (2 ulp)" or "0.8481 vs 0.8457"
    step: int | None = None

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.detail}"


def leaves(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every non-container value of nested dicts and lists.

    >>> list(leaves({"a": {"b": 1, "c": [2, 3]}}))
    [('a.b', 1), ('a.c[0]', 2), ('a.c[1]', 3)]
    """
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def _kept(path: str) -> bool:
    """Not a timing and not a place (the last key decides for timings).

    >>> [_kept(p) for p in ("extra.teacher.wall_s", "config.base_dir", "top1")]
    [False, False, True]
    """
    return path not in PLACE and path.rsplit(".", 1)[-1] not in TIMING


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's storage bytes (uint8, 1-D): equality of these is bitwise equality,
    NaN payloads and the sign of zero included."""
    return t.detach().reshape(-1).contiguous().view(torch.uint8)


def tensor_detail(a: torch.Tensor, b: torch.Tensor) -> str:
    """How far apart two same-shaped tensors are: differing elements, max |a-b|, and for
    float32 the max distance in units in the last place (adjacent floats: 1 ulp)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"{a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}"
    fa, fb = a.detach().reshape(-1), b.detach().reshape(-1)
    ne = ~(_bits(fa).view(-1, fa.element_size()) == _bits(fb).view(-1, fb.element_size())).all(1)
    text = f"{int(ne.sum())} of {fa.numel()} elements"
    if fa.is_floating_point():
        text += f", max |a-b| {(fa.double() - fb.double()).abs().max().item():.3g}"
    if fa.dtype == torch.float32:
        # floats ordered as integers: adjacent floats differ by 1 (sign-magnitude → two's
        # complement, so -0.0 and +0.0 are 0 ulp apart)
        ia, ib = fa.view(torch.int32).long(), fb.view(torch.int32).long()
        ia = torch.where(ia < 0, -(ia & 0x7FFFFFFF), ia)
        ib = torch.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
        text += f" ({int((ia - ib).abs().max())} ulp)"
    return text


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))
    return type(a) is type(b) and a == b


def compare_trees(a: Any, b: Any, file: str) -> list[Difference]:
    """Every leaf (in a's order) that differs between two nested structures, then the
    leaves only one of them has; timings and places left out."""
    la, lb = dict(leaves(a)), dict(leaves(b))
    out = []
    for key, va in la.items():
        if not _kept(key) or key not in lb or _same(va, lb[key]):
            continue
        vb = lb[key]
        both = isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor)
        out.append(Difference(file, key, tensor_detail(va, vb) if both else f"{va!r} vs {vb!r}"))
    for key in [k for k in la.keys() ^ lb.keys() if _kept(k)]:
        out.append(Difference(file, key, "only in a" if key in la else "only in b"))
    return out


def _table(path: Path, delimiter: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


Row = dict[str, str]


def _first_row(ra: list[Row], rb: list[Row]) -> tuple[Row, Row, list[str]] | None:
    """(row of a, row of b, differing columns) of the first row two tables disagree on,
    timing columns left out; a row only one table has is {} in the other."""
    for i in range(max(len(ra), len(rb))):
        x, y = (ra[i] if i < len(ra) else {}), (rb[i] if i < len(rb) else {})
        cols = [c for c in {**x, **y} if c not in TIMING and x.get(c) != y.get(c)]
        if cols:
            return x, y, cols
    return None


def _values(x: Row, y: Row, cols: list[str]) -> str:
    return "; ".join(f"{c} {x.get(c, '-')} vs {y.get(c, '-')}" for c in cols[:3])


def compare_history(a: Path, b: Path) -> list[Difference]:
    """history.csv: the first epoch (1-based over all rounds) whose metrics differ."""
    ra, rb = _table(a, ","), _table(b, ",")
    if (hit := _first_row(ra, rb)) is None:
        return []
    x, y, cols = hit
    row = x or y
    where = f"epoch {row.get('epoch')} (round {row.get('round')})"
    return [Difference("history.csv", where, _values(x, y, cols), int(row["epoch"]) - 1)]


def compare_live(a: Path, b: Path) -> list[Difference]:
    """Every file of two dvclive folders: per metric (.tsv), the first step it differs at;
    other files (the summary .json) leaf by leaf."""
    fa = {p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()}
    fb = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()}
    out = [
        Difference(f"dvclive/{f}", "file", f"only in {'a' if f in fa else 'b'}")
        for f in sorted(fa ^ fb)
    ]
    for f in sorted(fa & fb):
        if f.endswith(".tsv"):
            ra, rb = _table(a / f, "\t"), _table(b / f, "\t")
            if (hit := _first_row(ra, rb)) is not None:
                x, y, cols = hit
                step = int((x or y)["step"])
                out.append(Difference(f"dvclive/{f}", f"step {step}", _values(x, y, cols), step))
        elif f.endswith(".json"):
            ja, jb = (json.loads((d / f).read_text()) for d in (a, b))
            out += compare_trees(ja, jb, f"dvclive/{f}")
        elif (a / f).read_bytes() != (b / f).read_bytes():
            out.append(Difference(f"dvclive/{f}", "bytes", "differ"))
    return out


def compare_runs(a: RunFiles, b: RunFiles) -> list[Difference]:
    """Everything that differs between two finished runs: model.pt tensor by tensor (and
    its other records), metrics.json, history.csv, the dvclive log; [] when equal."""
    ckpt = [torch.load(r.out / "model.pt", weights_only=True) for r in (a, b)]
    out = compare_trees(*ckpt, "model.pt")
    metrics = [json.loads((r.out / "metrics.json").read_text()) for r in (a, b)]
    out += compare_trees(*metrics, "metrics.json")
    out += compare_history(a.out / "history.csv", b.out / "history.csv")
    if a.live is not None and b.live is not None:
        out += compare_live(a.live, b.live)
    if a.live_metrics is not None and b.live_metrics is not None:
        live = [json.loads(r.live_metrics.read_text()) for r in (a, b)]  # type: ignore[union-attr]
        out += compare_trees(*live, f"dvclive/metrics/{a.live_metrics.name}")
    return out


def first_step(diffs: list[Difference]) -> int | None:
    """The earliest epoch-step any per-epoch record differs at (None: none does)."""
    steps = [d.step for d in diffs if d.step is not None]
    return min(steps) if steps else None
