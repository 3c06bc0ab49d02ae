"""`lowbit archive --experiments` reads each revision's runs from DVC's cache; a revision
whose outputs are not cached here (the baseline commit in a fresh clone) is skipped with a
warning instead of stopping the archive of every other experiment."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from lowbit.archive import archive_experiments
from lowbit.errors import ConfigError
from tests.pipeline import shrunk
from tests.report.synth import write_run


def _ok(args: list[str], cwd: Path) -> None:
    out = shrunk.run(args, cwd, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_a_revision_without_cached_outputs_is_skipped_with_a_warning(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_run(repo / "src", "direct/w2a2", stage="direct", seed=3)  # a finished run's files
    stage = {"cmd": "rm -rf runs && mkdir runs && cp -r src/direct runs/direct",
             "deps": ["src"], "outs": ["runs"]}  # fmt: skip
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": stage}}))
    _ok(["git", "init", "-q"], repo)
    _ok(["dvc", "init", "-q"], repo)
    _ok(["dvc", "repro", "-q"], repo)
    shrunk.commit(repo, "baseline")
    # its outputs cached here: the baseline's run is archived
    found = archive_experiments(repo, repo / "runs", repo / "results")
    assert found == [repo / "results/seed3/direct/w2a2"]
    shutil.rmtree(repo / "results")
    shutil.rmtree(repo / ".dvc" / "cache")  # as in a fresh clone of the commit
    with (
        pytest.warns(RuntimeWarning, match="not in this DVC cache"),
        pytest.raises(ConfigError, match="nothing to archive"),
    ):
        archive_experiments(repo, repo / "runs", repo / "results")
    assert not (repo / "results").exists()
