"""Provenance: "dirty" means the code changed, not the files a pipeline writes; a model.pt
carries its resolved config and provenance, that of the session that trained it even when
a finished run is replayed from its checkpoints; the resume fingerprint includes the world
size; `lowbit show-report` renders on a terminal and stays raw when piped."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from lowbit import checkpoint
from lowbit.config import load_config
from lowbit.provenance import dirty_files, provenance
from lowbit.stages import stage_function

BIN = Path(sys.executable).parent


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


# Files DVC and lowbit rewrite while a pipeline runs (none of them is code)
PIPELINE_WRITES = (
    "dvc.lock",
    "params.yaml",
    "runs/a/metrics.json",
    "reports/r/README.md",
    "dvclive/d/metrics.json",
    "results/seed0/m.json",
)


def test_files_a_pipeline_writes_do_not_make_the_code_dirty(tmp_path):
    repo = tmp_path
    for f in ("lowbit/x.py", *PIPELINE_WRITES):
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        (repo / f).write_text("0\n")  # fmt: skip
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    for f in PIPELINE_WRITES:
        (repo / f).write_text("1\n")
    assert dirty_files(repo) == []
    assert provenance(repo, torch.device("cpu"), 0)["git_dirty"] is False
    (repo / "lowbit/x.py").write_text("changed\n")
    assert dirty_files(repo) == ["lowbit/x.py"]
    assert provenance(repo, torch.device("cpu"), 0)["git_dirty"] is True


PARAMS = {
    "common": {"dataset": "digits", "batch_size": 64, "workers": 0, "loader": "torch",
               "runs_dir": "runs", "data_dir": "data"},
    "prepare": {"image_size": 8},
    "pretrain": {"epochs": 1, "optim": {"lr": 0.1}},
}  # fmt: skip


def test_a_checkpoint_carries_its_config_and_provenance(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    for stage in ("prepare", "pretrain"):
        stage_function(stage)(load_config(stage, tmp_path / "params.yaml"))
    state = checkpoint.load(tmp_path / "runs" / "pretrain" / "fp" / "model.pt")  # weights_only
    assert state["config"]["pretrain"]["epochs"] == 1 and state["config"]["common"]["seed"] == 0
    assert set(state["provenance"]) >= {"git_commit", "versions", "device", "started"}
    # what it trained on, without what changes from seed to seed (lowbit.report.recipes)
    run = json.loads((tmp_path / "runs" / "pretrain" / "fp" / "run.json").read_text())
    assert run["data"]["source"] == "digits" and run["data"]["image_size"] == 8
    assert run["data"]["counts"]["train"] + run["data"]["counts"]["val"] == 1797
    assert not {"seed", "files", "mean"} & set(run["data"])


def test_the_resume_fingerprint_includes_the_world_size(monkeypatch, tmp_path):
    from lowbit import engine
    from lowbit.training import rounds

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    cfg = load_config("pretrain", tmp_path / "params.yaml")
    one = rounds.fingerprint(cfg, 0)
    monkeypatch.setattr(engine, "rank_world", lambda: (0, 4))
    assert rounds.fingerprint(cfg, 0) != one  # 4 ranks: another global batch


def _report(tmp_path: Path) -> Path:
    path = tmp_path / "README.md"
    path.write_text("# A report\n\n| method | top-1 |\n|---|---|\n| direct | 78.6 |\n")
    return path


def test_show_report_is_raw_markdown_when_piped(tmp_path):
    path = _report(tmp_path)
    out = subprocess.run([str(BIN / "lowbit"), "show-report", str(path)], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert out.startswith(path.read_text()) and "|---|---|" in out


def test_show_report_is_rendered_on_a_terminal(tmp_path):
    path = _report(tmp_path)
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdout is the terminal
        os.execv(str(BIN / "lowbit"), [str(BIN / "lowbit"), "show-report", str(path)])
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.waitpid(pid, 0)
    text = b"".join(chunks).decode(errors="replace")
    assert "A report" in text and "78.6" in text
    assert "|---|" not in text and "# A report" not in text  # rich drew the table and heading


def test_provenance_names_the_simd_kernels_aten_dispatches_to(tmp_path):
    # ATEN_CPU_CAPABILITY caps the dispatch; provenance must report what was used, not
    # what the CPU could do
    code = (
        "import torch; from pathlib import Path; from lowbit.provenance import provenance\n"
        "print(provenance(Path('.'), torch.device('cpu'), 0)['cpu_capability'])"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "DEFAULT"
    here = provenance(tmp_path, torch.device("cpu"), 0)["cpu_capability"]
    assert here == torch.backends.cpu.get_cpu_capability() and here != ""


def test_the_weights_digest_names_the_network_not_the_file(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    digest = checkpoint.weights_digest(net.state_dict())
    # saved twice with other provenance: other files, one network
    for name, started in (("a.pt", "2026-01-01"), ("b.pt", "2026-02-02")):
        checkpoint.save(tmp_path / name, {"model": net.state_dict(), "started": started})
    a, b = (tmp_path / "a.pt").read_bytes(), (tmp_path / "b.pt").read_bytes()
    assert a != b
    loaded = checkpoint.load(tmp_path / "b.pt")["model"]
    assert checkpoint.weights_digest(loaded) == digest
    assert (
        checkpoint.weights_digest(net.to(memory_format=torch.channels_last).state_dict()) == digest
    )
    with torch.no_grad():
        net[0].weight[0, 0, 0, 0] += 1e-6  # one value of 112
    assert checkpoint.weights_digest(net.state_dict()) != digest
    renamed = {f"m.{k}": v for k, v in loaded.items()}
    assert checkpoint.weights_digest(renamed) != digest


def test_a_replayed_run_keeps_the_provenance_of_the_session_that_trained_it(tmp_path):
    # `dvc repro` deletes a stage's outputs before running it again; a run whose round
    # checkpoints are kept is then replayed from them, training nothing: its run.json must
    # still name the session that trained it, not the one that replayed it
    params = {**PARAMS, "common": {**PARAMS["common"], "keep_resume": True}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("prepare", "pretrain"):
        stage_function(stage)(load_config(stage, tmp_path / "params.yaml"))
    out = tmp_path / "runs" / "pretrain" / "fp"
    first = json.loads((out / "run.json").read_text())["provenance"]
    assert "resumed" not in first
    shutil.rmtree(out)
    time.sleep(1.1)  # "started" has one-second resolution: a new session would differ
    stage_function("pretrain")(load_config("pretrain", tmp_path / "params.yaml"))
    assert json.loads((out / "run.json").read_text())["provenance"] == first
    assert checkpoint.load(out / "model.pt")["provenance"] == first
