"""The bad-input catalogue: every case through the CLI gives one clear line naming the
problem, a non-zero exit, no traceback, and no output a later stage would accept."""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from lowbit import checkpoint
from lowbit.cli import app

runner = CliRunner()
BASE = {
    "common": {"dataset": "digits", "batch_size": 64, "workers": 0, "loader": "torch",
               "progress": False, "data_dir": "data"},
    "prepare": {"image_size": 8},
    "pretrain": {"epochs": 1},
    "direct": {"epochs": 1},
}  # fmt: skip


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """digits prepared + a 1-epoch FP network + a 1-epoch W2A2 one (for export), reused
    (copied) by the cases that need them."""
    repo = tmp_path_factory.mktemp("prepared")
    (repo / "params.yaml").write_text(yaml.safe_dump(BASE))
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        for args in (["prepare"], ["pretrain"], ["direct", "--bits", "2"]):
            r = runner.invoke(app, ["stage", *args])
            assert r.exit_code == 0, r.output
    finally:
        os.chdir(cwd)
    return repo


def _fresh(tmp_path: Path, params: dict | None = None) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params or BASE))
    return tmp_path


def _with_data(prepared: Path, tmp_path: Path, runs: bool = False, w2a2: bool = False) -> Path:
    shutil.copy(prepared / "params.yaml", tmp_path)
    shutil.copytree(prepared / "data", tmp_path / "data")
    for stage, wanted in (("pretrain", runs), ("direct", w2a2)):
        if wanted:
            shutil.copytree(prepared / "runs" / stage, tmp_path / "runs" / stage)
    return tmp_path


def _imagefolder(
    tmp_path: Path, empty_class: bool = False, corrupt: bool = False, empty_file: bool = False
) -> Path:
    root = tmp_path / "images"
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            d = root / split / c
            d.mkdir(parents=True)
            if empty_class and split == "train" and c == "dog":
                continue
            for i in range(3):
                Image.new("RGB", (8, 8), (i * 40, 10, 200)).save(d / f"{i}.jpg")
    if corrupt:
        (root / "train" / "cat" / "1.jpg").write_bytes(b"not a jpeg at all")
    if empty_file:
        (root / "val" / "dog" / "2.jpg").write_bytes(b"")
    return root


def _params_dir(p: Path) -> Path:
    (p / "params.yaml").mkdir()
    return p


