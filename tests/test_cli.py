"""The `lowbit` command through Typer's runner: help texts and one-line errors."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lowbit.cli import app
from lowbit.config import STAGES

runner = CliRunner()


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_informative_help(stage):
    r = runner.invoke(app, ["stage", stage, "--help"])
    assert r.exit_code == 0
    assert f"Stage `{stage}`" in r.output and "--set" in r.output and "--executor" in r.output


def test_stage_group_help_lists_stages():
    r = runner.invoke(app, ["stage", "--help"])
    assert r.exit_code == 0 and all(s in r.output for s in STAGES)


@pytest.mark.parametrize(
    "args,match",
    [
        (["stage", "direct", "--bits", "0"], "bits must be in [2, 32], got 0"),
        (["stage", "direct", "--bits", "33"], "got 33"),
        (["stage", "direct", "--set", "epocs=1"], "unknown key 'direct.epocs'"),
        (["stage", "direct", "--set", "common.model=vgg"], "unknown model 'vgg'"),
        (["stage", "pretrain", "--params", "nope.yaml"], "params file not found: nope.yaml"),
        (["stage", "direct", "--bits", "2"], "input stage 'prepare' has not run"),
        (["stage", "pretrain", "--executor", "cloud"], "'cloud' is not one of 'inline'"),
    ],
)
def test_bad_input_is_one_clear_line_and_nonzero(tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("common: {seed: 0}\n")
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("metrics.json"))


def test_unknown_stage_is_one_line_naming_the_stages():
    r = runner.invoke(app, ["stage", "finetune"])
    assert r.exit_code == 2
    assert r.output == f"error: No such command 'finetune'; commands: {', '.join(STAGES)}\n"
    r = runner.invoke(app, ["stage", "distil"])  # close to a stage: typer names that one
    assert r.exit_code == 2
    assert r.output == "error: No such command 'distil'. Did you mean 'distill'?\n"


def test_info_names_the_versions_and_ffcv():
    r = runner.invoke(app, ["info"])
    assert r.exit_code == 0 and "torch" in r.output and "ffcv" in r.output
