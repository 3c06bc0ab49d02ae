"""Machinery shared by the training stages: data, models, init chains, rounds, outputs.

A training stage is a list of rounds (lowbit.methods) trained one after another on
the same parameters, optionally with a jointly trained teacher (KD) and stochastic
precision (SP). Each round resumes from its own checkpoint under
runs/.resume/<stage>/<variant>/, outside the folders DVC manages, so a killed stage
re-run by `dvc repro` continues where it stopped; the stage's output folder appears
only when the stage is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lowbit import checkpoint, distributed, engine
from lowbit.config import KD, SP, BitDecay, Quantized, StageConfig
from lowbit.convergence import converged, eval_epochs, late_gain
from lowbit.errors import CheckpointError, ConfigError
from lowbit.live import RunLog, ensure_logging
from lowbit.methods.joint_distill import JointDistillation, KDWeights
from lowbit.methods.rounds import Round
from lowbit.methods.stochastic_precision import StochasticPrecision
from lowbit.metrics import RunMetrics
from lowbit.models import build_model
from lowbit.optim import OptimSpec, resolve_milestones
from lowbit.provenance import provenance
from lowbit.quant.convert import load_float_state_dict, quant_state, quantize
from lowbit.stages.outputs import history_csv, locked, staged_dir

METHOD_OF_STAGE = {
    "pretrain": "fp",
    "direct": "direct",
    "quantize-weights": "ts",
    "quantize-activations": "ts",
    "bit-decay": "pq",
    "stochastic-precision": "sp",
    "distill": "kd",
    "ts-pq-kd": "pq",
}
# The loader seed of common.seed s is s * DATA_SEED_STRIDE: FFCV's orders draw from
# (seed + epoch), so consecutive seeds would otherwise replay each other's epochs.
DATA_SEED_STRIDE = 1_000_003


def device_of(cfg: StageConfig) -> torch.device:
    """The stage's device. With several ranks each rank trains on its own GPU (the one
    distributed.init selected), whatever index common.device names."""
    want = cfg.common.device
    dev = (
        torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if want == "auto"
        else torch.device(want)
    )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"common.device is {want!r} but no CUDA device is available")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest conv
        if engine.rank_world()[1] > 1:
            return torch.device("cuda", torch.cuda.current_device())
    return dev


def load_data(cfg: StageConfig, device: torch.device) -> tuple[Any, Any, Any]:
    """(train loader, val loader, dataset meta) from the prepare stage's output."""
    from lowbit.data import DatasetMeta, build_loaders

    meta_path = cfg.data_dir / "meta.json"
    if not meta_path.is_file():
        raise ConfigError(
            f"input stage 'prepare' has not run: {meta_path} not found "
            "(run `lowbit stage prepare` first)"
        )
    meta = DatasetMeta.load(cfg.data_dir)
    world = engine.rank_world()[1]
    train, val = build_loaders(
        cfg.data_dir,
        batch_size=cfg.common.batch_size,
        workers=cfg.common.workers,
        device=device,
        seed=(cfg.common.seed * DATA_SEED_STRIDE) % 2**32,
        augment=cfg.common.augment,
        backend=cfg.common.loader,
        distributed=world > 1,
    )
    return train, val, meta


def arch_of(cfg: StageConfig, meta: Any) -> dict[str, Any]:
    return {
        "model": cfg.common.model,
        "num_classes": int(meta.num_classes),
        "image_size": int(meta.image_size),
        "quantizer": cfg.common.quantizer,
        "block_output": cfg.common.block_output,
    }


def fresh_fp(arch: dict[str, Any]) -> nn.Module:
    return build_model(arch["model"], arch["num_classes"], arch["image_size"])


@dataclass
class Init:
    """Where a stage's network starts: the state dict and the chain that produced it."""

    state: dict[str, torch.Tensor] | None  # None: from scratch
    method: str = ""  # method label of the init stage ("" for FP / scratch)
    budget_epochs: float = 0.0  # network-epochs spent on the init (FP pretraining excluded)
    source: str = "scratch"
    cost_s: float = 0.0  # training seconds spent on the init (FP pretraining excluded)
    cost_cpu_s: float = 0.0  # the same in CPU seconds (all threads)
    # Loader epochs the init chain has drawn (FP pretraining included): this stage's data
    # stream continues from there, so no epoch of the chain is replayed.
    data_epochs: int = 0