def _beton(tmp: Path, how: str) -> None:
    beton = next((tmp / "data").glob("train.*"))
    data = bytearray(beton.read_bytes())
    if how == "truncate":
        beton.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[len(data) // 2] ^= 0xFF
        beton.write_bytes(bytes(data))


def _foreign_checkpoint(tmp: Path, num_classes: int = 10, model: str = "resnet20") -> None:
    path = tmp / "runs" / "pretrain" / "fp" / "model.pt"
    state = checkpoint.load(path)
    state["arch"] = {**state["arch"], "num_classes": num_classes, "model": model}
    checkpoint.save(path, state)


class _RunsCode:
    """A pickle that would call a function when loaded (weights_only refuses it)."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _code_pickle(tmp: Path) -> None:
    import torch

    torch.save({"format": 1, "x": _RunsCode()}, tmp / "runs" / "pretrain" / "fp" / "model.pt")


# the input a missing TS stage 1 names is the command that makes it, spelt by RunId.slug's
# inverse (the identity's fields as flags and --set), never by splitting the folder name
SUGGESTED = "lowbit stage quantize-weights --w-bits 2 --a-bits 2 --set tag=nosuch"
Case = tuple[str, list[str], str, Callable[[Path, Path], Path]]
CASES: list[Case] = [
    ("bits 0", ["stage", "direct", "--bits", "0"], "bits must be in [2, 32], got 0", lambda p, t: _fresh(t)),
    ("bits 1", ["stage", "direct", "--bits", "1"], "got 1", lambda p, t: _fresh(t)),
    ("bits 33", ["stage", "direct", "--bits", "33"], "got 33", lambda p, t: _fresh(t)),
    ("bits 2.5", ["stage", "direct", "--set", "w_bits=2.5"], "direct.w_bits", lambda p, t: _fresh(t)),
    ("schedule bits", ["stage", "bit-decay", "--set", "schedule=[8,4,1]"], "schedule", lambda p, t: _fresh(t)),
    ("unknown model", ["stage", "pretrain", "--set", "common.model=vgg16"], "unknown model 'vgg16'", lambda p, t: _fresh(t)),
    ("unknown dataset", ["stage", "prepare", "--set", "common.dataset=mnist"], "common.dataset", lambda p, t: _fresh(t)),
    ("unknown quantizer", ["stage", "direct", "--set", "common.quantizer=xnor"], "common.quantizer", lambda p, t: _fresh(t)),
    ("unknown KD loss", ["stage", "distill", "--set", "kd.loss=js"], "distill.kd.loss", lambda p, t: _fresh(t)),
    ("unknown SP unit", ["stage", "stochastic-precision", "--set", "sp.unit=channel"], "sp.unit", lambda p, t: _fresh(t)),
    ("unknown executor", ["stage", "pretrain", "--executor", "cloud"], "'--executor': 'cloud' is not one of", lambda p, t: _fresh(t)),
    ("missing params", ["stage", "pretrain", "--params", "nope.yaml"], "params file not found: nope.yaml", lambda p, t: t),
    ("unreadable params", ["stage", "pretrain"], "cannot read params.yaml", lambda p, t: _params_dir(t)),
    ("invalid YAML", ["stage", "pretrain"], "invalid YAML", lambda p, t: (t / "params.yaml").write_text("a: [") and t),
    ("misspelled key", ["stage", "pretrain", "--set", "epohcs=3"], "unknown key 'pretrain.epohcs'; valid keys:", lambda p, t: _fresh(t)),
    ("misspelled section", ["stage", "pretrain"], "unknown section 'pretrian'", lambda p, t: (t / "params.yaml").write_text("pretrian: {}\n") and t),
    ("wrong type", ["stage", "pretrain", "--set", "epochs=many"], "pretrain.epochs", lambda p, t: _fresh(t)),
    ("negative KD weight", ["stage", "distill", "--set", "kd.lambda_skl=-0.5"], "kd.lambda_skl", lambda p, t: _fresh(t)),
    ("SP probability > 1", ["stage", "stochastic-precision", "--set", "sp.ramp=[0.5,1.2]"], "ramp probabilities", lambda p, t: _fresh(t)),
    ("missing data root", ["stage", "prepare", "--set", "common.dataset=cifar10", "--set", "common.data_root=nowhere"], "nowhere", lambda p, t: _fresh(t)),
    ("data root unset", ["stage", "prepare", "--set", "common.dataset=cifar10"], "common.data_root must be set", lambda p, t: _fresh(t)),
    ("empty class folder", ["stage", "prepare", "--set", "common.dataset=imagefolder", "--set", "common.data_root=images"], "dog", lambda p, t: _imagefolder(t, empty_class=True) and _fresh(t)),
    ("corrupt image", ["stage", "prepare", "--set", "common.dataset=imagefolder", "--set", "common.data_root=images"], "1.jpg", lambda p, t: _imagefolder(t, corrupt=True) and _fresh(t)),
    ("empty image file", ["stage", "prepare", "--set", "common.dataset=imagefolder", "--set", "common.data_root=images"], "2.jpg", lambda p, t: _imagefolder(t, empty_file=True) and _fresh(t)),
    ("runs_dir = data_dir", ["stage", "pretrain", "--set", "common.runs_dir=data"], "common.data_dir", lambda p, t: _with_data(p, t)),
    ("reports inside runs", ["stage", "report", "--set", "common.reports_dir=runs/report"], "overlap", lambda p, t: _with_data(p, t, runs=True)),
    ("missing report notes", ["stage", "report", "--set", "notes=sizing.md"], "notes file not found: ", lambda p, t: _with_data(p, t, runs=True)),
    ("data_root inside data_dir", ["stage", "prepare", "--set", "common.dataset=imagefolder", "--set", "common.data_root=data/images"], "common.data_root", lambda p, t: _fresh(t)),
    ("corrupt .beton", ["stage", "pretrain"], "train.", lambda p, t: (_with_data(p, t), _beton(t, "flip"))[0]),
    ("truncated .beton", ["stage", "pretrain"], "train.", lambda p, t: (_with_data(p, t), _beton(t, "truncate"))[0]),
    ("prepare not run", ["stage", "pretrain"], "input stage 'prepare' has not run", lambda p, t: _fresh(t)),
    ("pretrain not run", ["stage", "direct", "--bits", "2"], "input stage 'pretrain' has not run", lambda p, t: _with_data(p, t)),
    ("TS stage 1 not run", ["stage", "quantize-activations", "--bits", "2"], "input stage 'quantize-weights' has not run", lambda p, t: _with_data(p, t, runs=True)),
    ("TS stage 1 of a tag not run", ["stage", "quantize-activations", "--bits", "2", "--set", "init_tag=nosuch"], SUGGESTED, lambda p, t: _with_data(p, t, runs=True)),
    ("corrupt checkpoint", ["stage", "direct", "--bits", "2"], "model.pt", lambda p, t: (_with_data(p, t, runs=True), (t / "runs/pretrain/fp/model.pt").write_bytes(b"\x80garbage"))[0]),
    ("other class count", ["stage", "direct", "--bits", "2"], "num_classes=100", lambda p, t: (_with_data(p, t, runs=True), _foreign_checkpoint(t, 100))[0]),
    ("other model", ["stage", "direct", "--bits", "2"], "model='preresnet20'", lambda p, t: (_with_data(p, t, runs=True), _foreign_checkpoint(t, 10, "preresnet20"))[0]),
    ("non-finite loss", ["stage", "direct", "--bits", "2", "--set", "optim.lr=1e30"], "non-finite loss", lambda p, t: _with_data(p, t, runs=True)),
    ("export to /proc", ["export", "runs/direct/w2a2", "--out", "/proc/x.npz"], "cannot write /proc/x.npz: /proc does not accept new files (No such file or directory); choose another --out", lambda p, t: _with_data(p, t, w2a2=True)),
    ("export below a file", ["export", "runs/direct/w2a2", "--out", "params.yaml/x.npz"], "cannot write params.yaml/x.npz: ", lambda p, t: _with_data(p, t, w2a2=True)),
    ("archive to /proc", ["archive", "--to", "/proc/x"], "cannot write /proc/x: /proc does not accept new files (No such file or directory); choose another --to", lambda p, t: _with_data(p, t, runs=True)),
    ("pickle that runs code", ["stage", "direct", "--bits", "2"], "objects lowbit will not unpickle", lambda p, t: (_with_data(p, t, runs=True), _code_pickle(t))[0]),  # and PWNED never appears
]  # fmt: skip


@pytest.mark.parametrize("name,args,match,setup", CASES, ids=[c[0] for c in CASES])
def test_bad_input(prepared, tmp_path, monkeypatch, name, args, match, setup):
    repo = setup(prepared, tmp_path)
    before = {p for p in repo.rglob("*") if p.is_file()}
    monkeypatch.chdir(repo)
    r = runner.invoke(app, args)
    assert r.exit_code != 0, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip() and not ln.startswith("warn")]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and match in errors[0], r.output
    assert "Traceback" not in r.output
    # nothing new that DVC or a later stage would take as complete
    new = {p for p in repo.rglob("*") if p.is_file()} - before
    assert not [p for p in new if p.name in ("metrics.json", "model.pt", "meta.json")], new


def test_output_folder_locked_by_another_running_stage(prepared, tmp_path, monkeypatch):
    repo = _with_data(prepared, tmp_path, runs=True)
    lock = repo / "runs" / ".locks" / "direct-w2a2.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write("4242")
        f.flush()
        monkeypatch.chdir(repo)
        r = runner.invoke(app, ["stage", "direct", "--bits", "2"])
    assert r.exit_code == 2
    assert "being written by another running stage (pid 4242)" in r.output
    assert not (repo / "runs" / "direct").exists()


def _session_processes(sid: int) -> list[str]:
    """The processes alive in session `sid` (pid and command name), from /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, rest = stat.read_text().rsplit(")", 1)
        except OSError:  # exited while we looked
            continue
        if int(rest.split()[3]) == sid:  # after the name: state, ppid, pgrp, session
            alive.append(f"{stat.parent.name} {head.split('(', 1)[1]}")
    return alive


def test_the_suggested_command_makes_the_missing_input(prepared, tmp_path, monkeypatch):
    """The command the missing-input error suggests runs as written, and afterwards the
    stage that asked for it finds its input."""
    repo = _with_data(prepared, tmp_path, runs=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["quantize_weights"] = params["quantize_activations"] = {"epochs": 1}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(repo)
    args = ["stage", "quantize-activations", "--bits", "2", "--set", "init_tag=nosuch"]
    first = runner.invoke(app, args)
    suggested = re.search(r"run `lowbit (.+?)` first", first.output)
    assert first.exit_code != 0 and suggested, first.output
    made = runner.invoke(app, shlex.split(suggested[1]))
    assert made.exit_code == 0, made.output
    assert (repo / "runs/quantize-weights/w2a2-nosuch/model.pt").is_file()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output


def test_absurd_worker_count_is_clamped_and_leaves_nothing_running(prepared, tmp_path):
    """common.workers=100000 once forked a loader worker per unit until the kernel killed
    the stage (exit 137), leaving workers behind. Workers never change results, so it is
    clamped to the CPUs this process may use, with one warning, and the stage runs."""
    repo = _with_data(prepared, tmp_path)
    cmd = [sys.executable, "-m", "lowbit.cli", "stage", "pretrain", "--set",
           "common.workers=100000", "--set", "common.runs_dir=runs-w"]  # fmt: skip
    p = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)  # fmt: skip
    try:
        _, err = p.communicate(timeout=300)
    finally:
        p.kill()
    cpus = len(os.sched_getaffinity(0))
    warned = [ln for ln in err.splitlines() if "common.workers=100000" in ln]
    assert p.returncode == 0, err
    assert len(warned) == 1, err
    assert warned[0].endswith(f"is more than the {cpus} CPUs available (the CPUs this "
                              f"process may run on); using {cpus} workers")  # fmt: skip
    assert "Traceback" not in err and (repo / "runs-w/pretrain/fp/metrics.json").is_file()
    assert _session_processes(p.pid) == []  # no worker outlives the stage


@pytest.fixture
def small_disk(tmp_path):
    """A 1.6 MB tmpfs: room for the FP network (1.1 MB), not for a stage's first checkpoint."""

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1600k", "tmpfs", str(disk)])
    assert mounted.returncode == 0, "the full-disk case needs root to mount a small tmpfs"
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_full_disk_is_one_clear_line_and_leaves_nothing(
    prepared, tmp_path, monkeypatch, small_disk
):
    repo = _with_data(prepared, tmp_path, runs=True)
    shutil.copytree(repo / "runs" / "pretrain", small_disk / "pretrain")
    monkeypatch.chdir(repo)
    r = runner.invoke(
        app, ["stage", "direct", "--bits", "2", "--set", f"common.runs_dir={small_disk}"]
    )
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error: ")]
    assert r.exit_code == 2 and len(errors) == 1, r.output
    assert "no space left on device" in errors[0] and "MB" in errors[0], errors[0]
    assert "enforce fail" not in r.output and "Traceback" not in r.output
    left = [p for p in small_disk.rglob("*") if p.is_file() and "pretrain" not in p.parts]
    assert not [p for p in left if p.name.endswith(".tmp") or p.name == "metrics.json"], left
    assert not (small_disk / "direct").exists()


def test_the_catalogue_is_the_one_documented():
    """docs/reliability.md's table is this catalogue: every case once, with the text its
    error line contains, and the count the page states."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "reliability.md").read_text()
    section = doc.split("\n## Bad input\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (.+?) \| .+ \| `(.+)` \|$", section, re.MULTILINE)
    documented = [r for r in rows if r[0] != "case"]
    assert len(documented) == len({name for name, _ in documented}), "a case documented twice"
    assert dict(documented) == {name: match for name, _, match, _ in CASES}
    stated = re.search(r"(\d+) cases, plus the locked output folder above \((\d+)\)", section)
    assert stated and (int(stated[1]), int(stated[2])) == (len(CASES), len(CASES) + 1)
