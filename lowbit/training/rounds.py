"""The recipe of each round: its optimiser and schedule, whether it anneals, and the
fingerprint that decides whether a checkpoint may be resumed."""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from lowbit import engine
from lowbit.config import StageConfig
from lowbit.engine import OptimSpec, resolve_milestones
from lowbit.methods.rounds import Round


def progress(cfg: StageConfig) -> bool:
    """Progress bars: as configured, else only when stdout is a terminal."""
    p = cfg.common.progress
    return sys.stdout.isatty() if p is None else p


@functools.cache
def code_digest() -> str:
    """sha256 of lowbit's own source files: a checkpoint resumes only under the code that
    wrote it (a rerun that DVC starts because the code changed trains anew)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def fingerprint(cfg: StageConfig, extra: object) -> str:
    """'<config hash>:<code digest>': everything that changes results (not executor,
    progress, workers), then lowbit's source (code_digest), kept apart so that a refused
    checkpoint can say which of the two changed (lowbit.engine.state)."""
    d = cfg.to_dict()
    for k in ("executor", "progress", "workers", "live_dir", "keep_resume"):
        d["common"].pop(k, None)
    d.pop("slurm", None)
    d.pop("base_dir", None)
    # the global batch is batch_size x world size: another layout is another run
    d["world_size"] = engine.rank_world()[1]
    blob = json.dumps([d, repr(extra)], sort_keys=True, default=str)
    return f"{hashlib.sha256(blob.encode()).hexdigest()[:16]}:{code_digest()}"


def optim_spec(o: Any, epochs: int, lr: float | None = None) -> OptimSpec:
    """The SGD recipe of one round of `epochs` epochs (milestones resolved for it)."""
    return OptimSpec(
        lr=o.lr if lr is None else lr,
        momentum=o.momentum,
        nesterov=o.nesterov,
        weight_decay=o.weight_decay,
        milestones=resolve_milestones(o.milestones, epochs),
        gamma=o.gamma,
        schedule=o.schedule,
        epochs=epochs,
    )


def round_specs(
    cfg: StageConfig, i: int, rnd: Round, lr: dict[str, float] | None = None
) -> dict[str, OptimSpec]:
    """Per network, the recipe of round `i`: the stage's optim ("" for every network
    without a learning rate of its own in `lr`, the recipe's); rounds after the first
    start at lr * optim.round_lr_scale."""
    p = cfg.params
    scale = p.optim.round_lr_scale if i > 0 else 1.0
    specs = {"": optim_spec(p.optim, rnd.epochs, p.optim.lr * scale)}
    for net, own in (lr or {}).items():
        specs[net] = optim_spec(p.optim, rnd.epochs, own * scale)
    return specs


def warn_constant_lr(cfg: StageConfig, rounds: list[Round]) -> bool:
    """Warn (once per round) about rounds that would train at a constant lr; returns
    whether every round ends annealed (recorded in metrics.json, flagged by the report)."""
    ok = True
    for i, rnd in enumerate(rounds):
        if not round_specs(cfg, i, rnd)[""].annealed:
            ok = False
            warnings.warn(
                f"stage {cfg.stage} round {i + 1} ({rnd.name}, {rnd.epochs} epochs) trains at "
                "a constant learning rate: set optim.milestones (e.g. [0.4, 0.6]) or "
                "optim.schedule: cosine so that it ends annealed",
                RuntimeWarning,
                stacklevel=2,
            )
    return ok
