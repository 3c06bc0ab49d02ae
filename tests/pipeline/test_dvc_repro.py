"""A real `dvc repro` of the default pipeline, shrunken, in a temporary git repo: outputs,
dvclive logs, `dvc metrics show` / `dvc exp show` / `dvc plots show`, an experiment per
seed, a seed sweep through DVC's queue aggregated by the report, and clean provenance."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.pipeline import shrunk

RUNS = [
    "pretrain/fp", "quantize-weights/w2a2", "quantize-activations/w2a2", "bit-decay/w2a2",
    "direct/w2a2", "stochastic-precision/w2a2", "distill/w2a2", "ts-pq-kd/w2a2",
]  # fmt: skip


def _ok(args: list[str], cwd: Path) -> str:
    out = shrunk.run(args, cwd)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "failed to load" not in out.stdout + out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The shrunk pipeline after its first `dvc repro`, committed: built once (the whole
    graph takes minutes), and each test works in a copy of it (`_copy`)."""
    repo = shrunk.shrunken_pipeline(tmp_path_factory.mktemp("baseline") / "repo", bits=[2])
    first = shrunk.run(["dvc", "repro"], repo)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    shrunk.commit(repo, "baseline")
    return repo, first


def _copy(baseline: tuple[Path, subprocess.CompletedProcess], dest: Path) -> Path:
    """The baseline repository (git, DVC cache, outputs) copied, timestamps kept."""
    return Path(shutil.copytree(baseline[0], dest / "repo", symlinks=True))


@pytest.mark.slow
def test_dvc_repro_default_pipeline_end_to_end(baseline, tmp_path):
    repo, first = _copy(baseline, tmp_path), baseline[1]
    # a one-line summary per epoch, even without a terminal (a SLURM log shows progress)
    assert "lowbit: direct w2a2 round 1/1 epoch 2: train loss" in first.stderr

    for run in RUNS:
        d = repo / "runs" / run
        for f in ("model.pt", "metrics.json", "history.csv", "run.json"):
            assert (d / f).is_file(), d / f
        live = json.loads((repo / "dvclive" / "metrics" / f"{run}.json").read_text())
        assert set(live) == {"top1", "best_top1", "step"}, run
        assert (repo / "dvclive" / run / "plots/metrics/val/top1.tsv").is_file()
        assert not (repo / "dvclive" / run / "metrics.json").exists()  # plots only there
    run = json.loads((repo / "runs/direct/w2a2/run.json").read_text())
    assert len(run["provenance"]["git_commit"]) == 40 and run["config"]["direct"]["w_bits"] == 2
    # DVC rewrote dvc.lock while the pipeline ran: the code is still the commit's
    assert run["provenance"]["git_dirty"] is False, run["provenance"]["git_dirty_files"]
    report = repo / "reports" / "digits-resnet20"
    assert "W2A2" in (report / "README.md").read_text()
    assert not list((repo / "runs").glob(".resume/*/*/*.pt"))  # resume state cleaned up

    second = shrunk.run(["dvc", "repro"], repo)
    assert second.returncode == 0 and "Running stage" not in second.stdout, second.stdout

    # One parameter changes: only what reads it is out of date.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["direct"]["optim"]["lr"] = 0.05
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = set(json.loads(_ok(["dvc", "status", "--json"], repo)))
    assert changed == {"direct"}, changed

    # `dvc metrics show`: one row per run, a few columns, and the report's summary row
    shown = _ok(["dvc", "metrics", "show"], repo).splitlines()
    rows = {line.split()[0]: line for line in shown[1:]}
    assert {f"dvclive/metrics/{r}.json" for r in RUNS} <= set(rows)
    assert max(len(line) for line in shown) <= 220  # a terminal's width
    assert "reports/digits-resnet20/metrics.json" in rows
    header = shown[0].split()
    assert {"best_top1", "top1", "fp", "w2a2.direct"} <= set(header)

    plots = _ok(["dvc", "plots", "show", "--json"], repo)
    for name in ("dvclive/direct/w2a2/plots/metrics", "plots.csv"):
        assert name in plots, name

    params["direct"]["optim"]["lr"] = 0.02
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shrunk.commit(repo, "seed 0")
    head = shrunk.run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    # Another seed as an experiment; `dvc exp show` with the README's hint fits a terminal.
    # `-s`: only these two stages run again (the others' runs are seed 0's, which is all the
    # report needs to be complete); a whole seed would repeat every stage's minute here
    _ok(["dvc", "exp", "run", "-s", "-S", "common.seed=1", "-n", "seed1", "direct", "report"], repo)
    table = _ok(["dvc", "exp", "show", "--no-pager", "--drop", ".*",
                 "--keep", r"Experiment|common\.seed|w2a2\..*"], repo)  # fmt: skip
    assert "seed1" in table and "w2a2.direct" in table and "…" not in table
    assert max(len(line) for line in table.splitlines()) <= 120
    rows = _exp_rows(json.loads(_ok(["dvc", "exp", "show", "--json"], repo)))
    assert rows["seed1"]["seed"] == 1 and rows[head]["seed"] == 0, rows
    a, b = rows["seed1"]["metrics"], rows[head]["metrics"]
    assert a.keys() == b.keys() and "w2a2" in a and a != b


