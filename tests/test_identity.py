"""The run identity: one slug per run, parsed back to the same identity, built by config
loading, naming the run's folders; runs that differ never share a folder."""

from __future__ import annotations

import itertools
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lowbit import identity
from lowbit.config import QUANT_STAGES, load_config, load_runs
from lowbit.errors import ConfigError
from lowbit.identity import RunId

TAGS = ("", "long", "a", "ts+pq", "long-2")


@pytest.mark.parametrize("stage", ["pretrain", *QUANT_STAGES])
def test_slug_parse_slug_round_trips_every_setting(stage):
    seen: dict[str, RunId] = {}
    for model, quantizer, block, start, tag, bits in itertools.product(
        identity.MODELS, identity.QUANTIZERS, identity.BLOCK_OUTPUTS, identity.FP_STARTS,
        TAGS, [(2, 2), (4, 32), (32, 32)],
    ):  # fmt: skip
        run = RunId(
            stage, *bits, model, quantizer, block, start, "" if stage == "pretrain" else tag
        )
        slug = run.slug()
        assert RunId.parse(stage, slug) == run, slug
        assert RunId.parse(stage, slug).slug() == slug
        # one slug, one identity: two different runs never share a name
        assert seen.setdefault(slug, run) == run, (slug, seen[slug], run)


def test_defaults_keep_the_folder_names_of_older_runs():
    assert RunId("direct", 2, 2).slug() == "w2a2"
    assert RunId("direct", 4, 4, tag="long").slug() == "w4a4-long"
    assert RunId("direct", 2, 2, quantizer="lsq").slug() == "w2a2-lsq"
    assert RunId("direct", 2, 2, block_output="fp", model="preresnet20").slug() == (
        "w2a2-preresnet20-fpblocks"
    )


def test_the_fp_network_has_no_quantizer_and_its_blocks_matter_only_when_clipped():
    assert RunId("pretrain", quantizer="lsq", block_output="fp").slug() == "fp"
    other = "clip" if identity.DEFAULTS["fp_start"] == "relu" else "relu"
    clipped = RunId("pretrain", block_output="fp", fp_start="clip")
    assert "fpblocks" in clipped.slug() and clipped.setting() == "fp blocks, clip start"
    assert RunId("pretrain", fp_start="relu").setting() == ""  # the plain network: "fp"
    assert RunId("direct", 2, 2, fp_start=other).setting() == f"{other} start"
    # the model has a report section of its own: not a setting
    assert RunId("direct", 2, 2, model="preresnet20", quantizer="lsq").setting() == "lsq"


@pytest.mark.parametrize("tag", ["lsq", "clip-long", "relu", "fpblocks", "resnet18-x", "A", "a_b"])
def test_a_tag_cannot_pass_for_a_setting(tag):
    with pytest.raises(ConfigError, match="tag"):
        RunId("direct", 2, 2, tag=tag)


def test_slugs_of_other_stages_or_shapes_are_refused():
    with pytest.raises(ConfigError, match="not a run folder name"):
        RunId.parse("direct", "fp")
    with pytest.raises(ConfigError, match="not a run folder name"):
        RunId.parse("pretrain", "w2a2")
    with pytest.raises(ConfigError, match="w_bits"):
        RunId.parse("direct", "w1a2")


def test_models_known_to_the_identity_are_the_registry_s():
    from lowbit.models import MODELS

    assert set(identity.MODELS) == set(MODELS)


def test_identity_of_a_recorded_run_and_of_a_run_older_than_slugs():
    rec = {"stage": "direct", "slug": "w2a2-lsq-long", "w_bits": 2, "a_bits": 2}
    assert RunId.of(rec, "anything") == RunId("direct", 2, 2, quantizer="lsq", tag="long")
    # before slugs: the folder's name, and the FP start such runs used (plain ReLU)
    old = {"stage": "quantize-weights", "w_bits": 2, "a_bits": 32, "quantizer": "dorefa"}
    assert RunId.of(old, "w2a2") == RunId("quantize-weights", 2, 2, fp_start="relu")
    assert RunId.of({"stage": "pretrain"}, "pretrain") == RunId("pretrain", fp_start="relu")


