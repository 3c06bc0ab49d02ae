"""Stage outputs: written into a temp folder, renamed into place when complete.

A stage's output folder (runs/<stage>/<slug>) appears only when everything in it is
written, so neither DVC nor a later stage ever sees a half-finished result. A lock file
keeps two processes from writing the same folder.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from filelock import FileLock, Timeout

from lowbit.errors import ConfigError


@contextlib.contextmanager
def locked(out_dir: Path, lock: Path) -> Iterator[None]:
    """Exclusive lock on `out_dir` held through the file `lock` (kept outside the folders
    DVC hashes, a filelock.FileLock: flock on POSIX), or a clear error naming the process
    that holds it (its pid, which the holder writes into the lock file)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    owner = lock.read_text().strip() if lock.is_file() else ""  # before FileLock opens it
    held = FileLock(lock, timeout=0)
    try:
        held.acquire()
    except Timeout:
        raise ConfigError(
            f"{out_dir} is being written by another running stage (pid {owner or 'unknown'}); "
            "wait for it or stop it"
        ) from None
    try:
        lock.write_text(str(os.getpid()))
        yield
    finally:
        held.release()


@contextlib.contextmanager
def staged_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a temp folder; on success replace `out_dir` with it, else delete it."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


HISTORY_COLUMNS = (
    "train_loss",
    "train_top1",
    "val_loss",
    "val_top1",
    "val_top5",
    "val_gained",  # images answered right since the late-gain reference epoch, not before
    "val_lost",  # and the reverse (lowbit.engine.agreement)
    "test_loss",  # held-out test images, evaluated with val (prepare.holdout_per_class)
    "test_top1",
    "test_top5",
    "lr",
)


def history_csv(rows: Sequence[dict[str, float]], main: str, nets: Sequence[str]) -> str:
    """Per-epoch metrics: the main net's columns plain, other nets' prefixed `<net>/`."""
    cols = ["epoch", "round", "w_bits", "a_bits", "data_epoch", *HISTORY_COLUMNS]
    cols += ["epoch_s", "cpu_s"]
    cols += [f"{n}/{c}" for n in nets if n != main for c in HISTORY_COLUMNS]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        out = []
        for c in cols:
            key = f"{main}/{c}" if c in HISTORY_COLUMNS else c
            v = r.get(key, "")
            out.append(f"{v:.6g}" if isinstance(v, float) else v)
        w.writerow(out)
    return buf.getvalue()
