"""params.yaml → typed config: defaults, overrides, and one clear error per mistake."""

import inspect
import pkgutil
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from lowbit.config import STAGES, Common, Pipeline, Slurm, load_config
from lowbit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _params(tmp_path, text):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_root_params_load_for_every_stage():
    for stage in STAGES:
        cfg = load_config(stage, ROOT / "params.yaml")
        assert cfg.stage == stage and cfg.common.dataset == "digits"
    cfg = load_config("bit-decay", ROOT / "params.yaml", w_bits=4, a_bits=4)
    assert cfg.params.steps() == [(8, 8), (4, 4)]
    assert cfg.out_dir() == ROOT / "runs" / "bit-decay" / "w4a4"


def test_a_stage_is_one_row_of_the_table(tmp_path):
    """Its name, its section's model (whose docstring is the stage's help) and its method:
    a Method for a training stage (its section derives from Train), else run(cfg)."""
    p = _params(tmp_path, "")
    for name, row in STAGES.items():
        target = pkgutil.resolve_name(row.method)
        assert row.trains == hasattr(target, "recipe") != callable(target), name
        assert inspect.getdoc(row.section).startswith(f"Stage `{name}`: "), name
        assert type(load_config(name, p).params) is row.section
    assert [n for n, r in STAGES.items() if not r.trains] == ["prepare", "report"]


def _models(model: type[BaseModel]) -> set[type[BaseModel]]:
    """`model` and every model its fields hold, at any depth."""
    found = {model}
    for field in model.model_fields.values():
        todo = [field.annotation]
        while todo:
            t = todo.pop()
            todo += typing.get_args(t)
            if isinstance(t, type) and issubclass(t, BaseModel) and t not in found:
                found |= _models(t)
    return found


def test_every_config_model_refuses_unknown_keys():
    models = set().union(*(_models(m) for m in (Common, Pipeline, Slurm)),
                         *(_models(r.section) for r in STAGES.values()))  # fmt: skip
    names = {m.__name__ for m in models}
    assert {"KD", "SP", "Optim", "LongDirect"} <= names  # the walk reaches nested blocks
    assert [m.__name__ for m in models if m.model_config.get("extra") != "forbid"] == []


def test_overrides_and_bits_shorthand(tmp_path):
    p = _params(tmp_path, "common: {seed: 1}\nquantize_weights: {epochs: 3}\n")
    cfg = load_config(
        "quantize-weights", p, ["optim.lr=0.01", "common.seed=7", "a_mode=relu"], 4, 4, "inline"
    )
    assert (cfg.params.optim.lr, cfg.common.seed, cfg.params.a_mode) == (0.01, 7, "relu")
    assert (cfg.params.w_bits, cfg.params.a_bits, cfg.params.epochs) == (4, 4, 3)
    assert cfg.data_dir == (tmp_path / "data" / "prepared").resolve()  # relative to params.yaml
    kd = load_config("distill", p, ["kd.temperature=4", "students=[4]"])
    assert kd.params.kd.temperature == 4 and kd.params.students == [4]


@pytest.mark.parametrize(
    "stage,sets,bits,match",
    [
        (
            "quantize-weights",
            ["epocs=3"],
            None,
            "unknown key 'quantize_weights.epocs'; valid keys: epochs",
        ),
        ("quantize-weights", ["optim.lrr=1"], None, "valid keys: lr, momentum"),
        ("direct", [], 0, "w_bits: bits must be in \\[2, 32\\]"),
        ("direct", [], 33, "bits must be in"),
        ("direct", ["w_bits=2.5"], None, "w_bits"),
        ("direct", ["common.model=vgg"], None, "unknown model 'vgg'"),
        ("direct", ["common.dataset=mnist"], None, "common.dataset"),
        ("direct", ["common.quantizer=xnor"], None, "common.quantizer"),
        ("direct", ["epochs=three"], None, "direct.epochs"),
        ("direct", ["init=nowhere"], None, "init must be"),
        ("stochastic-precision", ["sp.ramp=[0.5, 1.5]"], None, "ramp probabilities must lie in"),
        ("stochastic-precision", ["sp.ramp=[0.9, 0.5, 1.0]"], None, "non-decreasing"),
        ("bit-decay", ["schedule=[4, 8, 2]"], None, "strictly decreasing"),
        ("bit-decay", ["schedule=[8, 4]"], 2, "never reaches the target bits 2"),
        ("distill", ["kd.lambda_s=-1"], None, "kd.lambda_s"),
        ("distill", ["kd=null"], None, "distill needs a kd block"),
        ("pretrain", ["sp={}"], None, "kd and sp must be null"),
    ],
)
def test_invalid_settings_fail_at_config_time(tmp_path, stage, sets, bits, match):
    p = _params(tmp_path, "common: {seed: 0}\n")
    with pytest.raises(ConfigError, match=match):
        load_config(stage, p, sets, bits, bits)


def test_file_level_errors(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_config("pretrain", tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="invalid YAML \\(line 3\\)"):
        load_config("pretrain", _params(tmp_path, "common:\n  seed: [1\n"))
    with pytest.raises(ConfigError, match="unknown section 'pretrian'"):
        load_config("pretrain", _params(tmp_path, "pretrian: {epochs: 1}\n"))
    with pytest.raises(ConfigError, match="unknown stage"):
        load_config("finetune", _params(tmp_path, "{}\n"))
    with pytest.raises(ConfigError, match="has no bit-widths"):
        load_config("pretrain", _params(tmp_path, "{}\n"), w_bits=2)
    with pytest.raises(ConfigError, match="key=value"):
        load_config("pretrain", _params(tmp_path, "{}\n"), ["epochs"])
