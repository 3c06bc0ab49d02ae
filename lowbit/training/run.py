"""A training stage's body, for every method: data, init chain, the methods' recipes,
the rounds, outputs.

A stage is a list of rounds (its stage method's) trained one after another on the same
parameters, with whatever the add-ons its section switches on contribute (networks
trained beside the student, an objective, hooks). It names no method: what a method
needs is a field of its Recipe (lowbit.methods.base). Each round resumes from its own
checkpoint under runs/.resume/<stage>/<slug>/, outside the folders DVC manages, so a
killed stage re-run by `dvc repro` continues where it stopped; the output folder
appears only when the stage is complete.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from lowbit import distributed, engine
from lowbit.config import StageConfig
from lowbit.errors import ConfigError
from lowbit.methods import add_ons, combine, label
from lowbit.methods.base import Context, Method
from lowbit.provenance import provenance
from lowbit.training import chain
from lowbit.training.convergence import eval_epochs, quarter_start
from lowbit.training.live import RunLog, ensure_logging
from lowbit.training.origin import Origin
from lowbit.training.outputs import locked
from lowbit.training.plan import Plan, Stream
from lowbit.training.results import run_metrics, write_outputs
from lowbit.training.rounds import fingerprint, progress, round_specs, warn_constant_lr


def run_stage(cfg: StageConfig, method: Method) -> dict[str, Any]:
    """Train a stage with `method` (its rounds) and the add-ons its section sets."""
    device = chain.device_of(cfg)
    train, val, test, meta = chain.load_data(cfg, device)
    plan = make_plan(cfg, method, chain.arch_of(cfg, meta))
    return train_plan(cfg, plan, (train, val, device, test))


def make_plan(cfg: StageConfig, method: Method, arch: dict[str, Any]) -> Plan:
    """The methods' recipes, combined, and the networks they train."""
    engine.seed_everything(cfg.common.seed)  # network initialisation is part of the result
    init = chain.student_init(cfg, arch)
    ctx = Context(
        cfg, arch, init,
        load=lambda run: chain.read_output(cfg, run, arch),
        build=lambda i, w, a: chain.quantized_from(i or chain.Init(None), arch, w, a),
        float_net=lambda i: _float_net(arch, i),
    )  # fmt: skip
    main = method.recipe(ctx)
    if main.start is not None:  # weights of the method's own choosing (published ones)
        init = ctx.init = chain.Init(main.start[0], source=main.start[1])
    first = main.rounds[0]
    # the student first, then what the add-ons build: the order networks draw their
    # random initial weights in
    ctx.student = _float_net(arch, init) if main.fp else ctx.build(init, first.w_bits, first.a_bits)
    extra = [a.recipe(ctx) for a in add_ons(cfg.params)]
    recipe = combine([main, *extra])
    nets = {"student": ctx.student, **recipe.nets}
    return Plan(nets, main.rounds, init, arch, recipe, label(init.method, [main, *extra]))


def _float_net(arch: dict[str, Any], init: chain.Init | None) -> nn.Module:
    model = chain.fp_net(arch)
    if init is not None and init.state is not None:
        model.load_state_dict(init.state)
    return model


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


def _epoch_callbacks(st: Stream, marks: dict[str, int], offset: int, n_rounds: int) -> tuple:
    """(on_epoch_end, on_resume) of one round: both log its epochs to the live log; a
    trained epoch also goes on the run's record of sessions (lowbit.training.origin)."""
    rounds = f"{marks['round']}/{n_rounds}"

    def log(row: dict[str, float]) -> None:
        st.log.epoch({**row, **marks}, offset + row["epoch"] - 1, rounds)

    def trained(row: dict[str, float]) -> None:
        log(row)
        if st.origin is not None:  # after the epoch's checkpoint: the record follows it
            st.origin.trained_epoch()

    def restored(rows: list[dict[str, float]]) -> None:
        for row in rows:  # a resumed round's live log replays what its checkpoint holds
            log(row)

    return trained, restored


