"""params.yaml → a validated StageConfig: the only YAML reader, and the only formatter
of config errors (one line naming the file, the key and the valid choices)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lowbit.config.common import Common, Pipeline, Slurm
from lowbit.config.sections import STAGES, BitDecay, section_key
from lowbit.config.stage import StageConfig
from lowbit.errors import ConfigError


def read_params(path: Path) -> dict[str, Any]:
    """params.yaml as a dict; one clear error for a missing, unreadable or bad file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {path}: not a text file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    valid = {"common", "slurm", "pipeline", *(section_key(s) for s in STAGES)}
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise ConfigError(
            f"{path}: unknown section {unknown[0]!r}; valid sections: {', '.join(sorted(valid))}"
        )
    return raw


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = tree.get(k)
        if not isinstance(node, dict):
            node = {}
            tree[k] = node
        tree = node
    tree[keys[-1]] = value


def apply_overrides(raw: dict[str, Any], stage: str, sets: list[str]) -> None:
    """`key=value` (stage section) or `section.key=value`; values parsed as YAML."""
    sections = {"common", "slurm", *(section_key(s) for s in STAGES)}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        head = key.split(".", 1)[0].replace("-", "_")
        if head in sections and "." in key:
            _set(raw, f"{head}.{key.split('.', 1)[1]}", value)
        else:
            _set(raw, f"{section_key(stage)}.{key}", value)


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel]:
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            break
        ann = field.annotation
        inner = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)]
        nxt = next((a for a in inner if issubclass(a, BaseModel)), None)
        if nxt is None:
            break
        model = nxt
    return model


def explain(err: ValidationError, section: str, model: type[BaseModel], src: str) -> ConfigError:
    e = err.errors()[0]
    loc = tuple(e["loc"])
    where = ".".join(p for p in [section, *map(str, loc)] if p)
    if e["type"] == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        valid = ", ".join(owner.model_fields)
        return ConfigError(f"{src}: unknown key {where!r}; valid keys: {valid}")
    msg = e["msg"].removeprefix("Value error, ")
    got = "" if "got" in msg or isinstance(e.get("input"), dict) else f" (got {e.get('input')!r})"
    prefix = f"{src}: {where}" if where else src  # a rule over the whole file has no key
    return ConfigError(f"{prefix}: {msg}{got}")


def validate(model: type[BaseModel], data: Any, section: str, src: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{src}: section {section!r} must be a mapping, got {data!r}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise explain(e, section, model, src) from None


def load_config(
    stage: str,
    params: Path = Path("params.yaml"),
    sets: list[str] | None = None,
    w_bits: int | None = None,
    a_bits: int | None = None,
    executor: str | None = None,
) -> StageConfig:
    """The validated config of one stage. Raises ConfigError with one clear line."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    params = Path(params)
    raw = read_params(params)
    key = section_key(stage)
    raw.setdefault(key, {})
    if raw[key] is None:
        raw[key] = {}
    apply_overrides(raw, stage, list(sets or []))
    for name, bits in (("w_bits", w_bits), ("a_bits", a_bits)):
        if bits is not None:
            if not STAGES[stage].quantized:
                raise ConfigError(
                    f"stage {stage!r} has no bit-widths (--bits applies to quantized stages)"
                )
            raw[key][name] = bits
    if executor is not None:
        raw.setdefault("common", {})
        raw["common"]["executor"] = executor
    src = str(params)
    validate(Pipeline, raw.get("pipeline"), "pipeline", src)  # typos fail at once
    cfg = StageConfig(
        stage=stage,
        base_dir=params.resolve().parent,
        common=validate(Common, raw.get("common"), "common", src),
        params=validate(STAGES[stage].section, raw.get(key), key, src),
        slurm=validate(Slurm, raw.get("slurm"), "slurm", src),
        params_file=src,
        common_sets=tuple(s for s in sets or [] if _suggested(s)),
    )
    _check_folders(cfg, src)
    _check_precision(cfg, src)
    return cfg


def load_runs(stage: str, params: Path, sets: list[str] | None = None,
              executor: str | None = None) -> list[StageConfig]:  # fmt: skip
    """The configs of every run the pipeline section lists for `stage` (Pipeline.runs),
    each with common.keep_resume set (see lowbit.config.common.Common)."""
    raw = read_params(Path(params))
    pipe = validate(Pipeline, raw.get("pipeline"), "pipeline", str(params))
    keep = ["common.keep_resume=true"]
    return [
        load_config(stage, params, [*extra, *keep, *(sets or [])], bits, bits, executor)
        for bits, extra in pipe.runs(stage)
    ]


def _suggested(override: str) -> bool:
    """A `common.*` override a suggested command repeats (keep_resume is --all's own)."""
    return override.startswith("common.") and not override.startswith("common.keep_resume")


def stage_bits(params: Any) -> list[int]:
    """Every weight / activation bit-width a quantized stage trains at."""
    bits = {params.w_bits, params.a_bits, *getattr(params, "students", [])}
    if isinstance(params, BitDecay):
        bits |= {b for step in params.steps() for b in step}
    return sorted(bits)


def _check_precision(cfg: StageConfig, src: str) -> None:
    """fp16 runs on CUDA only. Every bit-width is accepted in fp16 / bf16: a round whose
    levels the dtype cannot hold (16-bit levels) trains in fp32 (lowbit.quant.precision)."""
    c = cfg.common
    if c.precision == "fp16" and c.device == "cpu":
        raise ConfigError(f"{src}: common.precision fp16 needs a CUDA device; use bf16 on the CPU")


def _check_folders(cfg: StageConfig, src: str) -> None:
    """Refuse output folders that overlap each other or the source data.

    Stages replace whole output folders (runs/<stage>/<slug>, the prepared data) and
    the report prunes its own stale files, so an output folder equal to, inside or
    around another one -- or around the raw data -- could delete what it must not.
    """
    c = cfg.common
    folders = {
        "common.data_dir": cfg.path(c.data_dir),
        "common.runs_dir": cfg.path(c.runs_dir),
        "common.reports_dir": cfg.path(c.reports_dir),
    }
    if c.live_dir is not None:
        folders["common.live_dir"] = cfg.path(c.live_dir)
    if c.data_root is not None:
        folders["common.data_root"] = cfg.path(c.data_root)
    names = list(folders)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pa, pb = folders[a], folders[b]
            if pa == pb or pa.is_relative_to(pb) or pb.is_relative_to(pa):
                raise ConfigError(
                    f"{src}: {a} ({pa}) and {b} ({pb}) overlap; "
                    "outputs and source data need folders of their own"
                )
