"""Data workers are bounded by the CPUs a process may use: its affinity, or SLURM's
allocation (SLURM_CPUS_PER_TASK first, then SLURM_CPUS_ON_NODE) where that is smaller."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from lowbit.data import build_loaders
from lowbit.data.cpus import available_cpus, bound_workers

AFFINITY = len(os.sched_getaffinity(0))
ROOT = Path(__file__).resolve().parents[2]
HOST = "the CPUs this process may run on"


@pytest.fixture(autouse=True)
def no_slurm(monkeypatch):
    for var in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        monkeypatch.delenv(var, raising=False)


def test_outside_slurm_the_affinity_is_the_bound():
    assert available_cpus() == (AFFINITY, HOST)


def test_a_narrower_affinity_is_seen():
    """A real affinity mask of one CPU (as taskset or a cgroup-bound job sets it)."""
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
        "from lowbit.data.cpus import available_cpus; print(available_cpus()[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SLURM_CPUS_PER_TASK": "1"}, (1, "SLURM_CPUS_PER_TASK=1")),
        ({"SLURM_CPUS_ON_NODE": "1"}, (1, "SLURM_CPUS_ON_NODE=1")),
        # per task is this task's allocation: the node's count (all tasks) is not used
        ({"SLURM_CPUS_PER_TASK": "1", "SLURM_CPUS_ON_NODE": "64"}, (1, "SLURM_CPUS_PER_TASK=1")),
        ({"SLURM_CPUS_PER_TASK": str(AFFINITY), "SLURM_CPUS_ON_NODE": "1"}, (AFFINITY, HOST)),
        # more than the process may run on (no core binding): the affinity still bounds
        ({"SLURM_CPUS_PER_TASK": "100000"}, (AFFINITY, HOST)),
        ({"SLURM_CPUS_PER_TASK": "0"}, (AFFINITY, HOST)),  # not a count: ignored
        ({"SLURM_CPUS_PER_TASK": "2(x3)"}, (AFFINITY, HOST)),
    ],
)
def test_slurm_allocation_bounds_when_smaller(monkeypatch, env, expected):
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert available_cpus() == expected


def test_workers_within_the_bound_are_kept_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [bound_workers(n) for n in (0, 1, AFFINITY)] == [0, 1, AFFINITY]


def test_more_workers_than_cpus_are_clamped_with_one_warning(monkeypatch, digits_npz):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    with pytest.warns(RuntimeWarning) as caught:
        train, val = build_loaders(digits_npz, 32, workers=100_000, backend="torch")
    assert [str(w.message) for w in caught] == [
        "common.workers=100000 is more than the 1 CPUs available (SLURM_CPUS_PER_TASK=1); "
        "using 1 workers"
    ]
    assert train.loader.num_workers == val.loader.num_workers == 1
    assert len(list(val)) == len(val)  # the one worker process yields every batch


ONE_CPU = "import os, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
LAYER = (
    ONE_CPU + "import lowbit.data, ffcv.loader, numba;"
    "from numba.np.ufunc.parallel import _launch_threads; _launch_threads();"
    "print(numba.threading_layer())"
)
# this environment without a threading layer the user chose: lowbit's default applies
NO_LAYER = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}


@pytest.mark.ffcv
@pytest.mark.parametrize(
    ("env", "layer"), [({}, "workqueue"), ({"NUMBA_THREADING_LAYER": "omp"}, "omp")]
)
def test_on_one_cpu_numba_avoids_tbb_and_the_process_exits(env, layer):
    """With one CPU in the affinity mask, TBB's shutdown waits forever (numba 0.68.1,
    libtbb 12: `lowbit stage prepare` under `taskset -c 0` never exited): lowbit picks
    another threading layer unless the user chose one. A hang fails on the timeout."""
    out = subprocess.run(
        [sys.executable, "-c", LAYER], env=NO_LAYER | env, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == layer


@pytest.mark.ffcv
def test_prepare_on_one_cpu_exits(tmp_path):
    """The digits prepare stage, as `taskset -c 0 lowbit stage prepare` runs it: before
    the layer was chosen it wrote its files, printed its summary and hung at exit."""
    shutil.copy(ROOT / "params.yaml", tmp_path)
    lowbit = str(Path(sys.executable).with_name("lowbit"))
    # the mask is set in a fresh interpreter that then execs the stage (taskset's way): no
    # preexec_fn, which may deadlock in a threaded parent such as an xdist worker
    pin = ONE_CPU + "os.execv(sys.argv[1], sys.argv[1:])"
    subprocess.run(
        [sys.executable, "-c", pin, lowbit, "stage", "prepare"], cwd=tmp_path, env=NO_LAYER,
        capture_output=True, timeout=180, check=True,
    )  # fmt: skip
    meta = json.loads((tmp_path / "data/prepared/meta.json").read_text())
    assert meta["counts"] == {"train": 1437, "val": 360}
