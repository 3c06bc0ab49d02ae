"""Synthetic run directories (metrics.json, run.json, history.csv) as the stages write them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_run(
    root: Path,
    name: str,
    history: bool = True,
    run_json: bool = True,
    **metrics: Any,
) -> Path:
    """A run directory `root/name`; keyword arguments override the metrics.json fields."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    m: dict[str, Any] = {
        "stage": "quantize-activations",
        "method": "ts",
        "model": "resnet20",
        "dataset": "digits",
        "w_bits": 2,
        "a_bits": 2,
        "seed": 0,
        "net": "student",
        "top1": 90.0,
        "top5": 99.0,
        "loss": 0.3,
        "best_top1": 91.0,
        "best_top5": 99.5,
        "best_epoch": 5,
        "epochs": 6,
        "budget_epochs": 12,
        "wall_s": 40.0,
        "images_per_s": 500.0,
    }
    m.update(metrics)
    m = {k: v for k, v in m.items() if v is not None}
    (d / "metrics.json").write_text(json.dumps(m))
    if run_json:
        _write_run_json(d, m)
    if history:
        _write_history(d, float(m["best_top1"]))
    return d


def _write_run_json(d: Path, m: dict[str, Any]) -> None:
    prov = {
        "git_commit": "abc1234",
        "git_dirty": False,
        "versions": {"lowbit": "0.1.0", "torch": "2.14.1"},
        "device": "cpu",
        "hostname": "box",
        "cpu": "x86",
        "threads": 2,
        "started": f"2025-01-01T00:00:{m['seed']:02d}",
        "seed": m["seed"],
    }
    cfg = {"stage": m["stage"], "lr": 0.1, "seed": m["seed"], "sp": {"unit": "layer"}}
    (d / "run.json").write_text(json.dumps({"config": cfg, "provenance": prov}))


def _write_history(d: Path, top: float) -> None:
    """Six epochs rising to `top` (%), loss falling."""
    lines = ["epoch,train_loss,train_top1,val_loss,val_top1,val_top5,lr,epoch_s"]
    lines += [
        f"{e},{2.0 / e:.3f},{50 + 7 * e},{1.0 / e:.3f},{top - 6 + e},99,0.1,1.5"
        for e in range(1, 7)
    ]
    (d / "history.csv").write_text("\n".join(lines) + "\n")


def add_teacher_history(run_dir: Path) -> None:
    """Append `teacher/...` columns to a run's history.csv, as the distill stage writes them."""
    path = run_dir / "history.csv"
    lines = path.read_text().splitlines()
    cols = lines[0].split(",")[1:]
    lines[0] += "," + ",".join(f"teacher/{c}" for c in cols)
    for i in range(1, len(lines)):
        lines[i] += f",{1.0 / i:.3f},80,0.4,{90 + i},99,0.1,1.5"
    path.write_text("\n".join(lines) + "\n")


def paper_runs(root: Path) -> Path:
    """A small but complete set: fp, direct, ts (3 seeds at W2A2, W4A4, W2A32), pq, sp, kd with
    its teacher, a combination, and a resnet18/imagenet pair that published peers match."""
    fp = {"method": "fp", "w_bits": 32, "a_bits": 32}
    write_run(root, "pretrain", stage="pretrain", best_top1=95.0, best_top5=99.9, **fp)
    write_run(root, "direct/w2a2", stage="direct", method="direct", best_top1=88.0)
    for seed, top1 in enumerate((90.0, 91.0, 92.0)):
        write_run(root, f"ts/w2a2/s{seed}", seed=seed, best_top1=top1, best_top5=99.0 + seed / 2)
    write_run(root, "ts/w4a4", w_bits=4, a_bits=4, best_top1=94.0)
    write_run(root, "tsw/w2", stage="quantize-weights", a_bits=32, best_top1=93.0)
    write_run(root, "pq/w2a2", stage="bit-decay", method="pq", best_top1=90.5, budget_epochs=24)
    write_run(root, "sp/w2a2", stage="stochastic-precision", method="sp", best_top1=89.5)
    teacher = {"top1": 95.2, "top5": 99.9, "best_top1": 95.5, "best_top5": 99.9}
    kd = write_run(
        root, "kd/w2a2", stage="distill", method="kd", best_top1=92.5, extra={"teacher": teacher}
    )
    add_teacher_history(kd)
    write_run(root, "combo", stage="distill", method="ts+pq+kd", best_top1=93.5, history=False)
    r18 = {"model": "resnet18", "dataset": "imagenet", "history": False}
    write_run(root, "in/fp", stage="pretrain", best_top1=69.9, best_top5=89.1, **fp, **r18)
    write_run(root, "in/ts", method="ts", best_top1=66.0, best_top5=86.5, **r18)
    return root


# The stage that trains each method, as the shipped pipelines name them.
STAGES = {
    "fp": "pretrain",
    "direct": "direct",
    "ts": "quantize-activations",
    "pq": "bit-decay",
    "sp": "stochastic-precision",
    "kd": "distill",
    "ts+pq+kd": "ts-pq-kd",
}
FP_INIT = "runs/pretrain/model.pt"


def seeded_runs(
    root: Path,
    table: dict[tuple[str, int], list[float | None]],
    inits: dict[tuple[str, int], str | None] | None = None,
) -> Path:
    """Runs laid out as `lowbit archive` commits them: root/seed<N>/<stage>/<variant>.

    table: (method, bits) → best top-1 per seed (None: that seed did not run it). Every
    quantized run starts from its seed's FP network (init "runs/pretrain/model.pt"), TS
    through its weights-only stage (also written); `inits` overrides a method's init
    (None: no init recorded, as in results older than the field)."""
    for (method, bits), values in table.items():
        for seed, top1 in enumerate(values):
            if top1 is None:
                continue
            fp = method == "fp"
            variant = "" if fp else f"w{bits}a{bits}"
            ts_init = f"runs/quantize-weights/{variant}/model.pt"
            default = "scratch" if fp else ts_init if method == "ts" else FP_INIT
            init = (inits or {}).get((method, bits), default)
            if method == "ts":
                write_run(root, f"seed{seed}/quantize-weights/{variant}", stage="quantize-weights",
                          method="ts", w_bits=bits, a_bits=32, seed=seed, best_top1=top1 - 1,
                          init=FP_INIT, history=False)  # fmt: skip
            write_run(root, f"seed{seed}/{STAGES[method]}/{variant}".rstrip("/"),
                      stage=STAGES[method], method=method, w_bits=bits, a_bits=bits, seed=seed,
                      best_top1=top1, init=init, history=False)  # fmt: skip
    return root
