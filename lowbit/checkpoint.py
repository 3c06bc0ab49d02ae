"""Checkpoints: atomic writes, safe loads (weights_only=True), resume.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads
with `torch.load(..., weights_only=True)`: loading never executes code from the file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from lowbit.errors import CheckpointError, ConfigError

FORMAT = 1


def _umask_mode() -> int:
    """0o666 minus the process umask: the mode an ordinary open() would create."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _no_space(path: Path, need: int | None) -> CheckpointError:
    size = f" (needs ~{need / 2**20:.0f} MB)" if need else ""
    return CheckpointError(f"no space left on device: {path}{size}; free some space and rerun")


def atomic_write(path: Path, write: Callable[[BinaryIO], None], size: int | None = None) -> None:
    """The one atomic writer: `write(f)` into a temp file in the same folder, fsync, then
    rename over `path`. A crash at any point leaves either the old file or the new one,
    never a torn file; a full disk is one clear error and leaves no temp file behind.
    `size`: the expected bytes, quoted in that error."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise _no_space(path, size) from None
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if _is_enospc(e):
            raise _no_space(path, size) from None
        raise


def _is_enospc(e: BaseException) -> bool:
    """ENOSPC as an OSError, or as torch.save's RuntimeError from its zip writer
    ("unexpected pos" / "file write failed") after the disk filled up."""
    if isinstance(e, OSError):
        return e.errno == errno.ENOSPC
    text = str(e)
    return isinstance(e, RuntimeError) and ("unexpected pos" in text or "write failed" in text)


def require_writable(path: Path, option: str) -> None:
    """ConfigError (naming `path` and why) unless files can be created at `path` (a file,
    or a folder to write into), checked before the work whose result goes there: a temp
    file in the nearest existing folder. (os.access is no test: as root it says yes to
    /proc.)"""
    folder = Path(path).absolute()
    if not folder.is_dir():
        folder = folder.parent
    while not folder.exists():
        folder = folder.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".lowbit-probe.", dir=folder)
    except OSError as e:
        raise ConfigError(
            f"cannot write {path}: {folder} does not accept new files ({e.strerror}); "
            f"choose another {option}"
        ) from None
    os.close(fd)
    os.unlink(probe)


def unwritable(path: Path, e: OSError, option: str) -> ConfigError:
    """The one-line error for a write to `path` that failed with `e` (the temp file of
    an atomic write, or a folder above it, could not be created)."""
    return ConfigError(f"cannot write {path} ({e.strerror}); choose another {option}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data), len(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save(path: Path, state: dict[str, Any]) -> None:
    """torch.save `state` atomically (temp file + fsync + rename)."""
    tensors = sum(t.numel() * t.element_size() for t in _tensors(state))
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f), tensors)


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 (16 hex digits) of a network's weights: every tensor's name, dtype, shape and
    values in a contiguous layout, names sorted. It names the network, not the file: a
    model.pt rewritten with other provenance, or a state dict in channels_last, keeps it."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous().reshape(-1)  # 0-d: one value
        h.update(f"{name}:{t.dtype}:{tuple(state[name].shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in _tensors(v)]
    return []


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a lowbit checkpoint with weights_only=True; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only load failed" in str(e):
            # torch's own advice (weights_only=False) would run the file's code: refuse
            raise CheckpointError(
                f"{path} holds objects lowbit will not unpickle (code, not just tensors); "
                "it was not written by lowbit: use a checkpoint a lowbit stage wrote"
            ) from None
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(e)}") from None
    except Exception as e:  # torch raises many types for truncated / foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(e)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a lowbit checkpoint (format {FORMAT})")
    return state


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)[:200]
