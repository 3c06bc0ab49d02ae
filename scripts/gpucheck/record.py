"""A step's record: its checks, each PASS / FAIL (or INFO) with the numbers behind it,
rewritten to a JSON file after every check, so a step cut short still reports what it
measured."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

PASS, FAIL, INFO = "PASS", "FAIL", "INFO"


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    """JSON-safe numbers: NaN and infinities as strings, tensors and numpy as floats."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return value


class Record:
    """The checks of one step, saved to `path` (JSON) after each one."""

    def __init__(self, step: str, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"step": step, "checks": [], "info": {}, "t0": time.time()}
        self.save()

    def check(
        self, name: str, ok: bool | None, numbers: dict | None = None, note: str = ""
    ) -> bool:
        """Record one check: ok True (PASS), False (FAIL) or None (INFO: measured only)."""
        status = INFO if ok is None else PASS if ok else FAIL
        entry = {"name": name, "status": status, "numbers": _plain(numbers or {}), "note": note}
        self.data["checks"].append(entry)
        self.save()
        print(f"[{status}] {name}: {note} {json.dumps(entry['numbers'])[:400]}", flush=True)
        return bool(ok) if ok is not None else True

    def info(self, **values: Any) -> None:
        self.data["info"].update(_plain(values))
        self.save()

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.time() - self.data["t0"], 1)
        atomic_write(self.path, json.dumps(self.data, indent=1) + "\n")
