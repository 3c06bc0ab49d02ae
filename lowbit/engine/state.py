"""A round's resumable state: every network, its optimiser and quantizer state, the
history so far; written atomically after every epoch, resumed only by the same config."""

from __future__ import annotations

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


def load_state(spec: FitSpec, trainees: Sequence[Trainee]) -> tuple[int, History]:
    """Resume from spec.checkpoint if it exists and fits; returns (next epoch, history)."""
    if not spec.checkpoint.is_file():
        return 0, History()
    state = checkpoint.load(spec.checkpoint, map_location=spec.device)
    if state.get("fingerprint") != spec.fingerprint:
        return 0, History()  # another configuration's run: start over
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
