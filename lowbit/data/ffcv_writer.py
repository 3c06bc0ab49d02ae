"""Write a split as an FFCV .beton with a deadline and worker-failure detection.

FFCV's DatasetWriter waits forever when a worker process raises (it polls a done
counter that never completes). `_GuardedWriter` replaces that wait with one that also
watches the workers and a deadline; the failing sample's message reaches the parent
through a queue, so the user sees which file is bad. Imported only when writing.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import queue
import time
from pathlib import Path
from typing import Any

import numpy as np
from ffcv.fields import IntField, RGBImageField
from ffcv.memory_allocator import MemoryAllocator
from ffcv.writer import MIN_PAGE_SIZE, DatasetWriter

from lowbit.data.cpus import bound_workers
from lowbit.data.splits import Split
from lowbit.data.writer import STATS_COLS, check_sample, sample_stats
from lowbit.errors import DataError

CHUNK = 100  # samples per work item, FFCV's default


class _Encodable:
    """The split as FFCV's writer wants it: (uint8 HWC image, int label) per index.

    Runs in the writer's worker processes; it records per-sample statistics into
    shared memory (rows are disjoint, so no lock) and reports a failure's message
    before re-raising.
    """

    def __init__(self, split: Split, stats: Any, errors: Any) -> None:
        self.split, self.stats, self.errors = split, stats, errors
        self._view: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        try:
            img, label = self.split.image(i), self.split.labels[i]
            check_sample(img, label, self.split.name(i))
        except BaseException as e:
            self.errors.put(str(e) or repr(e))
            raise
        if self._view is None:
            self._view = np.frombuffer(self.stats, np.float64).reshape(-1, STATS_COLS)
        self._view[i] = sample_stats(img)
        return img, int(label)


class _GuardedWriter(DatasetWriter):
    """DatasetWriter whose wait loop fails fast on a dead worker or a deadline."""

    def __init__(self, fname: str, fields: dict, page_size: int, workers: int, timeout_s: float):
        super().__init__(fname, fields, page_size=page_size, num_workers=workers)
        self.timeout_s = timeout_s
        self.errors: Any = mp.get_context().Queue()

    def _fail(self, processes: list, message: str) -> None:
        for p in processes:
            if p.is_alive():
                p.terminate()
        for p in processes:
            p.join(5)
        raise DataError(message)

    def _write_common(self, num_samples, queue_content, work_fn, extra_worker_args):
        # Mirrors DatasetWriter._write_common of ffcv 1.0.2, minus the progress bar and
        # plus the checks in the wait loop.
        self.num_samples = num_samples
        self.prepare()
        try:
            ctx = mp.get_context()
            workqueue, allocations_queue = ctx.Queue(), ctx.Queue()
            for todo in queue_content:
                workqueue.put(todo)
            for _ in range(self.num_workers):
                workqueue.put(None)
            done = ctx.Value(ctypes.c_uint64, 0)
            allocator = MemoryAllocator(self.fname, self.data_region_start, self.page_size)
            args = (workqueue, self.metadata_sm, self.metadata_type, self.fields, allocator,
                    done, allocations_queue, *extra_worker_args)  # fmt: skip
            processes = [ctx.Process(target=work_fn, args=args) for _ in range(self.num_workers)]
            for p in processes:
                p.start()
            deadline = time.monotonic() + self.timeout_s
            allocations: list = []
            while len(allocations) < len(processes):
                if done.value >= self.num_samples:
                    try:  # a worker sends its allocations after flushing its pages
                        allocations.append(allocations_queue.get(timeout=0.05))
                        continue
                    except queue.Empty:
                        pass
                else:
                    time.sleep(0.02)
                dead = [p for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    try:
                        reason = self.errors.get(timeout=1.0)
                    except queue.Empty:
                        reason = f"an FFCV writer worker exited with code {dead[0].exitcode}"
                    self._fail(processes, f"writing {Path(self.fname).name} failed: {reason}")
                if time.monotonic() > deadline:
                    self._fail(
                        processes,
                        f"writing {Path(self.fname).name} timed out after {self.timeout_s:.0f} s "
                        f"({done.value}/{self.num_samples} samples)",
                    )
            for p in processes:
                p.join()
            self.finalize([a for chunk in allocations for a in chunk])
        finally:
            self.metadata_sm.close()
            self.metadata_sm.unlink()


def page_size_for(max_sample_bytes: int) -> int:
    """Smallest power of two >= 2 MiB holding 4 samples: FFCV pads every worker's last
    page, so small pages keep small datasets small (the 8 MiB default pads to ~16 MiB)."""
    size = MIN_PAGE_SIZE
    while size < 4 * max_sample_bytes:
        size *= 2
    return size


def write_beton(
    split: Split,
    path: Path,
    codec: tuple[str, int],
    workers: int,
    timeout_s: float,
    max_sample_bytes: int,
) -> np.ndarray:
    """Write `split` to `path` (a temp name) -> (N, 8) per-sample stats.
    codec: (encoding "raw" | "jpeg", JPEG quality)."""
    encoding, jpeg_quality = codec
    n = len(split)
    if n == 0:
        raise DataError(f"cannot write {path.name}: the split has no samples")
    stats = mp.get_context().RawArray(ctypes.c_double, n * STATS_COLS)
    image = RGBImageField(
        write_mode="raw" if encoding == "raw" else "jpg", jpeg_quality=jpeg_quality
    )
    page_size = page_size_for(max_sample_bytes)
    # Each worker fills its own pages; a worker per page of data at most, so tiny splits
    # are not padded with half-empty pages.
    workers = max(
        1, min(bound_workers(workers), -(-n // CHUNK), -(-n * max_sample_bytes // page_size))
    )
    writer = _GuardedWriter(
        str(path),
        {"image": image, "label": IntField()},
        page_size=page_size,
        workers=workers,
        timeout_s=timeout_s,
    )
    data = _Encodable(split, stats, writer.errors)
    writer.from_indexed_dataset(data, chunksize=CHUNK)
    return np.frombuffer(stats, np.float64).reshape(n, STATS_COLS).copy()