def _train_round(cfg: StageConfig, plan: Plan, i: int, io: tuple, st: Stream) -> None:
    """Train round `i` of `plan` (resuming from its checkpoint) and append its history."""
    train, val, device = io[:3]
    rnd, recipe, nets = plan.rounds[i], plan.recipe, plan.nets
    rnd.apply(plan.model)
    specs = round_specs(cfg, i, rnd, recipe.lr)
    c = cfg.common
    ex = engine.Execution(c.channels_last, c.precision, c.compile, recipe.leaves_unused)
    trainees = [
        engine.make_trainee(n, m, specs.get(n, specs[""]), device, ex) for n, m in nets.items()
    ]
    hooks = recipe.hooks(plan.hooked) if recipe.hooks is not None else []
    spec = engine.FitSpec(
        epochs=rnd.epochs,
        seed=c.seed + 1000 * i,
        device=device,
        checkpoint=cfg.resume_dir / f"round{i}.pt",
        fingerprint=_fingerprint(cfg, plan, i, st.data_epochs),
        progress=progress(cfg),
        eval_every=cfg.params.eval_every,
        eval_at=eval_epochs(rnd.epochs),
        compare_after=quarter_start(rnd.epochs),
        data_offset=st.data_epochs,
        execution=ex,
        test_loader=io[3] if len(io) > 3 else None,
    )
    objective = recipe.objective(nets) if recipe.objective is not None else None
    offset = len(st.rows)
    marks = {"round": i + 1, "w_bits": rnd.w_bits, "a_bits": rnd.a_bits}
    spec.on_epoch_end, spec.on_resume = _epoch_callbacks(st, marks, offset, len(plan.rounds))
    hist = engine.fit(trainees, train, val, spec, objective, hooks)
    st.rows += [{**r, "epoch": offset + r["epoch"], **marks} for r in hist.epochs]
    st.wall += hist.wall_s
    st.cpu += hist.cpu_s
    st.images += hist.images
    st.data_epochs += rnd.epochs


def _fingerprint(cfg: StageConfig, plan: Plan, i: int, data_epochs: int) -> str:
    """Round `i`'s checkpoint key: the config, the round, where its data starts, the init."""
    return fingerprint(cfg, (i, plan.rounds[i], data_epochs, plan.init.digest))


def train_plan(cfg: StageConfig, plan: Plan, io: tuple) -> dict[str, Any]:
    """Train every round of `plan`, then write the stage's outputs. Returns metrics.
    `io`: (train loader, val loader, device[, test loader])."""
    out_dir, device = cfg.out_dir(), io[2]
    annealed = warn_constant_lr(cfg, plan.rounds)
    rank0 = engine.rank_world()[0] == 0
    ensure_logging()
    name = f"{cfg.stage}-{cfg.run.slug()}"
    lock = cfg.runs_dir / ".locks" / f"{name}.lock"
    with _rank0_lock(out_dir, lock, rank0):
        # a fresh live log, rebuilt from the checkpoints' epochs (inside the lock: a
        # second process must not wipe the log of the one that is running)
        log = RunLog(cfg.live if rank0 else None, f"{cfg.stage} {cfg.run.slug()}", [*plan.nets])
        st = Stream(log, data_epochs=plan.init.data_epochs, annealed=annealed)
        if rank0:  # only rank 0 writes outputs, so only rank 0 keeps the record
            key = _fingerprint(cfg, plan, 0, plan.init.data_epochs)
            now = provenance(cfg.base_dir, device, cfg.common.seed)
            st.origin = Origin.open(cfg.resume_dir, key, now)
        for i in range(len(plan.rounds)):
            _train_round(cfg, plan, i, io, st)
        metrics = run_metrics(cfg, plan, st, plan.nets)
        if st.origin is not None:
            write_outputs(cfg, out_dir, plan, st.rows, metrics, st.origin.provenance())
            log.close(metrics)
    if rank0 and not cfg.common.keep_resume:
        shutil.rmtree(cfg.resume_dir, True)
    return metrics
