"""The record of the sessions that trained a run (lowbit.training.origin): the first
session's provenance, and every later session that trained an epoch, saved as it trains."""

from __future__ import annotations

import json
from pathlib import Path

from lowbit.training.origin import FILE, Origin


def _session(name: str) -> dict:
    return {"started": name, "git_commit": f"c-{name}", "hostname": "h", "cpu": "Xeon",
            "versions": {"torch": "2.14.1"}, "seed": 0}  # fmt: skip


def _train(resume: Path, name: str, epochs: int, key: str = "k") -> Origin:
    o = Origin.open(resume, key, _session(name))
    resume.mkdir(parents=True, exist_ok=True)
    for _ in range(epochs):
        (resume / "round0.pt").write_bytes(b"ckpt")  # the epoch's checkpoint comes first
        o.trained_epoch()
    return o


def test_every_session_that_trained_is_on_record_even_one_killed_again(tmp_path):
    resume = tmp_path / "resume"
    a = Origin.open(resume, "k", _session("a"))
    assert a.first and not (resume / FILE).exists()  # nothing trained: nothing recorded
    _train(resume, "a", 0)
    a = _train(resume, "a", 1)  # A trains an epoch and is killed
    _train(resume, "b", 2)  # B resumes, trains 2 epochs and is killed before the end
    c = _train(resume, "c", 1)  # C finishes the run
    prov = c.provenance()
    assert prov["started"] == "a" and prov["git_commit"] == "c-a"
    assert [(r["started"], r["epochs"], r["git_commit"]) for r in prov["resumed"]] == [
        ("b", 2, "c-b"), ("c", 1, "c-c")]  # fmt: skip
    assert prov["resumed"][0]["cpu"] == "Xeon" and "seed" not in prov["resumed"][0]
    assert json.loads((resume / FILE).read_text())["resumed"] == prov["resumed"]


def test_a_replay_that_trains_nothing_writes_the_first_sessions_provenance(tmp_path):
    resume = tmp_path / "resume"
    first = _train(resume, "a", 3).provenance()
    replay = Origin.open(resume, "k", _session("later"))
    assert replay.provenance() == first == {**_session("a")}


def test_other_checkpoints_or_an_unreadable_record_begin_a_new_run(tmp_path):
    resume = tmp_path / "resume"
    _train(resume, "a", 2)
    assert Origin.open(resume, "other config", _session("b")).first
    (resume / FILE).write_text("{not json")
    o = Origin.open(resume, "k", _session("b"))
    assert o.first and o.provenance()["started"] == "b"
    _train(tmp_path / "r2", "a", 1)
    (tmp_path / "r2" / "round0.pt").unlink()  # the record outlived its checkpoints
    assert Origin.open(tmp_path / "r2", "k", _session("b")).first


def test_outputs_from_checkpoints_without_a_record_say_they_were_replayed(tmp_path):
    resume = tmp_path / "resume"
    resume.mkdir()
    (resume / "round0.pt").write_bytes(b"ckpt")  # written before records were kept
    assert Origin.open(resume, "k", _session("x")).provenance()["replayed"] is True