def read_output(cfg: StageConfig, stage: str, variant: str, arch: dict[str, Any]) -> Init:
    """The final network of an earlier stage; clear errors if missing or incompatible."""
    out = cfg.out_dir(stage, variant)
    path = out / "model.pt"
    if not path.is_file():
        bits = (
            f" --w-bits {variant[1:].split('a')[0]} --a-bits {variant.split('a')[1]}"
            if variant
            else ""
        )
        raise ConfigError(
            f"input stage {stage!r} has not run: {path} not found "
            f"(run `lowbit stage {stage}{bits}` first)"
        )
    state = checkpoint.load(path)
    saved = state.get("arch", {})
    for key in ("model", "num_classes"):
        if saved.get(key) != arch[key]:
            raise CheckpointError(
                f"{path} was trained for {key}={saved.get(key)!r}, this stage needs {arch[key]!r}"
            )
    net = state["nets"][state["main"]]
    metrics = (
        json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else {}
    )
    fp = stage == "pretrain"
    method = "" if fp else str(metrics.get("method", METHOD_OF_STAGE[stage]))
    budget = 0.0 if fp else float(metrics.get("budget_epochs", 0.0))
    cost = 0.0 if fp else float(metrics.get("cost_s", metrics.get("wall_s", 0.0)))
    cpu = 0.0 if fp else float(metrics.get("cost_cpu_s", 0.0))
    data = int(metrics.get("data_epochs", metrics.get("epochs", 0)))
    # relative to params.yaml's folder: results stay comparable when a repo moves
    source = os.path.relpath(path, cfg.base_dir)
    return Init(dict(net["model"]), method, budget, source, cost, cpu, data)


def student_init(cfg: StageConfig, arch: dict[str, Any]) -> Init:
    p = cfg.params
    init = getattr(p, "init", "scratch")
    if init == "scratch":
        return Init(None)
    return read_output(cfg, init, cfg.init_variant, arch)


def quantized_from(init: Init, arch: dict[str, Any], w_bits: int, a_bits: int) -> nn.Module:
    """A quantized network at (w_bits, a_bits) holding `init`'s parameters."""
    model = quantize(
        fresh_fp(arch),
        w_bits,
        a_bits,
        quantizer=arch["quantizer"],
        block_output=arch.get("block_output", "fp"),
    )
    if init.state is not None:
        load_float_state_dict(model, init.state)
    return model


def method_label(cfg: StageConfig, init: Init) -> str:
    """The method chain of this result, e.g. "ts", "ts+pq+kd" (duplicates removed)."""
    own = METHOD_OF_STAGE[cfg.stage]
    if isinstance(cfg.params, BitDecay) and cfg.params.two_stage:
        own = "ts+pq"
    tokens = [*init.method.split("+"), *own.split("+")] if init.method else own.split("+")
    p = cfg.params
    if getattr(p, "sp", None) is not None:
        tokens.append("sp")
    if getattr(p, "kd", None) is not None:
        tokens.append("kd")
    return "+".join(dict.fromkeys(t for t in tokens if t))


def _progress(cfg: StageConfig) -> bool:
    """Progress bars: as configured, else only when stdout is a terminal."""
    p = cfg.common.progress
    return sys.stdout.isatty() if p is None else p


