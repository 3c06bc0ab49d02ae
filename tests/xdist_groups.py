"""Which tests share a pytest-xdist worker (`make test` runs 2).

pytest-xdist's own `--dist loadgroup` reads `xdist_group` marks through a node-id suffix
that pytest 9.2's structured node ids drop (pytest-xdist#1386: every test is dealt out
alone), so the groups are named here, by path, and the controller reads them from the node
ids it schedules.
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

# the local SLURM cluster has a few CPUs: its tests run one after another, so no job waits
# behind another test's job past a test's timeout
SLURM = "tests/slurm/"
# modules whose module-scoped fixture trains or prepares something: built once, on one worker;
# test_protocol's tests also read runs its other tests made (quantize-weights before TS)
ONE_WORKER = frozenset({
    "tests/test_protocol.py",
    "tests/reliability/test_determinism.py",
    "tests/reliability/test_bad_inputs.py",
    "tests/export/test_command.py",
    "tests/scripts/test_device_check.py",
    "tests/bench/test_overhead.py",
    "tests/pipeline/test_dvc_repro.py",
})  # fmt: skip


def scope(nodeid: str) -> str:
    """The unit of work a test belongs to: "slurm", its module, or the test alone."""
    path = nodeid.split("::", 1)[0]
    if path.startswith(SLURM):
        return "slurm"
    return path if path in ONE_WORKER else nodeid


class GroupScheduling(LoadScopeScheduling):
    """xdist's load balancing over the units `scope` names."""

    def _split_scope(self, nodeid: str) -> str:
        return scope(nodeid)
