"""What to run: a stage's command, its outputs, and the init chain it starts from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from lowbit.bench.determinism.compare import RunFiles
from lowbit.config import (
    QUANT_STAGES,
    TRAINING_STAGES,
    StageConfig,
    apply_overrides,
    load_config,
    read_params,
)
from lowbit.errors import ConfigError


@dataclass(frozen=True)
class Target:
    """One stage to run repeatedly: its command, its outputs and the runs it starts from,
    every path relative to the folder of params.yaml."""

    stage: str
    argv: tuple[str, ...]  # after `lowbit`
    files: RunFiles
    chain: tuple[tuple[str, ...], ...]  # commands making its init chain, in order
    inputs: tuple[Path, ...]  # the prepared data and the chain's output folders


def _argv(cfg: StageConfig) -> tuple[str, ...]:
    """The `lowbit` arguments that run cfg's run (RunId.command's, as a list)."""
    run = cfg.run
    assert run is not None
    bits = () if run.fp else ("--w-bits", str(run.w_bits), "--a-bits", str(run.a_bits))
    return ("stage", cfg.stage, *bits, *(("--set", f"tag={run.tag}") if run.tag else ()))


def _rel(cfg: StageConfig, p: Path) -> Path:
    return p.relative_to(cfg.base_dir)


def target(params: Path, stage: str, bits: int | None) -> Target:
    """The Target of `stage` at `bits` (ignored by FP pretraining) under params.yaml."""
    if stage not in TRAINING_STAGES:
        choices = ", ".join(TRAINING_STAGES)
        raise ConfigError(f"not a training stage: {stage!r}; choose from {choices}")
    q = stage in QUANT_STAGES
    cfg = load_config(stage, params, w_bits=bits if q else None, a_bits=bits if q else None)
    chain: list[StageConfig] = []
    init = cfg.init_run
    while init is not None:
        sets = [f"tag={init.tag}"] if init.tag else []
        w, a = (None, None) if init.fp else (init.w_bits, init.a_bits)
        chain.insert(0, load_config(init.stage, params, sets, w, a))
        init = chain[0].init_run
    live = cfg.live
    files = RunFiles(
        _rel(cfg, cfg.out_dir()),
        None if live is None else _rel(cfg, live[0]),
        None if live is None else _rel(cfg, live[1]),
    )
    inputs = (_rel(cfg, cfg.data_dir), *(_rel(c, c.out_dir()) for c in chain))
    return Target(stage, _argv(cfg), files, tuple(_argv(c) for c in chain), inputs)


def write_params(src: Path, dest: Path, sets: list[str]) -> Path:
    """dest/params.yaml: src with `section.key=value` overrides, its data_root absolute
    (it is read in place, not copied)."""
    for item in sets:
        if "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set {item}: name the section, e.g. common.seed=1")
    raw = read_params(src)
    apply_overrides(raw, "prepare", sets)
    common = raw.setdefault("common", {}) or {}
    if common.get("data_root"):
        common["data_root"] = str((src.resolve().parent / common["data_root"]).resolve())
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return dest / "params.yaml"
