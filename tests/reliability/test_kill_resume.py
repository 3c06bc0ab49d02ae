"""Kill a training stage mid-epoch (SIGTERM, SIGKILL), rerun the same command, and get
exactly the result of an uninterrupted run (bitwise: same CPU, same threads, and every
epoch's randomness is a function of (seed, epoch))."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

BIN = Path(sys.executable).parent
TIMING_KEYS = {"wall_s", "images_per_s", "epoch_s", "cpu_s", "cost_s", "cost_cpu_s"}

PARAMS = {
    "common": {
        "seed": 0, "dataset": "digits", "batch_size": 64, "workers": 0, "loader": "torch",
        "progress": False, "runs_dir": "runs", "data_dir": "data",
    },
    "prepare": {"image_size": 8},
    "pretrain": {"epochs": 3, "optim": {"lr": 0.1}},
    "quantize_weights": {"epochs": 3, "optim": {"lr": 0.02}},
    "quantize_activations": {"epochs": 3, "optim": {"lr": 0.02}},
    "bit_decay": {"epochs": 2, "schedule": [4, 2], "optim": {"lr": 0.02}},
    "stochastic_precision": {"epochs": 3, "optim": {"lr": 0.02}},
    "distill": {"epochs": 3, "optim": {"lr": 0.02}},
}  # fmt: skip

# stage, extra CLI args, the resume file whose appearance means "epoch 1 done" in the
# round to interrupt (bit-decay: the second round, i.e. mid-schedule)
CASES = [
    ("pretrain", [], "pretrain/fp/round0.pt"),
    ("quantize-weights", ["--bits", "2"], "quantize-weights/w2a2/round0.pt"),
    ("quantize-activations", ["--bits", "2"], "quantize-activations/w2a2/round0.pt"),
    ("bit-decay", ["--bits", "2"], "bit-decay/w2a2/round1.pt"),
    ("stochastic-precision", ["--bits", "2"], "stochastic-precision/w2a2/round0.pt"),
    ("distill", ["--bits", "2"], "distill/w2a2/round0.pt"),
]
NEEDS = {"quantize-activations": ("quantize-weights", ["--bits", "2"])}


def lowbit(repo: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.Popen(
        [str(BIN / "lowbit"), *args], cwd=repo, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def finish(repo: Path, *args: str) -> str:
    p = lowbit(repo, *args)
    try:
        out, _ = p.communicate(timeout=600)
    finally:
        if p.poll() is None:  # timed out: leave no stage running behind the test
            p.kill()
            p.wait()
    assert p.returncode == 0, out
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """Prepared digits + a pretrained FP net + TS stage 1, shared by every case."""
    repo = tmp_path_factory.mktemp("base")
    (repo / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    finish(repo, "stage", "prepare")
    finish(repo, "stage", "pretrain")
    finish(repo, "stage", "quantize-weights", "--bits", "2")
    return repo


def clone(base: Path, dest: Path, keep: list[str]) -> Path:
    dest.mkdir()
    shutil.copy(base / "params.yaml", dest)
    shutil.copytree(base / "data", dest / "data")
    for k in keep:
        shutil.copytree(base / "runs" / k, dest / "runs" / k)
    return dest


def history(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


# a stage's epoch line ends with the epoch's wall time: "... | lr 0.02 | 1.5 s"
EPOCH_SECONDS = re.compile(r"epoch \d+: .*\| ([0-9.]+) s$")


class Output:
    """A running stage's output lines as they come (a thread drains its pipe)."""

    def __init__(self, p: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._drain, args=(p.stdout,), daemon=True)
        self._thread.start()

    def _drain(self, pipe) -> None:
        for line in pipe:
            self.lines.append(line.rstrip("\n"))

    def last_epoch_seconds(self, timeout: float = 30.0) -> float:
        """The wall time of the latest epoch this process logged: its own speed now, not
        a reference run's, which a VM's changing load can make 2x slower or faster."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = [m for line in list(self.lines) if (m := EPOCH_SECONDS.search(line))]
            if found:
                return float(found[-1].group(1))
            time.sleep(0.01)
        raise AssertionError(f"no epoch line within {timeout} s: {self.lines[-5:]}")

    def text(self) -> str:
        self._thread.join(timeout=60)
        return "\n".join(self.lines)


def live_files(repo: Path, stage: str, slug: str) -> dict[str, bytes]:
    """Every file of a run's dvclive log (its plots folder and its metrics file)."""
    d = repo / "dvclive" / stage / slug
    found = {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()}
    metrics = repo / "dvclive" / "metrics" / stage / f"{slug}.json"
    return {**found, "metrics.json": metrics.read_bytes()} if metrics.is_file() else found


