"""A round's resumable state: every network, its optimiser and quantizer state, the
history so far; written atomically after every epoch, resumed only by the same config."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from lowbit import checkpoint
from lowbit.engine.loop_types import FitSpec, History
from lowbit.engine.reduce import rank_world
from lowbit.engine.steps import Trainee, unwrap
from lowbit.errors import CheckpointError
from lowbit.quant.convert import load_quant_state, quant_state


def save_state(spec: FitSpec, trainees: Sequence[Trainee], epoch: int, history: History) -> None:
    if rank_world()[0] != 0:
        return
    nets = {}
    for t in trainees:
        nets[t.name] = {
            "model": unwrap(t.model).state_dict(),
            "quant": quant_state(unwrap(t.model)),
            "optimizer": t.optimizer.state_dict(),
            "scaler": t.scaler.state_dict() if t.scaler is not None else {},
        }
    checkpoint.save(
        spec.checkpoint,
        {
            "epoch": epoch,
            "fingerprint": spec.fingerprint,
            "main": trainees[0].name,
            "nets": nets,
            "history": history.epochs,
            "wall_s": history.wall_s,
            "images": history.images,
            "cpu_s": history.cpu_s,
            "reference": history.reference,
        },
    )


def _other_run(old: str, new: str) -> str:
    """Why a checkpoint is not resumed; fingerprints read '<config hash>:<code digest>'."""
    (old_cfg, _, old_code), (new_cfg, _, new_code) = old.partition(":"), new.partition(":")
    if old_cfg == new_cfg and old_code and old_code != new_code:
        return (
            f"was written by other lowbit code (source digest {old_code}, now {new_code}); "
            "to resume it, run the commit that wrote it (a git worktree)"
        )
    return "was written by a run of another configuration or lowbit version"


def load_state(spec: FitSpec, trainees: Sequence[Trainee]) -> tuple[int, History]:
    """Resume from spec.checkpoint if it exists and fits; returns (next epoch, history)."""
    if not spec.checkpoint.is_file():
        return 0, History()
    state = checkpoint.load(spec.checkpoint, map_location=spec.device)
    if state.get("fingerprint") != spec.fingerprint:
        warnings.warn(
            f"{spec.checkpoint} {_other_run(str(state.get('fingerprint')), spec.fingerprint)}:"
            " this round trains from its first epoch and replaces it",
            RuntimeWarning,
            stacklevel=2,
        )
        return 0, History()
    names = {t.name for t in trainees}
    if set(state["nets"]) != names:
        raise CheckpointError(f"{spec.checkpoint} holds networks {sorted(state['nets'])}")
    for t in trainees:
        s = state["nets"][t.name]
        try:
            unwrap(t.model).load_state_dict(s["model"])
        except RuntimeError as e:
            raise CheckpointError(f"{spec.checkpoint}: {str(e).splitlines()[0]}") from None
        load_quant_state(unwrap(t.model), s["quant"])
        t.optimizer.load_state_dict(s["optimizer"])
        if t.scaler is not None and s["scaler"]:
            t.scaler.load_state_dict(s["scaler"])
    hist = History(
        list(state["history"]),
        float(state["wall_s"]),
        int(state["images"]),
        float(state.get("cpu_s", 0.0)),
        {k: [t.cpu() for t in v] for k, v in state.get("reference", {}).items()},
    )
    return int(state["epoch"]) + 1, hist
