"""The units of work `make test`'s xdist workers share (tests/xdist_groups.py) name real
files, and every SLURM test lies where the SLURM unit finds it."""

from __future__ import annotations

from pathlib import Path

from tests.xdist_groups import ONE_WORKER, SLURM, scope

ROOT = Path(__file__).resolve().parents[1]


def test_one_worker_modules_exist_and_have_a_module_fixture():
    for path in ONE_WORKER:
        text = (ROOT / path).read_text()
        assert '@pytest.fixture(scope="module")' in text, path


def test_every_slurm_test_is_in_the_slurm_unit():
    marked = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py")
              if p != Path(__file__) and "pytest.mark.slurm" in p.read_text()}  # fmt: skip
    assert marked and all(p.startswith(SLURM) for p in marked), marked


def test_scope_of_a_node_id():
    assert scope("tests/slurm/test_slurm_launch.py::test_round_trip") == "slurm"
    bad = "tests/reliability/test_bad_inputs.py"
    assert scope(f"{bad}::test_bad_input[bits 0]") == bad
    alone = "tests/test_engine.py::test_w2a2_learns_digits_well_above_chance"
    assert scope(alone) == alone
