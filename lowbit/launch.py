"""Run a stage in-process ("inline"), or as a submitit job ("local" | "slurm").

Whatever the executor, the stage's `run(cfg)` is the function called, and the caller
blocks on its result, so DVC sees an ordinary process that exits 0 or not. A job's log
is streamed to this terminal while it runs; a failed job becomes one LowbitError line.

The job runs a checkpointable callable: on a time limit or a preemption (SIGUSR2)
submitit asks it for a checkpoint, and it answers with itself, because the stage's own
per-epoch checkpoints (runs/.resume/...) are the state; the requeued job calls the stage
again and it resumes from its last finished epoch. Resources come from a profile,
slurm/profiles/<name>.yaml (see slurm/README.md). The only module importing submitit.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError

from lowbit import distributed
from lowbit.config import StageConfig
from lowbit.config.profile import Profile, load_profile
from lowbit.errors import ConfigError, LowbitError
from lowbit.stages import stage_function

StageFn = Callable[[StageConfig], dict[str, Any]]
PING_TIMEOUT_S = 20  # `scontrol ping` answers at once, or the controller is unreachable


def job_config(cfg: StageConfig, prof: Profile) -> StageConfig:
    """The config a job runs with: FFCV's worker threads follow the job's CPUs per task
    unless params.yaml sets common.workers."""
    if "workers" in cfg.common.model_fields_set:
        return cfg
    common = cfg.common.model_copy(update={"workers": prof.cpus_per_task})
    return cfg.model_copy(update={"common": common})


class StageJob(submitit.helpers.Checkpointable):
    """What a job runs, in each of its tasks: the stage inside the job's process group.

    On a time limit or a preemption, Checkpointable's own `checkpoint` resubmits this same
    call: the stage checkpoints itself after every epoch, so the requeued call resumes it.
    """

    def __init__(self, cfg: StageConfig, fn: StageFn | None = None) -> None:
        self.cfg = cfg
        self.fn = fn  # None: the stage's own run(); tests pass a small function

    def __call__(self) -> dict[str, Any]:
        fn = self.fn or stage_function(self.cfg.stage)
        with distributed.process_group(job_dist_env(), self.cfg.common.device):
            return fn(self.cfg)


def job_dist_env() -> distributed.DistEnv:
    """This task's rank layout, from submitit's TorchDistributedEnvironment (ranks, world
    size, and the rendezvous port it derives from the job id, or MASTER_PORT)."""
    env = submitit.helpers.TorchDistributedEnvironment()
    job = submitit.JobEnvironment()
    # One node: rendezvous on loopback, which needs no name resolution.
    one_node = job.cluster in ("local", "debug") or job.num_nodes == 1
    return distributed.DistEnv(
        rank=env.rank,
        local_rank=env.local_rank,
        world_size=env.world_size,
        master_addr="127.0.0.1" if one_node else env.master_addr,
        master_port=env.master_port,
    )


def check_controller() -> None:
    """Fail fast, in one line, when SLURM is absent or its controller does not answer
    (sbatch itself retries for ~10 s and then prints a multi-line error)."""
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        raise ConfigError(
            "executor 'slurm': sbatch/scontrol not found on PATH; run on a SLURM login node "
            "or set common.executor to inline or local"
        )
    try:
        r = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=PING_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        r = subprocess.CompletedProcess([], 1, f"no answer in {PING_TIMEOUT_S} s", "")
    if r.returncode != 0:
        said = (r.stdout.strip() or r.stderr.strip() or "no answer").splitlines()[0]
        raise LowbitError(
            f"cannot reach the SLURM controller ({said}); is slurmctld running? "
            "(the local test cluster: bash slurm/local-cluster.sh start)"
        )


def job_folder(cfg: StageConfig) -> Path:
    """A new folder per job: ids restart after a cluster wipe, and a reused folder would
    hand back an old job's result."""
    name = f"{cfg.stage}-{cfg.run.slug()}" if cfg.run else cfg.stage
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = cfg.path(cfg.slurm.folder) / name / f"{stamp}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    return folder


def make_executor(cfg: StageConfig, prof: Profile, folder: Path) -> submitit.AutoExecutor:
    cluster = cfg.common.executor
    if cluster == "local" and prof.nodes > 1:
        raise ConfigError(f"executor 'local' runs on one node; the profile asks for {prof.nodes}")
    # cluster= always explicit: AutoExecutor picks SLURM whenever srun is on PATH.
    ex = submitit.AutoExecutor(
        folder=folder,
        cluster=cluster,
        slurm_max_num_timeout=cfg.slurm.max_requeue,
        local_max_num_timeout=cfg.slurm.max_requeue,
    )
    given = {
        "partition": prof.partition,
        "account": prof.account,
        "qos": prof.qos,
        "constraint": prof.constraint,
        "additional_parameters": prof.additional_parameters or None,
        "setup": prof.setup or None,
        "signal_delay_s": prof.signal_delay_s,
    }
    ex.update_parameters(
        name=f"lowbit-{cfg.stage}",
        timeout_min=prof.time_min,
        nodes=prof.nodes,
        tasks_per_node=prof.tasks,
        cpus_per_task=prof.cpus_per_task,
        gpus_per_node=prof.gpus_per_node or None,  # CPU jobs: no GPU option at all
        mem_gb=prof.mem_gb,
        **{f"slurm_{k}": v for k, v in given.items() if v is not None},
    )
    return ex