def fingerprint(cfg: StageConfig, extra: object) -> str:
    """Hash of everything that changes results (not executor, progress, workers)."""
    d = cfg.to_dict()
    for k in ("executor", "progress", "workers", "live_dir"):
        d["common"].pop(k, None)
    d.pop("slurm", None)
    d.pop("base_dir", None)
    # the global batch is batch_size x world size: another layout is another run
    d["world_size"] = engine.rank_world()[1]
    blob = json.dumps([d, repr(extra)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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


def round_specs(cfg: StageConfig, i: int, rnd: Round) -> dict[str, OptimSpec]:
    """Per network, the recipe of round `i`: the stage's optim (the teacher's own lr if
    kd.teacher_lr is set); rounds after the first start at lr * optim.round_lr_scale."""
    p = cfg.params
    scale = p.optim.round_lr_scale if i > 0 else 1.0
    specs = {"": optim_spec(p.optim, rnd.epochs, p.optim.lr * scale)}
    kd: KD | None = getattr(p, "kd", None)
    if kd is not None and kd.teacher_lr:
        specs["teacher"] = optim_spec(p.optim, rnd.epochs, kd.teacher_lr * scale)
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


@dataclass
class Plan:
    """What a training stage trains: the main network, its rounds, extras."""

    model: nn.Module
    rounds: list[Round]
    init: Init
    arch: dict[str, Any]
    extra_students: dict[str, nn.Module] = field(default_factory=dict)


def _teacher(cfg: StageConfig, kd: KD, arch: dict[str, Any]) -> nn.Module:
    model = fresh_fp(arch)
    if kd.teacher_init == "pretrain":
        model.load_state_dict(read_output(cfg, "pretrain", "", arch).state)
    return model


def _hooks(cfg: StageConfig, sp: SP | None, models: list[nn.Module]) -> list[Any]:
    if sp is None:
        return []
    hooks = [
        StochasticPrecision(
            m, sp.unit, sp.ramp, sp.ramp_fraction, sp.selection, cfg.common.seed + i
        )
        for i, m in enumerate(models)
    ]
    for h in hooks if cfg.common.compile else []:
        h.use_gates()  # a compiled network: switch sub-networks by value, not by recompiling
    return hooks


class _EpochHooks:
    """Adapter: the engine calls on_step; SP also needs on_epoch_end before evaluation."""

    def __init__(self, hooks: list[Any]) -> None:
        self.hooks = hooks

    def on_step(self, step: int, total: int) -> None:
        for h in self.hooks:
            h.on_step(step, total)

    def on_epoch_end(self) -> None:
        for h in self.hooks:
            h.on_epoch_end()


@contextlib.contextmanager
def _rank0_lock(out_dir: Path, lock: Path, rank0: bool) -> Any:
    """Only rank 0 writes outputs, so only rank 0 takes the lock; every rank learns
    whether it got it, so a refused lock stops all ranks at once, not rank 0 alone."""
    with contextlib.ExitStack() as stack:
        error = None
        if rank0:
            try:
                stack.enter_context(locked(out_dir, lock))
            except ConfigError as e:
                error = e
        if not distributed.all_agree(error is None):
            raise error or ConfigError(f"{out_dir}: rank 0 could not lock the output folder")
        yield


def _objective(kd: KD | None, nets: dict[str, nn.Module]) -> Any:
    if kd is None:
        return None
    weights = KDWeights(**kd.model_dump(exclude={"teacher_lr", "teacher_init"}))
    return JointDistillation(weights, hint_models=list(nets.values()))


@dataclass
class _Stream:
    """What the rounds of a stage share and accumulate."""

    log: RunLog
    rows: list[dict[str, float]] = field(default_factory=list)
    wall: float = 0.0
    images: float = 0.0
    cpu: float = 0.0
    data_epochs: int = 0  # the loader epoch index of the next round's first epoch
    annealed: bool = True  # every round ends below its starting lr


def _train_round(
    cfg: StageConfig, plan: Plan, nets: dict[str, nn.Module], i: int, io: tuple, st: _Stream
) -> None:
    """Train round `i` of `plan` (resuming from its checkpoint) and append its history."""
    train, val, device = io
    rnd = plan.rounds[i]
    rnd.apply(plan.model)
    specs = round_specs(cfg, i, rnd)
    c = cfg.common
    sampled = getattr(cfg.params, "sp", None) is not None
    ex = engine.Execution(c.channels_last, c.precision, c.compile, sampled)
    trainees = [
        engine.make_trainee(n, m, specs.get(n, specs[""]), device, ex) for n, m in nets.items()
    ]
    students = [m for n, m in nets.items() if n != "teacher"]
    hooks = _EpochHooks(_hooks(cfg, getattr(cfg.params, "sp", None), students))
    spec = engine.FitSpec(
        epochs=rnd.epochs,
        seed=cfg.common.seed + 1000 * i,
        device=device,
        checkpoint=cfg.runs_dir / ".resume" / cfg.stage / (cfg.variant or "_") / f"round{i}.pt",
        fingerprint=fingerprint(cfg, (i, rnd, st.data_epochs)),
        progress=_progress(cfg),
        eval_every=cfg.params.eval_every,
        eval_at=eval_epochs(rnd.epochs),
        data_offset=st.data_epochs,
        execution=ex,
    )
    objective = _objective(getattr(cfg.params, "kd", None), nets)
    offset = len(st.rows)
    marks = {"round": i + 1, "w_bits": rnd.w_bits, "a_bits": rnd.a_bits}
    rounds = f"{i + 1}/{len(plan.rounds)}"
    spec.on_epoch_end = lambda r: st.log.epoch({**r, **marks}, offset + r["epoch"] - 1, rounds)
    hist = engine.fit(trainees, train, val, spec, objective, [hooks])
    st.rows += [{**r, "epoch": offset + r["epoch"], **marks} for r in hist.epochs]
    st.wall += hist.wall_s
    st.cpu += hist.cpu_s
    st.images += hist.images
    st.data_epochs += rnd.epochs


def train_plan(cfg: StageConfig, plan: Plan, train: Any, val: Any, device: torch.device) -> dict:
    """Train every round of `plan`, then write the stage's outputs. Returns metrics."""
    kd: KD | None = getattr(cfg.params, "kd", None)
    out_dir = cfg.out_dir()
    annealed = warn_constant_lr(cfg, plan.rounds)
    nets: dict[str, nn.Module] = {"student": plan.model, **plan.extra_students}
    if kd is not None:
        nets["teacher"] = _teacher(cfg, kd, plan.arch)
    rank0 = engine.rank_world()[0] == 0
    ensure_logging()
    lock = cfg.runs_dir / ".locks" / f"{cfg.stage}-{cfg.variant or 'fp'}.lock"
    with _rank0_lock(out_dir, lock, rank0):
        # a fresh live log, rebuilt from the checkpoints' epochs (inside the lock: a
        # second process must not wipe the log of the one that is running)
        label = f"{cfg.stage} {cfg.variant or 'fp'}"
        log = RunLog(cfg.live_dir if rank0 else None, label, [*nets])
        st = _Stream(log, data_epochs=plan.init.data_epochs, annealed=annealed)
        for i in range(len(plan.rounds)):
            _train_round(cfg, plan, nets, i, (train, val, device), st)
        metrics = _metrics(cfg, plan, st, nets)
        if rank0:
            _write_outputs(cfg, out_dir, plan, nets, st.rows, metrics, device)
            log.close(metrics)
    if rank0:
        shutil.rmtree(cfg.runs_dir / ".resume" / cfg.stage / (cfg.variant or "_"), True)
    return metrics


def _summary(rows: list[dict[str, float]], name: str) -> dict[str, float]:
    """Final and best-epoch metrics of one network. "Best" looks only at the final round:
    earlier rounds of TS / PQ train the network at other bit-widths (a PQ run to W2A2
    passes through W4A4), so their accuracy is not the result's."""
    out = engine.summarize(engine.History(rows), name)
    final = [r for r in rows if r["round"] == rows[-1]["round"]]
    best = engine.summarize(engine.History(final), name)
    out.update({k: best[k] for k in ("best_top1", "best_top5", "best_epoch")})
    gain = late_gain(rows, name)
    out.update(late_gain=gain, converged=converged(gain))
    return out


def _metrics(
    cfg: StageConfig, plan: Plan, st: _Stream, nets: dict[str, nn.Module]
) -> dict[str, Any]:
    """metrics.json: the result, its cost beside it, its convergence and provenance keys.

    Cost, after FP pretraining and including the init chain: budget_epochs counts
    network-epochs (every round, every network: a student trained E epochs beside its
    teacher costs 2E), cost_s the training seconds. extra_epochs is what the method
    spends beyond its final network's own recipe (TS stage 1, PQ's earlier rounds, the
    KD teacher): the paper's "extra cost".
    """
    p = cfg.params
    last = plan.rounds[-1]
    own_epochs = sum(r.epochs for r in plan.rounds) * len(nets)
    budget = own_epochs + plan.init.budget_epochs
    m: dict[str, Any] = {
        "stage": cfg.stage,
        "method": method_label(cfg, plan.init),
        "model": cfg.common.model,
        "dataset": cfg.common.dataset,
        "quantizer": cfg.common.quantizer if isinstance(p, Quantized) else "none",
        "block_output": cfg.common.block_output if isinstance(p, Quantized) else "none",
        "w_bits": last.w_bits,
        "a_bits": last.a_bits,
        "seed": cfg.common.seed,
        "tag": getattr(p, "tag", ""),
        "net": "student",
        **_summary(st.rows, "student"),
        "budget_epochs": budget,
        "final_epochs": last.epochs,
        "extra_epochs": budget - last.epochs if isinstance(p, Quantized) else 0,
        "networks": len(nets),
        "init": plan.init.source,
        "data_epochs": st.data_epochs,
        "annealed": st.annealed,
    }
    m["wall_s"], m["images_per_s"] = st.wall, st.images / max(st.wall, 1e-9)
    quantized = isinstance(p, Quantized)
    m["cost_s"] = st.wall + plan.init.cost_s if quantized else st.wall
    m["cpu_s"] = st.cpu
    m["cost_cpu_s"] = st.cpu + plan.init.cost_cpu_s if quantized else st.cpu
    m["extra"] = {n: _summary(st.rows, n) for n in nets if n != "student"}
    # through the one schema the report reads (lowbit.metrics): a field the report would
    # reject fails here, before anything is written
    return RunMetrics.model_validate(m).model_dump(exclude_none=True)


def _write_outputs(
    cfg: StageConfig,
    out_dir: Path,
    plan: Plan,
    nets: dict[str, nn.Module],
    rows: list[dict[str, float]],
    metrics: dict[str, Any],
    device: torch.device,
) -> None:
    with staged_dir(out_dir) as tmp:
        state = {
            "main": "student",
            "arch": plan.arch,
            "method": metrics["method"],
            "nets": {
                n: {"model": engine._unwrap(m).state_dict(), "quant": quant_state(m)}
                for n, m in nets.items()
            },
        }
        checkpoint.save(tmp / "model.pt", state)
        (tmp / "history.csv").write_text(history_csv(rows, "student", list(nets)))
        run = {
            "config": cfg.to_dict(),
            "provenance": provenance(cfg.base_dir, device, cfg.common.seed),
        }
        checkpoint.atomic_write_json(tmp / "run.json", run)
        checkpoint.atomic_write_json(tmp / "metrics.json", metrics)


def run_stage(cfg: StageConfig, rounds: list[Round], extra_bits: tuple[int, ...] = ()) -> dict:
    """The common body of a training stage: data, init chain, network, rounds, outputs."""
    device = device_of(cfg)
    train, val, meta = load_data(cfg, device)
    arch = arch_of(cfg, meta)
    engine.seed_everything(cfg.common.seed)  # network initialisation is part of the result
    if cfg.stage == "pretrain":
        init, model = Init(None), fresh_fp(arch)
    else:
        init = student_init(cfg, arch)
        model = quantized_from(init, arch, rounds[0].w_bits, rounds[0].a_bits)
    extras = {}
    if extra_bits:
        fp = read_output(cfg, "pretrain", "", arch) if cfg.params.init != "scratch" else Init(None)
        extras = {f"w{b}a{b}": quantized_from(fp, arch, b, b) for b in extra_bits}
    plan = Plan(model, rounds, init, arch, extras)
    return train_plan(cfg, plan, train, val, device)
