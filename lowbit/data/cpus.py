"""How many CPUs this process may use, and data workers bounded by that number.

common.workers asks for loader worker processes (torch backend), loader threads (FFCV)
and writer processes (prepare). It never changes results: augmentation draws hash
(seed, epoch, sample id) and the run fingerprint leaves workers out. So a value above
the CPUs at hand is clamped with a warning rather than refused: a params.yaml written
for a 16-core node still runs on a laptop or in a smaller SLURM allocation, and a typo
(100000) cannot fork a hundred thousand processes.
"""

from __future__ import annotations

import os
import warnings

# SLURM's allocation, per task first: on a node shared by several tasks (one per GPU)
# the node's count is more than one task may use; sched_getaffinity shows the
# allocation only where SLURM binds tasks to cores (task/affinity or task/cgroup).
SLURM_VARS = ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE")


def available_cpus() -> tuple[int, str]:
    """(CPUs this process may use, where that number comes from): the CPUs it may run
    on (os.sched_getaffinity; os.cpu_count where there is no affinity), or SLURM's
    allocation when that is smaller."""
    if hasattr(os, "sched_getaffinity"):
        n, source = len(os.sched_getaffinity(0)), "the CPUs this process may run on"
    else:  # macOS
        n, source = os.cpu_count() or 1, "os.cpu_count()"
    for var in SLURM_VARS:
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            if int(value) < n:
                n, source = int(value), f"{var}={value}"
            break  # per task, when set, is the allocation; the node's count is not
    return n, source


def bound_workers(requested: int, key: str = "common.workers") -> int:
    """`requested` data workers, or the available CPUs when that is fewer (a warning
    names the setting, both numbers and where the bound comes from)."""
    n, source = available_cpus()
    if requested <= n:
        return requested
    warnings.warn(
        f"{key}={requested} is more than the {n} CPUs available ({source}); using {n} workers",
        RuntimeWarning,
        stacklevel=2,  # the line that bounds them: shown once per process, however often
    )
    return n
