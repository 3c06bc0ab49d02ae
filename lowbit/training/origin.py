"""Which process began a run. A stage rewrites its outputs whenever it runs to the end:
after a resume, and also for a run that had finished, replayed from its round checkpoints
(`lowbit stage X --all` again, or `dvc repro` after DVC removed the folder). run.json must
still name the session that trained the network, so the first session's provenance is
kept beside the round checkpoints, and later sessions are listed only when they trained
epochs. A replay that trains nothing writes the same provenance again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lowbit import checkpoint
from lowbit.metrics import read_json

FILE = "provenance.json"
# What a later session adds to the record: enough to find its code and its machine.
RESUMED_KEYS = ("started", "git_commit", "git_dirty", "git_dirty_files", "hostname",
                "slurm_job_id")  # fmt: skip


def begin(resume_dir: Path, key: str, now: dict[str, Any]) -> dict[str, Any]:
    """The run's record {key, provenance, resumed}: the one under `resume_dir` when it
    belongs to the same checkpoints (`key`: round 0's fingerprint) and they are still
    there, else a new one that
    names this session (`now`) as the first, saved before any epoch is trained."""
    path = resume_dir / FILE
    if path.is_file() and any(resume_dir.glob("round*.pt")):
        record = read_json(path)
        if record.get("key") == key and isinstance(record.get("provenance"), dict):
            return record
    record = {"key": key, "provenance": now, "resumed": []}
    resume_dir.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write_json(path, record)
    return record


def finish(resume_dir: Path, record: dict[str, Any], now: dict[str, Any], trained: int) -> dict:
    """run.json's provenance: the first session's, with `resumed` listing every later
    session that trained epochs (`trained`: epochs this session trained, all rounds)."""
    later = record["provenance"] is not now
    if later and trained > 0:
        entry = {k: now.get(k) for k in RESUMED_KEYS}
        record["resumed"] = [*record["resumed"], {**entry, "epochs": trained}]
        if resume_dir.is_dir():  # gone when a run that does not keep checkpoints ends
            checkpoint.atomic_write_json(resume_dir / FILE, record)
    out = dict(record["provenance"])
    if record["resumed"]:
        out["resumed"] = record["resumed"]
    return out