def _params(tmp_path: Path, **sections) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(sections))
    return p


def test_config_builds_the_identity_and_names_every_folder_from_it(tmp_path):
    params = _params(tmp_path, common={"quantizer": "lsq", "live_dir": "live"})
    cfg = load_config("direct", params, ["tag=long"], 4, 4)
    assert cfg.run == RunId("direct", 4, 4, quantizer="lsq", tag="long")
    slug = "w4a4-lsq-long"
    assert cfg.out_dir() == tmp_path / "runs" / "direct" / slug
    assert cfg.live == (
        tmp_path / "live/direct" / slug,
        tmp_path / f"live/metrics/direct/{slug}.json",
    )
    assert cfg.resume_dir == tmp_path / "runs/.resume/direct" / slug
    # the init run: the same settings, the init stage's own name
    assert cfg.init_run == RunId("pretrain", quantizer="lsq")
    assert cfg.out_dir(cfg.init_run) == tmp_path / "runs/pretrain/fp"
    dorefa = load_config("direct", params, ["tag=long", "common.quantizer=dorefa"], 4, 4)
    assert dorefa.out_dir() != cfg.out_dir()


def test_the_pipeline_section_lists_each_stage_s_runs(tmp_path):
    params = _params(
        tmp_path,
        pipeline={
            "bits": [2, 4],
            "stage_bits": {"ts-pq-kd": [2]},
            "fp_starts": ["relu", "clip"],
            "long_direct": {"bits": [2], "epochs": 7},
        },
    )
    slugs = {s: [c.run.slug() for c in load_runs(s, params)] for s in ("pretrain", "direct")}
    assert slugs["pretrain"] == [RunId("pretrain", fp_start=f).slug() for f in ("relu", "clip")]
    assert slugs["direct"] == ["w2a2", "w4a4", "w2a2-long"]
    assert load_runs("direct", params)[-1].params.epochs == 7
    assert [c.run.slug() for c in load_runs("ts-pq-kd", params)] == ["w2a2"]
    assert all(c.common.keep_resume for c in load_runs("bit-decay", params))
    assert load_runs("report", params)[0].run is None


def test_the_command_a_missing_init_suggests_is_a_valid_command(tmp_path):
    params = _params(tmp_path)
    cfg = load_config("quantize-activations", params, ["init_tag=nosuch"], 2, 2)
    assert cfg.init_run.command() == (
        "lowbit stage quantize-weights --w-bits 2 --a-bits 2 --set tag=nosuch"
    )


def test_the_suggested_command_reads_the_same_params_and_common_overrides(tmp_path):
    # a stage run with another params file and its own runs folder (study.sh's
    # runs/seed<N>) must suggest a command that writes where it will read
    (tmp_path / "my dir").mkdir()
    params = _params(tmp_path / "my dir")
    sets = ["init_tag=nosuch", "common.runs_dir=runs/seed 3", "common.seed=3"]
    cfgs = load_runs("quantize-activations", params, sets)
    cfg = cfgs[0]
    cmd = cfg.init_run.command(cfg.params_file, cfg.common_sets)
    assert "keep_resume" not in cmd  # --all's own setting, not the user's
    stage, *args = shlex.split(cmd)[2:]
    opts = dict(zip(args[::2], args[1::2], strict=True))
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    again = load_config(stage, opts["--params"], sets, int(opts["--w-bits"]), int(opts["--a-bits"]))
    assert again.run == cfg.init_run  # the suggestion names exactly the missing run ...
    assert again.out_dir() == cfg.out_dir(cfg.init_run)  # ... in the folder it is read from
    assert again.common.seed == 3


def test_cli_help_and_config_load_without_torch():
    # the add-ons' settings (kd:, sp:) live beside their methods, in lowbit.methods
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    code = (
        "import sys; from lowbit.cli import app; from lowbit.config import load_config; "
        "import lowbit.identity, lowbit.report.collect, lowbit.stages, lowbit.methods; "
        f"kd = load_config('distill', {str(params)!r}, ['kd.temperature=2']).params.kd; "
        f"sp = load_config('stochastic-precision', {str(params)!r}).params.sp; "
        "assert (kd.temperature, sp.unit) == (2, 'layer'); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