def _exp_rows(shown: list) -> dict[str, dict]:
    """`dvc exp show --json` → {rev or name: {"seed": common.seed, "metrics": …}}."""
    rows = {}

    def add(rev: dict) -> None:
        data = rev.get("data") or {}
        params = data.get("params", {}).get("params.yaml", {}).get("data", {})
        metrics = data.get("metrics", {}).get("reports/digits-resnet20/metrics.json", {})
        row = {"seed": params.get("common", {}).get("seed"), "metrics": metrics.get("data")}
        for key in (rev.get("rev"), rev.get("name")):
            if key:
                rows[key] = row
        for group in rev.get("experiments") or []:
            for r in group.get("revs", []):
                add(r)

    for rev in shown:
        add(rev)
    return rows


@pytest.mark.slow
def test_queued_seeds_and_quantizers_are_aggregated_into_their_own_cells(baseline, tmp_path):
    """Two queued experiments beside the committed baseline (direct W2A2, seed 0, DoReFa):
    `-S common.seed=1` and `-S common.quantizer=lsq`, run by `dvc queue start -j 1`, then
    `lowbit archive --experiments` and the report. The DoReFa cell has n = 2 seeds; the
    LSQ run is a cell of its own (n = 1), never averaged with DoReFa's."""
    repo = _queued(_copy(baseline, tmp_path), ["common.seed=1", "common.quantizer=lsq"])
    _ok(["lowbit", "archive", "--to", "results"], repo)  # the workspace's seed 0
    assert sorted(p.name for p in (repo / "results").glob("seed*")) == ["seed0", "seed1"]
    archived = sorted(p.name for p in (repo / "results" / "seed0" / "direct").iterdir())
    assert archived == ["w2a2", "w2a2-lsq"], archived
    assert [p.name for p in (repo / "results" / "seed1" / "direct").iterdir()] == ["w2a2"]
    _ok(["dvc", "repro", "report"], repo)
    text = (repo / "reports" / "digits-resnet20" / "README.md").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| W2A2 | direct")]
    dorefa = [r for r in rows if r.startswith("| W2A2 | direct |")]
    lsq = [r for r in rows if r.startswith("| W2A2 | direct [lsq] |")]
    assert len(rows) == 2 and len(dorefa) == len(lsq) == 1, rows
    assert "| 2 |" in dorefa[0] and "±" in dorefa[0], dorefa
    assert "±" not in lsq[0], lsq  # one seed: nothing pooled


def _queued(repo: Path, sweeps: list[str]) -> Path:
    """In the reproduced, committed pipeline `repo`, one queued experiment per `-S` value
    that runs direct alone (`-s`: the sweep's subject; its FP start is the baseline's), run
    by `dvc queue start -j 1`, archived with `--experiments`."""
    for sweep in sweeps:
        _ok(["dvc", "exp", "run", "--queue", "-s", "-S", sweep, "direct"], repo)
    _ok(["dvc", "queue", "start", "-j", "1"], repo)
    _wait_queue(repo)
    _ok(["lowbit", "archive", "--to", "results", "--experiments"], repo)
    return repo


def _wait_queue(repo: Path, timeout: float = 1200) -> None:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        status = shrunk.run(["dvc", "queue", "status"], repo).stdout
        if "Queued" not in status and "Running" not in status:
            assert "Failed" not in status, status
            return
        time.sleep(2)
    raise AssertionError("the DVC queue did not finish")
