"""The one schema of a run's metrics.json: written by the training stages, read by the report.

A run's main network (the student) is the top level; other networks trained in the same
run (the KD teacher, extra students) are `extra[<net>]`. Accuracies are percentages, cost
is counted after FP pretraining (see lowbit.training.results), the late gain and the
convergence flag come from lowbit.training.convergence. Unknown keys are ignored, so results
written by a later lowbit still load.

Validation errors become one line naming the file and the key, e.g.
``runs/direct/w2a2/metrics.json: key 'w_bits' must be an integer bit-width in 1..32, got
'2' (str)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lowbit.errors import LowbitError

# A field's "kind" picks the words of its error message.
Bits = Annotated[int, Field(ge=1, le=32, json_schema_extra={"kind": "bits"})]
Pct = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False, json_schema_extra={"kind": "pct"})]
Num = Annotated[float, Field(json_schema_extra={"kind": "num"})]
Name = Annotated[str, Field(min_length=1, json_schema_extra={"kind": "str"})]
KIND_WORDS = {
    "str": "a non-empty string",
    "int": "an integer",
    "bits": "an integer bit-width in 1..32",
    "num": "a number",
    "pct": "a percentage in [0, 100]",
    "bool": "true or false",
    "obj": "an object",
}


class _Schema(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", ser_json_inf_nan="constants")


class NetMetrics(_Schema):
    """One network's results; every field optional (an extra network's entry)."""

    method: Name | None = None
    w_bits: Bits | None = None
    a_bits: Bits | None = None
    top1: Pct | None = None
    top5: Pct | None = None
    loss: Num | None = None  # mean cross-entropy (nats); NaN for a diverged epoch
    best_top1: Pct | None = None
    best_top5: Pct | None = None
    best_epoch: Num | None = None
    train_top1: Pct | None = None  # training top-1 of the last epoch (augmented images)
    # held-out test images (prepare.holdout_per_class): after the last epoch and after
    # the epoch the validation images chose
    test_top1: Pct | None = None
    test_top5: Pct | None = None
    best_test_top1: Pct | None = None
    best_test_top5: Pct | None = None
    epochs: Num | None = None
    wall_s: Num | None = None
    images_per_s: Num | None = None
    late_gain: Num | None = None  # top-1 points over the last quarter of the final round
    late_p: Num | None = None  # McNemar's one-sided p of that gain (training.convergence)
    converged: bool | None = None


class RunMetrics(NetMetrics):
    """A run: its identity, the main network's results, cost and provenance keys."""

    stage: Name
    method: Name
    model: Name
    dataset: Name
    w_bits: Bits
    a_bits: Bits
    seed: int
    top1: Pct
    best_top1: Pct
    net: Name | None = None
    tag: str = ""  # another run of the same stage and bits (e.g. "long")
    quantizer: str | None = None
    block_output: str | None = None
    fp_start: str | None = None  # the FP network the chain starts from (absent: relu)
    slug: str | None = None  # the run's name (lowbit.identity); absent in older runs
    budget_epochs: Num | None = None  # network-epochs after FP pretraining, init chain included
    final_epochs: Num | None = None  # epochs of the final round: direct's recipe
    extra_epochs: Num | None = None  # budget_epochs beyond the final network's own epochs
    networks: int | None = None
    init: str | None = None
    # the networks by their weights (lowbit.checkpoint.weights_digest): this run's final
    # network, and the one it started from (absent from scratch and in older runs); the
    # report follows init chains by them, wherever the files moved
    weights_digest: str | None = None
    init_weights_digest: str | None = None
    data_epochs: int | None = None  # loader epochs drawn by the chain up to this run's end
    cost_s: Num | None = None  # training seconds of the chain after FP pretraining
    cpu_s: Num | None = None  # this run's CPU seconds (all threads)
    cost_cpu_s: Num | None = None
    annealed: bool | None = None  # every round ended below its starting lr
    extra: dict[str, NetMetrics] = {}


def _annotation_kind(ann: Any) -> str:
    """The "kind" of a field's type: from the Annotated alias it uses, else its base type."""
    if get_origin(ann) is Annotated:
        for meta in get_args(ann)[1:]:
            extra = getattr(meta, "json_schema_extra", None)
            if isinstance(extra, dict) and "kind" in extra:
                return str(extra["kind"])
    for arg in get_args(ann) if get_origin(ann) is not Annotated else ():
        if arg is not type(None):
            return _annotation_kind(arg)
    return {bool: "bool", int: "int", str: "str", dict: "obj"}.get(get_origin(ann) or ann, "num")


def _kind(loc: tuple[Any, ...]) -> str:
    """The kind of the value at an error location ("extra", <net>, <key>) or (<key>,)."""
    if loc[0] == "extra":
        if len(loc) < 3:
            return "obj"
        field = NetMetrics.model_fields.get(str(loc[2]))
    else:
        field = RunMetrics.model_fields.get(str(loc[0]))
    if field is None:
        return "num"
    extra = field.json_schema_extra  # a required field: its alias's Field merged in here
    if isinstance(extra, dict) and "kind" in extra:
        return str(extra["kind"])
    return _annotation_kind(field.annotation)


def _explain(path: Path, err: ValidationError) -> LowbitError:
    e = err.errors()[0]
    loc = tuple(e["loc"])
    key = ".".join(map(str, loc))
    if e["type"] == "missing":
        return LowbitError(f"{path}: missing required key '{key}'")
    v = e.get("input")
    words = KIND_WORDS[_kind(loc)]
    return LowbitError(
        f"{path}: key '{key}' must be {words}, got {repr(v)[:40]} ({type(v).__name__})"
    )


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; anything else is a LowbitError naming the file."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise LowbitError(f"{path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise LowbitError(f"{path}: invalid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise LowbitError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_run_metrics(path: Path) -> RunMetrics:
    """metrics.json → RunMetrics; any problem is one LowbitError naming the file."""
    raw = read_json(path)
    try:
        return RunMetrics.model_validate(raw)
    except ValidationError as e:
        raise _explain(path, e) from None
