"""launch(): profiles (lookup, validation, per-stage overrides), error lines, the inline
and local executors. No SLURM needed (the cluster tests live in tests/slurm/)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from lowbit import launch as L
from lowbit.config import profile as P
from lowbit.errors import ConfigError, LowbitError
from tests.slurm import jobs
from tests.slurm.helpers import REPO, make_cfg


@pytest.fixture(autouse=True)
def _jobs_import_tests(monkeypatch):
    # local jobs unpickle tests.slurm.jobs by name
    monkeypatch.setenv("PYTHONPATH", f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


def _profile(tmp_path: Path, text: str, name: str = "mine") -> Path:
    d = tmp_path / "slurm" / "profiles"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.yaml").write_text(text)
    return d / f"{name}.yaml"


def test_shipped_profiles_are_valid():
    for path in (REPO / "slurm" / "profiles").glob("*.yaml"):
        P.Profile.model_validate(yaml.safe_load(path.read_text()))
    ex = P.Profile.model_validate(
        yaml.safe_load((REPO / "slurm/profiles/example.yaml").read_text())
    )
    assert (ex.partition, ex.gpus_per_node, ex.cpus_per_task, ex.mem_gb, ex.time_min) == (
        "gpu",
        1,
        8,
        32,
        240,
    )


def test_profile_found_by_name_from_a_subfolder(tmp_path):
    path = _profile(tmp_path, "partition: p1\ntime_min: 10\n")
    sub = tmp_path / "pipeline" / "cifar10"
    sub.mkdir(parents=True)
    cfg = make_cfg(sub, slurm={"profile": "mine"})
    assert P.find_profile("mine", cfg.base_dir) == path
    assert P.load_profile(cfg).partition == "p1"


def test_profile_by_relative_or_absolute_path(tmp_path):
    path = _profile(tmp_path, "partition: p2\n")
    assert P.find_profile("slurm/profiles/mine.yaml", tmp_path) == path
    assert P.find_profile(str(path), Path("/")) == path
    with pytest.raises(ConfigError, match="nope.yaml not found"):
        P.find_profile("nope.yaml", tmp_path)


def test_unknown_profile_lists_known_ones(tmp_path):
    _profile(tmp_path, "{}\n", "alpha")
    with pytest.raises(ConfigError, match=r"no profile 'beta'.*known profiles: .*alpha"):
        P.find_profile("beta", tmp_path)


def test_unknown_profile_key_names_file_and_valid_keys(tmp_path):
    path = _profile(tmp_path, "partition: gpu\ngpus: 2\n")
    cfg = make_cfg(tmp_path, slurm={"profile": "mine"})
    with pytest.raises(ConfigError) as e:
        P.load_profile(cfg)
    msg = str(e.value)
    assert msg.startswith(f"{path}: unknown key 'gpus'; valid keys: partition, account")
    assert "gpus_per_node" in msg and "\n" not in msg


def test_bad_profile_values(tmp_path):
    _profile(tmp_path, "time_min: 1\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: time_min: .*greater than or equal to 2"):
        P.load_profile(make_cfg(tmp_path, slurm={"profile": "mine"}))
    # USR2 before the job can catch it kills it: at least 90 s of time_min come first
    _profile(tmp_path, "time_min: 2\nsignal_delay_s: 31\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: signal_delay_s \(31\) leaves 89 s"):
        P.load_profile(make_cfg(tmp_path, slurm={"profile": "mine"}))
    _profile(tmp_path, "time_min: 2\nsignal_delay_s: 30\n")
    assert P.load_profile(make_cfg(tmp_path, slurm={"profile": "mine"})).signal_delay_s == 30
    _profile(tmp_path, "- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        P.load_profile(make_cfg(tmp_path, slurm={"profile": "mine"}))


def test_stage_overrides(tmp_path):
    _profile(tmp_path, "partition: gpu\ngpus_per_node: 1\ntime_min: 60\n")
    over = {"quantize_weights": {"time_min": 120, "gpus_per_node": 4}, "pretrain": {"qos": "hi"}}
    cfg = make_cfg(tmp_path, stage="quantize-weights", slurm={"profile": "mine", "stages": over})
    p = P.load_profile(cfg)
    assert (p.partition, p.time_min, p.gpus_per_node, p.tasks, p.qos) == ("gpu", 120, 4, 4, None)
    cfg = make_cfg(tmp_path, slurm={"profile": "mine", "stages": {"pretrain": {"gpu": 1}}})
    with pytest.raises(ConfigError, match=r"params.yaml: unknown key 'slurm.stages.pretrain.gpu'"):
        P.load_profile(cfg)
    cfg = make_cfg(tmp_path, slurm={"profile": "mine", "stages": {"pretrian": {}}})
    with pytest.raises(ConfigError, match=r"slurm.stages: unknown stage 'pretrian'"):
        P.load_profile(cfg)


def test_tasks_follow_gpus_unless_set():
    assert P.Profile().tasks == 1
    assert P.Profile(gpus_per_node=4).tasks == 4
    assert P.Profile(gpus_per_node=4, tasks_per_node=4).tasks == 4
    assert P.Profile(tasks_per_node=3).tasks == 3  # CPU jobs: any number of tasks


@pytest.mark.parametrize("tasks", [1, 8])
def test_a_gpu_profile_runs_one_task_per_gpu(tasks):
    """Two ranks on one GPU make NCCL fail; fewer ranks than GPUs leave GPUs idle."""
    with pytest.raises(ValueError, match="one task per GPU"):
        P.Profile(gpus_per_node=4, tasks_per_node=tasks)


def test_workers_follow_the_jobs_cpus_unless_set(tmp_path):
    from lowbit.config import load_config
    from tests.slurm.helpers import write_params

    _profile(tmp_path, "cpus_per_task: 6\n")
    path = write_params(tmp_path, slurm={"profile": "mine"}, common={"workers": 3})
    cfg = load_config("pretrain", path)
    assert L.job_config(cfg, P.load_profile(cfg)).common.workers == 3  # set by the user
    params = yaml.safe_load(path.read_text())
    del params["common"]["workers"]
    path.write_text(yaml.safe_dump(params))
    cfg = load_config("pretrain", path)
    assert cfg.common.workers == 2  # the default, inline
    assert L.job_config(cfg, P.load_profile(cfg)).common.workers == 6


def test_cpu_device_uses_gloo_even_where_a_gpu_is(monkeypatch):
    from lowbit import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert distributed.backend("cpu") == "gloo"
    assert distributed.backend("cuda") == "nccl" and distributed.backend("auto") == "nccl"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.backend("auto") == "gloo"


def test_inline_calls_the_function_in_this_process(tmp_path):
    out = L.launch(make_cfg(tmp_path, executor="inline"), jobs.echo)
    assert out["pid"] == os.getpid() and out["value"] == 42.0


def test_inline_default_is_the_stage_run(tmp_path):
    """Without a function, launch runs the named stage's own `run(cfg)`: a real `prepare`
    of the bundled digits, whose files appear and whose summary comes back."""
    cfg = make_cfg(tmp_path, executor="inline", stage="prepare")
    out = L.launch(cfg)
    meta = json.loads((cfg.data_dir / "meta.json").read_text())
    assert meta["num_classes"] == 10 and (cfg.data_dir / "train.beton").is_file()
    assert out["num_classes"] == 10.0 and out["train_images"] == meta["counts"]["train"] > 0


def test_a_requeued_job_resubmits_the_same_call(tmp_path):
    # submitit asks a job that hits its time limit for a checkpoint: the answer is this
    # very call again, which resumes from the stage's own epoch checkpoints
    job = L.StageJob(make_cfg(tmp_path), jobs.echo)
    again = job.checkpoint()
    assert again.function is job and (again.args, again.kwargs) == ((), {})


def test_job_folders_are_never_reused(tmp_path):
    cfg = make_cfg(tmp_path, stage="direct")
    a, b = L.job_folder(cfg), L.job_folder(cfg)
    assert a != b and a.parent == b.parent == tmp_path / "runs/.submitit/direct-w2a2"


def test_error_lines_from_submitit_messages(tmp_path):
    cfg = make_cfg(tmp_path)
    trace = (
        "Job (task=0) failed during processing with trace:\n----------------------\n"
        "Traceback (most recent call last):\n  File x\nlowbit.errors.ConfigError: bad key 'x'\n\n"
        "----------------------\nYou can check full logs"
    )
    assert L._reason(Exception(trace), cfg) == "bad key 'x'"
    assert L._reason(Exception(trace.replace("lowbit.errors.ConfigError", "KeyError")), cfg) == (
        "KeyError: bad key 'x'"
    )
    limit = trace.replace(
        "lowbit.errors.ConfigError: bad key 'x'",
        "submitit.core.utils.UncompletedJobError: Job not requeued because: timed-out too many "
        "times.",
    )
    assert "max_requeue=3" in L._reason(Exception(limit), cfg)
    gone = "Job 7 (task: 0) with path /x\nhas not produced any output (state: CANCELLED by 0)"
    assert L._reason(Exception(gone), cfg) == "it ended without a result (state CANCELLED by 0)"


def test_local_executor_round_trip(tmp_path, capfd):
    out = L.launch(make_cfg(tmp_path, executor="local"), jobs.echo)
    assert out["executor"] == "local" and out["pid"] != os.getpid() and out["value"] == 42.0
    assert "local job" in capfd.readouterr().err


def test_local_executor_failure_is_one_line(tmp_path):
    with pytest.raises(
        LowbitError, match=r"^stage pretrain: local job \d+ failed: ValueError: boom"
    ):
        L.launch(make_cfg(tmp_path, executor="local"), jobs.fail)


def test_local_executor_rejects_several_nodes(tmp_path):
    _profile(tmp_path, "nodes: 2\n")
    cfg = make_cfg(tmp_path, executor="local", slurm={"profile": "mine"})
    with pytest.raises(ConfigError, match="runs on one node"):
        L.launch(cfg, jobs.echo)


def test_local_executor_two_tasks_train_with_ddp(tmp_path):
    _profile(tmp_path, "tasks_per_node: 2\ntime_min: 5\n")
    fn = jobs.SmallFit(epochs=1, dtype="float64")
    out = L.launch(make_cfg(tmp_path, executor="local", slurm={"profile": "mine"}), fn)
    assert (out["rank"], out["world"], out["ddp"]) == (0, 2, True)
    ref = L.launch(make_cfg(tmp_path / "ref", executor="inline"), fn)
    for k, v in ref["state"].items():
        torch.testing.assert_close(out["state"][k], v, rtol=1e-9, atol=1e-12, msg=k)
