"""Reading a stage's run folder (runs/<stage>/<slug>/) and choosing where exports go.

A run folder holds what lowbit.training.results.write_outputs wrote: model.pt
({"main", "arch", "method", "nets": {name: {"model", "quant"}}}, loaded with
weights_only=True), run.json (resolved config, provenance) and metrics.json. Exports
never go into the runs folder: DVC manages it, and a file there would be a stage output
DVC does not know.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from lowbit import checkpoint
from lowbit.errors import CheckpointError, ConfigError
from lowbit.export.program import ExportError
from lowbit.models import build_model
from lowbit.quant.convert import load_quant_state, quantize
from lowbit.quant.functional import MAX_BITS

FORMATS = {"npz": ".npz", "onnx": ".onnx"}
ARCH_KEYS = ("model", "num_classes", "image_size")


@dataclass
class LoadedRun:
    path: Path  # the run folder
    checkpoint: Path  # its model.pt
    model: nn.Module  # the main network, eval mode: lowbit's fake-quant model
    arch: dict[str, Any]
    stage: str
    config: dict[str, Any] = field(default_factory=dict)  # run.json's resolved config


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _main_net(path: Path, state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(arch, {"model", "quant"}) of the checkpoint's main network, or CheckpointError."""
    try:
        net = state["nets"][state["main"]]
        arch = dict(state["arch"])
        if not isinstance(net["model"], dict) or not isinstance(net["quant"], dict):
            raise TypeError
    except (KeyError, TypeError):
        raise CheckpointError(f"{path} holds no trained network") from None
    missing = [k for k in ARCH_KEYS if k not in arch]
    if missing:
        raise CheckpointError(f"{path} does not record the architecture ({', '.join(missing)})")
    return arch, net


def _rebuild(path: Path, arch: dict[str, Any], net: dict[str, Any]) -> nn.Module:
    """The quantized model of `arch` holding the checkpoint's parameters and bits."""
    model = quantize(
        build_model(arch["model"], int(arch["num_classes"]), int(arch["image_size"])),
        MAX_BITS,
        MAX_BITS,
        quantizer=arch.get("quantizer", "dorefa"),
        block_output=arch.get("block_output", "fp"),  # as training's quantized_from
    )
    try:
        model.load_state_dict(dict(net["model"]), strict=True)
    except (RuntimeError, TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise CheckpointError(f"{path} does not fit a {arch['model']}: {first}") from None
    load_quant_state(model, net["quant"])
    return model.eval()


def load_run(run_dir: Path) -> LoadedRun:
    """The run's main network as lowbit's eval-mode model; one-line errors for a missing
    folder, an unreadable or foreign checkpoint, or a full-precision run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run folder not found: {run_dir}")
    path = run_dir / "model.pt"
    state = checkpoint.load(path)  # CheckpointError for missing, truncated, foreign files
    arch, net = _main_net(path, state)
    run = _json(run_dir / "run.json")
    config = run.get("config") if isinstance(run.get("config"), dict) else {}
    stage = str(_json(run_dir / "metrics.json").get("stage") or config.get("stage") or "")
    if not net["quant"]:
        raise ExportError(
            f"{run_dir} is a full-precision run (stage {stage}): it has no quantized layers "
            "to export; export a quantized stage's run (e.g. runs/direct/w2a2)"
        )
    model = _rebuild(path, arch, net)
    return LoadedRun(run_dir, path, model, arch, stage, config)


def runs_roots(run: LoadedRun) -> list[Path]:
    """The runs folders the run lives in: the config's common.runs_dir and, from the
    layout runs/<stage>/<slug>, the parent of the folder named like the stage."""
    roots = []
    here = run.path.resolve()
    for folder in (here, *here.parents):
        if run.stage and folder.name == run.stage:
            roots.append(folder.parent)
            break
    cfg = run.config
    if isinstance(cfg.get("common"), dict) and cfg["common"].get("runs_dir"):
        d = Path(cfg["common"]["runs_dir"])
        roots.append((d if d.is_absolute() else Path(cfg.get("base_dir", ".")) / d).resolve())
    return roots or [here]


def output_path(run: LoadedRun, fmt: str, out: Path | None) -> Path:
    """Where the export goes: `out`, or <runs folder>/../exports/<stage>-<slug>.<fmt>;
    refuses any path inside a runs folder or the run folder itself."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    roots = runs_roots(run)
    if out is None:
        rel = run.path.resolve().relative_to(roots[0]) if roots[0] != run.path.resolve() else None
        name = "-".join(rel.parts) if rel is not None else run.path.resolve().name
        out = roots[0].parent / "exports" / f"{name}{FORMATS[fmt]}"
    out = Path(out)
    if out.suffix in FORMATS.values() and out.suffix != FORMATS[fmt]:
        raise ConfigError(f"--out {out} ends in {out.suffix} but the format is {fmt}")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name")
    target = out.resolve()
    for root in [run.path.resolve(), *roots]:
        if target.is_relative_to(root):
            raise ConfigError(
                f"refusing to write {out} inside the runs folder {root}: DVC manages it "
                "(choose --out outside it)"
            )
    checkpoint.require_writable(out, "--out")  # before the export is built and checked
    return out


def validation_dir(run: LoadedRun) -> Path | None:
    """The prepared dataset the run was validated on, if it is still there."""
    cfg = run.config
    common = cfg.get("common") if isinstance(cfg.get("common"), dict) else {}
    if not common.get("data_dir"):
        return None
    d = Path(common["data_dir"])
    d = d if d.is_absolute() else Path(cfg.get("base_dir", ".")) / d
    return d if (d / "meta.json").is_file() else None
