"""Which sessions trained a run. A stage rewrites its outputs whenever it runs to the end:
after a resume, and also for a run that had finished, replayed from its round checkpoints
(`lowbit stage X --all` again, or `dvc repro` after DVC removed the folder). run.json must
still name the session that trained the network, so the first session's provenance is
kept beside the round checkpoints, and every later session that trains an epoch is added
to it as it trains (a session killed again is listed too). A replay that trains nothing
writes the same provenance again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowbit import checkpoint
from lowbit.errors import LowbitError
from lowbit.metrics import read_json

FILE = "provenance.json"
# What a later session adds to the record: its code, its machine and software stack (a
# checkpoint's fingerprint covers the config and lowbit's source, not the host or torch).
RESUMED_KEYS = ("started", "git_commit", "git_dirty", "git_dirty_files", "hostname", "cpu",
                "cpu_capability", "threads", "device", "versions", "slurm_job_id")  # fmt: skip


@dataclass
class Origin:
    """The run's record {key, provenance, resumed} and this session's part in it."""

    path: Path
    record: dict[str, Any]
    now: dict[str, Any]  # this session's provenance (lowbit.provenance.provenance)
    first: bool  # this session began the run
    epochs: int = 0  # epochs this session trained

    @classmethod
    def open(cls, resume_dir: Path, key: str, now: dict[str, Any]) -> Origin:
        """The record under `resume_dir` when it belongs to the same checkpoints (`key`:
        round 0's fingerprint) and they are still there; else this session begins the run
        (the record is written once it has trained an epoch)."""
        path = resume_dir / FILE
        record = _read(path) if any(resume_dir.glob("round*.pt")) else None
        if record is not None and record.get("key") == key:
            return cls(path, record, now, first=False)
        return cls(path, {"key": key, "provenance": now, "resumed": []}, now, first=True)

    def trained_epoch(self) -> None:
        """Count one epoch this session trained, and save the record at once (the first
        session's record is complete after its first epoch: saved once)."""
        self.epochs += 1
        if self.first and self.epochs > 1:
            return
        if not self.first:
            entry = {**{k: self.now.get(k) for k in RESUMED_KEYS}, "epochs": self.epochs}
            kept = self.record["resumed"][: -1 if self.epochs > 1 else None]
            self.record["resumed"] = [*kept, entry]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.atomic_write_json(self.path, self.record)

    def provenance(self) -> dict[str, Any]:
        """run.json's provenance: the first session's, with `resumed` listing the later
        sessions that trained epochs; `replayed` when these outputs come from checkpoints
        whose first session is not on record (written before records were kept)."""
        out = dict(self.record["provenance"])
        if self.record["resumed"]:
            out["resumed"] = self.record["resumed"]
        if self.first and self.epochs == 0:
            out["replayed"] = True
        return out


def _read(path: Path) -> dict[str, Any] | None:
    """The record, or None when it is missing or unreadable (it is rewritten then: it
    must never stop a run, least of all one rank of several)."""
    try:
        record = read_json(path) if path.is_file() else None
    except (LowbitError, OSError, ValueError):
        return None
    ok = isinstance(record, dict) and isinstance(record.get("provenance"), dict)
    return record if ok and isinstance(record.get("resumed"), list) else None
