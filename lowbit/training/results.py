"""What a finished stage writes: metrics.json (lowbit.metrics' schema, cost beside the
result), history.csv, run.json (resolved config and provenance) and model.pt, all in a
staged folder that appears in one rename."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from lowbit import checkpoint, engine
from lowbit.config import Quantized, StageConfig
from lowbit.data.meta import DatasetMeta
from lowbit.metrics import RunMetrics
from lowbit.quant.convert import quant_state
from lowbit.training.convergence import converged, late_gain, late_p
from lowbit.training.outputs import history_csv, staged_dir
from lowbit.training.plan import Plan, Stream


def summary(rows: list[dict[str, float]], name: str) -> dict[str, float]:
    """Final and best-epoch metrics of one network. "Best" looks only at the final round:
    earlier rounds of TS / PQ train the network at other bit-widths (a PQ run to W2A2
    passes through W4A4), so their accuracy is not the result's."""
    out = engine.summarize(engine.History(rows), name)
    final = [r for r in rows if r["round"] == rows[-1]["round"]]
    best = engine.summarize(engine.History(final), name)
    keys = ("best_top1", "best_top5", "best_epoch", "best_test_top1", "best_test_top5")
    out.update({k: best[k] for k in keys if k in best})
    gain, p = late_gain(rows, name), late_p(rows, name)
    out.update(late_gain=gain, late_p=p, converged=converged(gain, p))
    return out


def run_metrics(
    cfg: StageConfig, plan: Plan, st: Stream, nets: dict[str, nn.Module]
) -> dict[str, Any]:
    """metrics.json: the result, its cost beside it, its convergence and provenance keys.

    Cost, after the FP network and including the init chain: budget_epochs counts
    network-epochs (every round, every network: a student trained E epochs beside one
    other network costs 2E), cost_s the training seconds. extra_epochs is what the
    method spends beyond its final network's own recipe (earlier rounds, networks
    trained beside the student): the paper's "extra cost".
    """
    p = cfg.params
    last = plan.rounds[-1]
    own_epochs = sum(r.epochs for r in plan.rounds) * len(nets)
    budget = own_epochs + plan.init.budget_epochs
    m: dict[str, Any] = {
        "stage": cfg.stage,
        "method": plan.label,
        "model": cfg.common.model,
        "dataset": cfg.common.dataset,
        # the run's identity (lowbit.identity): its slug names the run's folders
        "slug": cfg.run.slug(),
        "quantizer": cfg.run.quantizer if isinstance(p, Quantized) else "none",
        "block_output": cfg.run.block_output,
        "fp_start": cfg.run.fp_start,
        "w_bits": last.w_bits,
        "a_bits": last.a_bits,
        "seed": cfg.common.seed,
        "tag": getattr(p, "tag", ""),
        "net": "student",
        **summary(st.rows, "student"),
        "budget_epochs": budget,
        "final_epochs": last.epochs,
        "extra_epochs": budget - last.epochs if isinstance(p, Quantized) else 0,
        "networks": len(nets),
        "init": plan.init.source,
        **_digests(plan, nets["student"]),
        "data_epochs": st.data_epochs,
        "annealed": st.annealed,
    }
    m["wall_s"], m["images_per_s"] = st.wall, st.images / max(st.wall, 1e-9)
    quantized = isinstance(p, Quantized)
    m["cost_s"] = st.wall + plan.init.cost_s if quantized else st.wall
    m["cpu_s"] = st.cpu
    m["cost_cpu_s"] = st.cpu + plan.init.cost_cpu_s if quantized else st.cpu
    m["extra"] = {n: summary(st.rows, n) for n in nets if n != "student"}
    # through the one schema the report reads (lowbit.metrics): a field the report would
    # reject fails here, before anything is written
    return RunMetrics.model_validate(m).model_dump(exclude_none=True)


def _digests(plan: Plan, student: nn.Module) -> dict[str, str | None]:
    """The final network and its start by their weights (lowbit.checkpoint.weights_digest):
    the report follows init chains by them, wherever the files moved."""
    start = plan.init.state
    return {
        "weights_digest": checkpoint.weights_digest(engine.unwrap(student).state_dict()),
        "init_weights_digest": checkpoint.weights_digest(start) if start is not None else None,
    }


def write_outputs(
    cfg: StageConfig,
    out_dir: Path,
    plan: Plan,
    rows: list[dict[str, float]],
    metrics: dict[str, Any],
    prov: dict[str, Any],
) -> None:
    nets = plan.nets
    # the resolved config and provenance in the checkpoint too (plain JSON types: it
    # still loads with weights_only=True), so a model.pt alone says what made it
    run = json.loads(json.dumps({
        "config": cfg.to_dict(),
        # the prepared data's recipe: the report never pools seeds of different data
        "data": DatasetMeta.load(cfg.data_dir).recipe(),
        "provenance": prov,  # lowbit.training.origin: the session that began the run
        "init": plan.init.source,  # where the network started: a stage's output, weights
    }, default=str))  # fmt: skip
    with staged_dir(out_dir) as tmp:
        state = {
            "main": "student",
            "arch": plan.arch,
            "method": metrics["method"],
            "nets": {
                n: {"model": engine.unwrap(m).state_dict(), "quant": quant_state(m)}
                for n, m in nets.items()
            },
            **run,
        }
        checkpoint.save(tmp / "model.pt", state)
        (tmp / "history.csv").write_text(history_csv(rows, "student", list(nets)))
        checkpoint.atomic_write_json(tmp / "run.json", run)
        checkpoint.atomic_write_json(tmp / "metrics.json", metrics)