class _Tail:
    """Copies what a log file gains to a stream (the file may not exist yet)."""

    def __init__(self, path: Path, out: TextIO) -> None:
        self.path, self.out, self.pos = path, out, 0
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def pump(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return
        if data:
            self.pos += len(data)
            self.out.write(self.decoder.decode(data))
            self.out.flush()


def wait(job: Any, slurm: bool, poll_s: float = 0.5) -> None:
    """Block until the job ends, streaming task 0's stdout and stderr meanwhile.

    A finished job leaves a result file; a job killed from outside (cancelled, timed
    out for good) leaves none, so SLURM's accounting is also asked, every few seconds
    at first and at most every 30 s later.
    """
    paths = job.task(0).paths
    tails = [_Tail(paths.stdout, sys.stdout), _Tail(paths.stderr, sys.stderr)]
    start = last_ask = time.monotonic()
    while not job.done():
        now = time.monotonic()
        if slurm and now - last_ask > min(30.0, 2.0 + (now - start) / 10):
            last_ask = now
            if job.watcher.is_done(job.job_id, mode="force"):
                break
        for t in tails:
            t.pump()
        time.sleep(poll_s)
    for t in tails:
        t.pump()


@contextlib.contextmanager
def _term_as_interrupt() -> Iterator[None]:
    """SIGTERM (dvc stopped, the driver job at its time limit) cancels the job as Ctrl-C
    does; the stage's checkpoint stays, so the next `dvc repro` resumes it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _reason(err: Exception, cfg: StageConfig) -> str:
    """The one line that says why a job failed, from submitit's multi-line error."""
    text = str(err)
    if "failed during processing with trace" in text:
        trace = text.split("-" * 22)[1] if text.count("-" * 22) >= 2 else text
        lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
        name, _, msg = lines[-1].partition(": ")
        if "timed-out too many times" in msg:
            return (
                f"hit its time limit more than slurm.max_requeue={cfg.slurm.max_requeue} "
                "times; raise time_min in the profile or max_requeue"
            )
        if name.startswith("lowbit.errors."):
            return msg
        return f"{name.rsplit('.', 1)[-1]}: {msg}" if msg else name
    if "has not produced any output" in text:
        state = text.split("(state: ", 1)[-1].split(")", 1)[0] if "(state: " in text else "?"
        return f"it ended without a result (state {state})"
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__


def submit(ex: submitit.AutoExecutor, job_fn: StageJob, prof: Profile) -> Any:
    cfg = job_fn.cfg
    try:
        # submitit also prints sbatch's stderr; the error below carries its message
        with contextlib.redirect_stderr(io.StringIO()):
            return ex.submit(job_fn)
    except FailedJobError as e:  # sbatch refused the job: its stderr is the message
        said = str(e).strip().splitlines()[-1] if str(e).strip() else "no message"
        said = said.removeprefix("sbatch: error: ").removeprefix("Batch job submission failed: ")
        hint = ""
        if "gres" in said.lower() and prof.gpus_per_node:
            hint = f" (the profile asks for {prof.gpus_per_node} GPU(s) per node; none here?)"
        raise LowbitError(f"stage {cfg.stage}: sbatch refused the job: {said}{hint}") from None


def launch(cfg: StageConfig, fn: StageFn | None = None) -> dict[str, Any]:
    """Run the stage (or `fn`) with cfg.common.executor; returns its metrics (rank 0's)."""
    executor = cfg.common.executor
    if executor == "inline":
        return (fn or stage_function(cfg.stage))(cfg)
    prof = load_profile(cfg)  # a typo fails here, before anything is submitted
    if executor == "slurm":
        check_controller()
    folder = job_folder(cfg)
    job = submit(make_executor(cfg, prof, folder), StageJob(job_config(cfg, prof), fn), prof)
    print(
        f"lowbit: stage {cfg.stage} is {executor} job {job.job_id} ({prof.nodes} node(s) x "
        f"{prof.tasks} task(s), {prof.time_min} min); log: {job.task(0).paths.stderr}",
        file=sys.stderr,
        flush=True,
    )
    try:
        with _term_as_interrupt():
            wait(job, slurm=executor == "slurm")
    except KeyboardInterrupt:  # don't leave a job running that nobody waits for
        job.cancel(check=False)
        raise
    try:
        return job.results()[0]
    except (FailedJobError, UncompletedJobError) as e:
        raise _failure(job, cfg, e) from None


def launch_runs(cfgs: list[StageConfig]) -> list[dict[str, Any]]:
    """Launch the runs of a stage one after another; their metrics. Runs that keep their
    round checkpoints (common.keep_resume, `--all`) lose them once every run finished."""
    found = [launch(cfg) for cfg in cfgs]
    for cfg in cfgs:
        if cfg.run is not None and cfg.common.keep_resume:
            shutil.rmtree(cfg.resume_dir, ignore_errors=True)
    return found


def _failure(job: Any, cfg: StageConfig, err: Exception) -> LowbitError:
    """One line for a failed job. Of several failed tasks, name the one that failed in
    lowbit's own terms: the others usually only lost their peer ("Connection closed")."""
    task = 0
    if job.num_tasks > 1:
        failed = [(k, job.task(k).exception()) for k in range(job.num_tasks)]
        ours = [(k, e) for k, e in failed if e is not None and "lowbit.errors." in str(e)]
        if ours:
            task, err = ours[0]
    where = f" (task {task})" if task else ""
    return LowbitError(
        f"stage {cfg.stage}: {cfg.common.executor} job {job.job_id} failed{where}: "
        f"{_reason(err, cfg)} (log: {job.task(task).paths.stderr})"
    )
