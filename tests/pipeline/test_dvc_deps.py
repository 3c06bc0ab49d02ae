"""Every DVC stage lists the code its command imports, so a code change reruns it; the
paper pipelines are exactly what pipeline/generate.py writes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = sorted(p.parent for p in (ROOT / "pipeline").glob("*/dvc.yaml"))


def _generate():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "pipeline" / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("exp", PIPELINES, ids=[p.name for p in PIPELINES])
def test_pipeline_dvc_yaml_is_the_generated_one(exp: Path) -> None:
    gen = _generate()
    bits, reports, long = gen.EXPERIMENTS[exp.name]
    assert (exp / "dvc.yaml").read_text() == gen.dvc_yaml(exp.name, bits, reports, long)


def _training_code(stage: str) -> set[str]:
    """lowbit modules (as DVC deps relative to the repo root) a training stage runs."""
    return {
        "lowbit/config.py", "lowbit/checkpoint.py", "lowbit/distributed.py",
        "lowbit/engine.py", "lowbit/optim.py", "lowbit/convergence.py",
        "lowbit/provenance.py", "lowbit/data", "lowbit/models",
        "lowbit/quant", "lowbit/methods", "lowbit/stages/training.py",
        "lowbit/stages/outputs.py", f"lowbit/stages/{stage.replace('-', '_')}.py",
    }  # fmt: skip


@pytest.mark.parametrize("where", [ROOT, *PIPELINES], ids=["root", *(p.name for p in PIPELINES)])
def test_each_stage_depends_on_the_code_and_params_it_reads(where: Path) -> None:
    prefix = "" if where == ROOT else "../../"
    stages = yaml.safe_load((where / "dvc.yaml").read_text())["stages"]
    for name, st in stages.items():
        deps = {d.removeprefix(prefix) for d in st["deps"]}
        stage = st["cmd"].split()[2]
        if stage == "prepare":
            want = {"lowbit/config.py", "lowbit/checkpoint.py", "lowbit/data",
                    "lowbit/stages/prepare.py"}  # fmt: skip
        elif stage == "report":
            want = {"lowbit/config.py", "lowbit/report", "lowbit/stages/report.py"}
        else:
            want = _training_code(stage)
            need = {"common.seed", "common.model", "common.loader", "common.device"}
            assert need <= set(st["params"]), name
            assert stage.replace("-", "_") in st["params"], name
        assert want <= deps, (name, sorted(want - deps))
        # and everything listed exists
        for d in st["deps"]:
            assert (where / d).exists() or d.startswith("runs/") or d == "data/prepared", d