def outputs(run_dir: Path) -> tuple[dict, dict]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    strip = lambda d: {k: v for k, v in d.items() if k not in TIMING_KEYS}  # noqa: E731
    metrics = {k: (strip(v) if k == "extra" else v) for k, v in strip(metrics).items()}
    metrics["extra"] = {n: strip(v) for n, v in metrics.get("extra", {}).items()}
    state = torch.load(run_dir / "model.pt", weights_only=True)
    return metrics, state


def differences(a: Path, b: Path) -> list[str]:
    """What differs between two finished runs (timings aside): [] when bitwise equal."""
    (ma, sa), (mb, sb) = outputs(a), outputs(b)
    diff = [] if ma == mb else ["metrics.json"]
    if sa["nets"].keys() != sb["nets"].keys():
        return [*diff, "networks"]
    for net in sa["nets"]:
        if sa["nets"][net]["quant"] != sb["nets"][net]["quant"]:
            diff.append(f"{net} quant")
        model_a, model_b = sa["nets"][net]["model"], sb["nets"][net]["model"]
        diff += [f"{net} {k}" for k, v in model_a.items() if not torch.equal(v, model_b[k])]
    timing = ("epoch_s", "cpu_s")
    strip_t = lambda r: {k: v for k, v in r.items() if k not in timing}  # noqa: E731
    if [strip_t(r) for r in history(a)] != [strip_t(r) for r in history(b)]:
        diff.append("history.csv")
    return diff


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("stage,args,marker", CASES, ids=[c[0] for c in CASES])
def test_killed_stage_resumes_to_the_uninterrupted_result(base, tmp_path, stage, args, marker, sig):
    # the finished runs the stage starts from (pretrain starts from the data alone)
    keep = [] if stage == "pretrain" else ["pretrain"]
    keep += ["quantize-weights"] if stage == "quantize-activations" else []
    slug = "w2a2" if args else "fp"
    if stage != "pretrain":
        ref_dir = base / "runs" / stage / slug
        if not ref_dir.exists():
            finish(base, "stage", stage, *args)
    else:
        ref = clone(base, tmp_path / "ref", keep)
        finish(ref, "stage", stage, *args)
        ref_dir = ref / "runs" / "pretrain" / slug

    repo = clone(base, tmp_path / "killed", keep)
    resume_file = repo / "runs" / ".resume" / marker
    p = lowbit(repo, "stage", stage, *args)
    out = Output(p)
    deadline = time.time() + 300
    while not resume_file.exists():
        assert p.poll() is None, "stage finished before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.01)
    # The marker is written at the end of epoch 1 and at least one more epoch follows:
    # kill 10-60 % into the next epoch, scaled by the epoch this process just logged, so
    # neither a fast machine nor a load that changed since the reference run lets the
    # stage finish before the signal lands.
    fraction = random.Random(stage + str(sig)).uniform(0.1, 0.6)
    time.sleep(fraction * out.last_epoch_seconds())
    assert p.poll() is None, "stage finished before it could be interrupted"
    p.send_signal(sig)
    try:
        p.wait(timeout=60)
    finally:
        if p.poll() is None:  # leave no stage running behind the test
            p.kill()
            p.wait()
    assert p.returncode == -sig, out.text()
    out_dir = repo / "runs" / stage / slug
    assert not (out_dir / "metrics.json").exists()  # nothing that looks complete

    finish(repo, "stage", stage, *args)
    # one uninterrupted reference: every stage kind is bitwise equal over fresh, perturbed
    # processes on one host (reports/bench/determinism*.md, 1 and 2 threads, AVX2 and
    # AVX512), so any difference here is the resume's
    assert differences(ref_dir, out_dir) == [], "resumed run differs from the uninterrupted one"
    # run.json names the session that began the run and the one that finished it
    prov = json.loads((out_dir / "run.json").read_text())["provenance"]
    assert "resumed" not in json.loads((ref_dir / "run.json").read_text())["provenance"]
    assert len(prov["resumed"]) == 1 and prov["resumed"][0]["started"] >= prov["started"]
    assert 1 <= prov["resumed"][0]["epochs"] < len(history(out_dir))
    # the dvclive log of the resumed run equals the uninterrupted one, file for file
    want = live_files(ref_dir.parents[2], stage, slug)
    assert want and "metrics.json" in want and "plots/metrics/val/top1.tsv" in want
    assert live_files(repo, stage, slug) == want
