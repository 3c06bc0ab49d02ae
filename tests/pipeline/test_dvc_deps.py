"""The one hand-written dvc.yaml: every paper pipeline's dvc.yaml is a link to the root's,
every stage lists the code and params it reads, and the edge to the stage it starts from
follows its `init` in params.yaml (checked with a real `dvc dag`, which resolves the
templating), in the root and in every pipeline folder."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = sorted(p.parent for p in (ROOT / "pipeline").glob("*/dvc.yaml"))
WHERE = [ROOT, *PIPELINES]
IDS = ["root", *(p.name for p in PIPELINES)]
BIN = Path(sys.executable).parent


# lowbit modules (as DVC deps relative to the repo root) a training stage runs: its row
# of the table of stages lies in lowbit/config, its method in lowbit/methods
TRAINING_CODE = {
    "lowbit/config", "lowbit/identity.py", "lowbit/checkpoint.py", "lowbit/distributed.py",
    "lowbit/metrics.py", "lowbit/provenance.py", "lowbit/engine", "lowbit/data",
    "lowbit/models", "lowbit/quant", "lowbit/methods", "lowbit/training",
}  # fmt: skip


def _has(tree: dict, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def _dvc(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _edges(where: Path) -> set[tuple[str, str]]:
    """(upstream, downstream) stage names from `dvc dag --dot`."""
    dot = _dvc(["dag", "--dot"], where)
    return set(re.findall(r'"([^"]+)" -> "([^"]+)"', dot))


@pytest.mark.parametrize("where", PIPELINES, ids=IDS[1:])
def test_every_pipeline_shares_the_root_stage_graph(where: Path) -> None:
    link = where / "dvc.yaml"
    assert link.is_symlink() and link.resolve() == ROOT / "dvc.yaml"
    params = yaml.safe_load((where / "params.yaml").read_text())
    assert (where / params["pipeline"]["code"] / "lowbit" / "identity.py").is_file()


@pytest.mark.parametrize("where", WHERE, ids=IDS)
def test_each_stage_depends_on_the_code_and_params_it_reads(where: Path) -> None:
    stages = yaml.safe_load((where / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((where / "params.yaml").read_text())
    for name, st in stages.items():
        for key in st["params"]:  # `dvc repro` refuses a stage whose params.yaml lacks one
            assert _has(params, key), (name, key)
        deps = {d.removeprefix("${pipeline.code}/") for d in st["deps"]}
        stage = st["cmd"].split()[2]
        if stage == "prepare":
            want = {"lowbit/config", "lowbit/checkpoint.py", "lowbit/data",
                    "lowbit/stages/prepare.py"}  # fmt: skip
        elif stage == "report":
            want = {"lowbit/config", "lowbit/report", "lowbit/stages/report.py"}
        else:
            want = TRAINING_CODE
            need = {"common.seed", "common.model", "common.loader", "common.block_output"}
            assert need <= set(st["params"]), name
            assert stage.replace("-", "_") in st["params"], name
            # The FP network has no quantizer: a quantizer sweep must not retrain it
            # (RunId drops the quantizer of an FP run, so both would write pretrain/fp).
            assert ("common.quantizer" in st["params"]) == (stage != "pretrain"), name
        assert want <= deps, (name, sorted(want - deps))
        for d in deps:  # and every code path listed exists
            assert "$" in d or (ROOT / d).exists() or d == "results", d
        every = "" if stage in ("prepare", "report") else " --all"
        assert st["cmd"] == f"lowbit stage {stage}{every}"


@pytest.mark.parametrize("where", WHERE, ids=IDS)
def test_the_dag_edge_of_every_stage_follows_its_init(where: Path) -> None:
    params = yaml.safe_load((where / "params.yaml").read_text())
    edges = _edges(where)
    stages = yaml.safe_load((where / "dvc.yaml").read_text())["stages"]
    for name, st in stages.items():
        section = st["cmd"].split()[2].replace("-", "_")
        init = (params.get(section) or {}).get("init")
        if init in (None, "scratch"):
            continue
        ups = {u for u, d in edges if d == name}
        assert init in ups, (name, init, sorted(ups))
    # DVC plans the whole graph there: what `dvc repro` and `dvc exp run` would run
    dry = _dvc(["repro", "--dry", "--force"], where)
    assert all(f"Running stage '{s}'" in dry for s in stages), dry[-2000:]


def test_changing_init_moves_the_edge(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(ROOT / "lowbit", repo / "lowbit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "reports" / "reference", repo / "reports" / "reference")
    for f in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / f, repo / f)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc(["init", "-q"], repo)
    assert ("pretrain", "distill") in _edges(repo)
    assert ("bit-decay", "distill") not in _edges(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["distill"]["init"] = "bit-decay"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    moved = _edges(repo)
    assert ("bit-decay", "distill") in moved
    assert ("pretrain", "distill") in moved  # still: the KD teacher starts from it
