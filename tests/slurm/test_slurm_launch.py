"""launch() against a real SLURM cluster: round trip, failures, requeue + resume, DDP.

Needs the local cluster (bash slurm/local-cluster.sh start); each test submits real
jobs, each into a folder of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from lowbit.config import load_config
from lowbit.errors import LowbitError
from lowbit.launch import launch
from tests.slurm import jobs
from tests.slurm.helpers import make_cfg, write_params

pytestmark = pytest.mark.slurm


def test_round_trip(slurm_cluster, tmp_path, capfd):
    cfg = make_cfg(tmp_path)
    t0 = time.perf_counter()
    out = launch(cfg, jobs.echo)
    wall = time.perf_counter() - t0
    print(f"\nslurm job round trip: {wall:.2f} s")
    assert out["value"] == 42.0 and out["stage"] == "pretrain"
    assert out["executor"] == "slurm" and out["slurm_job_id"]
    seen = capfd.readouterr()
    assert f"slurm job {out['slurm_job_id']}" in seen.err  # the submission line
    assert "Starting with JobEnvironment" in seen.out  # the job's own log, streamed
    folders = list((tmp_path / "runs/.submitit/pretrain-fp").iterdir())
    launch(cfg, jobs.echo)
    assert len(list((tmp_path / "runs/.submitit/pretrain-fp").iterdir())) == len(folders) + 1
    assert wall < 30


def test_failing_job_is_one_clear_error(slurm_cluster, tmp_path, capfd):
    cfg = make_cfg(tmp_path, stage="direct")
    with pytest.raises(LowbitError) as e:
        launch(cfg, jobs.fail)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("stage direct: slurm job ")
    assert "ValueError: boom from the direct job" in msg and "_log.err" in msg
    assert "about to fail" in capfd.readouterr().out  # streamed while it ran


def test_cli_exits_nonzero_with_the_job_error(slurm_cluster, tmp_path):
    params = write_params(tmp_path)  # no `prepare` output: the real stage fails in the job
    r = subprocess.run(
        [sys.executable, "-m", "lowbit.cli", "stage", "pretrain", "-p", str(params)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stage pretrain: slurm job "), last


def test_gpu_request_on_gpu_less_cluster_fails_at_submit(slurm_cluster, tmp_path):
    cfg = make_cfg(tmp_path, slurm={"stages": {"pretrain": {"gpus_per_node": 1}}})
    t0 = time.perf_counter()
    with pytest.raises(LowbitError, match=r"gres.*1 GPU\(s\) per node") as e:
        launch(cfg, jobs.echo)
    assert "\n" not in str(e.value) and time.perf_counter() - t0 < 30


def test_unreachable_controller_fails_fast(tmp_path, monkeypatch):
    conf = Path("/etc/slurm/slurm.conf")
    if not conf.is_file():
        pytest.skip("no /etc/slurm/slurm.conf to derive a broken one from")
    bad = tmp_path / "slurm.conf"
    lines = [ln for ln in conf.read_text().splitlines() if not ln.startswith("SlurmctldPort")]
    bad.write_text("\n".join([*lines, "SlurmctldPort=6999"]) + "\n")  # nobody listens there
    monkeypatch.setenv("SLURM_CONF", str(bad))
    cfg = make_cfg(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(LowbitError, match="cannot reach the SLURM controller"):
        launch(cfg, jobs.echo)
    assert time.perf_counter() - t0 < 15
    assert not (tmp_path / "runs").exists()  # nothing was submitted


def _cli(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lowbit.cli", "stage", "pretrain", *args],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )  # fmt: skip


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_cli_gpu_request_on_gpu_less_cluster_is_one_error_line(slurm_cluster, tmp_path):
    write_params(tmp_path, slurm={"stages": {"pretrain": {"gpus_per_node": 1}}})
    line = _one_error_line(_cli(tmp_path))
    assert "1 GPU(s) per node" in line, line
    assert not list(tmp_path.glob("runs/pretrain*"))


def test_cli_unreachable_controller_is_one_error_line(tmp_path):
    conf = Path("/etc/slurm/slurm.conf")
    if not conf.is_file():
        pytest.skip("no /etc/slurm/slurm.conf to derive a broken one from")
    bad = tmp_path / "slurm.conf"
    lines = [ln for ln in conf.read_text().splitlines() if not ln.startswith("SlurmctldPort")]
    bad.write_text("\n".join([*lines, "SlurmctldPort=6999"]) + "\n")
    write_params(tmp_path)
    r = _cli(tmp_path, env={**os.environ, "SLURM_CONF": str(bad)})
    assert "cannot reach the SLURM controller" in _one_error_line(r)
    assert not (tmp_path / "runs").exists()


def test_interrupted_launch_cancels_its_job(slurm_cluster, tmp_path):
    """SIGTERM to the waiting process (dvc stopped, the driver at its limit) or Ctrl-C
    cancels the job instead of leaving it running unwatched."""
    cfg = make_cfg(tmp_path)
    timer = threading.Timer(8.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            launch(cfg, jobs.sleep_long)
    finally:
        timer.cancel()
    (log,) = (tmp_path / "runs/.submitit/pretrain-fp").glob("*/*_0_log.out")
    job_id = log.name.split("_")[0]
    for _ in range(60):
        sacct = ["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id]
        state = subprocess.run(sacct, capture_output=True, text=True).stdout.strip()
        if state.startswith("CANCELLED"):
            break
        time.sleep(0.5)
    assert state.startswith("CANCELLED"), state


def _launch_in_thread(cfg: Any, fn: Any) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def go() -> None:
        try:
            box["result"] = launch(cfg, fn)
        except BaseException as e:  # reported by the test
            box["error"] = e

    th = threading.Thread(target=go, daemon=True)
    th.start()
    return th, box


def _wait_for_lines(path: Path, n: int, timeout_s: float) -> list[str]:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        lines = path.read_text().split("\n")[:-1] if path.is_file() else []
        if len(lines) >= n:
            return lines
        time.sleep(0.2)
    raise AssertionError(f"{path}: fewer than {n} lines after {timeout_s} s")


def _epochs(resume_dir: Path) -> list[tuple[int, int]]:
    rows = (resume_dir / "epochs.log").read_text().split()
    return [(int(e), int(r)) for e, r in zip(rows[::2], rows[1::2], strict=True)]


def _uninterrupted(tmp_path: Path, fn: jobs.SmallFit) -> dict:
    ref = fn.__class__(fn.epochs, fn.batch, 0.0, fn.dtype)
    return launch(make_cfg(tmp_path / "ref", executor="inline"), ref)


def test_preempted_job_requeues_and_resumes(slurm_cluster, tmp_path):
    """SIGUSR2 (what SLURM sends before a time limit or on preemption) mid-run: the job
    requeues itself and resumes from its last epoch checkpoint, to the same weights."""
    fn = jobs.SmallFit(epochs=6, sleep_s=2.0)
    cfg = make_cfg(tmp_path)
    resume = tmp_path / "runs/.resume/small"
    t0 = time.perf_counter()
    th, box = _launch_in_thread(cfg, fn)
    job_id = _wait_for_lines(resume / "starts.log", 1, 60)[0].split()[0]
    _wait_for_lines(resume / "epochs.log", 2, 60)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    th.join(timeout=240)
    wall = time.perf_counter() - t0
    assert not th.is_alive(), "launch() did not return"
    assert "error" not in box, box.get("error")
    starts = (resume / "starts.log").read_text().split("\n")[:-1]
    epochs = _epochs(resume)
    print(f"\nrequeue test: {wall:.1f} s, {len(starts)} starts, epochs (epoch, restart) {epochs}")
    assert len(starts) == 2 and {s.split()[0] for s in starts} == {job_id}
    assert sorted({e for e, _ in epochs}) == [1, 2, 3, 4, 5, 6]
    first = [e for e, r in epochs if r == 0]
    assert next(e for e, r in epochs if r == 1) == max(first) + 1  # no finished epoch redone
    ref = _uninterrupted(tmp_path, fn)
    assert box["result"]["digest"] == ref["digest"]
    assert [h["net/val_loss"] for h in box["result"]["history"]] == [
        h["net/val_loss"] for h in ref["history"]
    ]


@pytest.mark.slow
def test_time_limit_requeues_and_resumes(slurm_cluster, tmp_path):
    """A real time limit: 2 min, told to checkpoint 30 s before it (Slurm may signal up to
    60 s early, so 30-90 s in; the profile allows no less room); the run needs over 100 s,
    so it is requeued at least once and still ends with the uninterrupted run's weights."""
    fn = jobs.SmallFit(epochs=20, sleep_s=5.0)
    over = {"time_min": 2, "signal_delay_s": 30}
    cfg = make_cfg(tmp_path, slurm={"max_requeue": 6, "stages": {"pretrain": over}})
    t0 = time.perf_counter()
    out = launch(cfg, fn)
    wall = time.perf_counter() - t0
    resume = tmp_path / "runs/.resume/small"
    starts = (resume / "starts.log").read_text().split("\n")[:-1]
    epochs = _epochs(resume)
    print(f"\ntimeout test: {wall:.1f} s, {len(starts)} starts, epochs {epochs}")
    assert len(starts) >= 2
    assert sorted({e for e, _ in epochs}) == list(range(1, 21))
    assert out["digest"] == _uninterrupted(tmp_path, fn)["digest"]


def test_ddp_two_slurm_tasks_equal_one_process(slurm_cluster, tmp_path):
    fn = jobs.SmallFit(epochs=2, dtype="float64")
    cfg = make_cfg(tmp_path, slurm={"stages": {"pretrain": {"tasks_per_node": 2}}})
    out = launch(cfg, fn)
    assert (out["rank"], out["world"], out["ddp"]) == (0, 2, True)
    ref = _uninterrupted(tmp_path, fn)
    for k, v in ref["state"].items():
        torch.testing.assert_close(out["state"][k], v, rtol=1e-9, atol=1e-12, msg=k)


@pytest.mark.slow
def test_real_training_stage_on_two_slurm_tasks(slurm_cluster, tmp_path):
    params = write_params(
        tmp_path,
        common={"batch_size": 32},
        prepare={"image_size": 8},
        pretrain={"epochs": 1},
        slurm={"stages": {"pretrain": {"tasks_per_node": 2}}},
    )
    launch(load_config("prepare", params, executor="inline"))
    out = launch(load_config("pretrain", params))
    assert out["epochs"] == 1 and (tmp_path / "runs/pretrain/fp/model.pt").is_file()
    assert (tmp_path / "runs/pretrain/fp/history.csv").read_text().count("\n") == 2
