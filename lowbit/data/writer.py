"""Write one split to disk: FFCV .beton (see ffcv_writer.py) or the plain .npz store.

The .npz store is what prepare_dataset writes when FFCV cannot be imported. It holds,
uncompressed:
    data     (B,)    uint8   every sample's bytes back to back (raw pixels or a JPEG)
    offsets  (N+1,)  int64   sample i is data[offsets[i]:offsets[i+1]]
    shapes   (N, 2)  int32   (height, width)
    labels   (N,)    int64
    jpeg     ()      bool    whether the bytes are JPEG files
Raw samples are (height, width, 3) uint8 in row-major HWC order, as in a .beton.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lowbit.data.splits import Split
from lowbit.errors import DataError

STATS_COLS = 8  # per sample: sum R, G, B; sum of squares R, G, B; height; width


def check_sample(img: object, label: object, name: str) -> None:
    """What FFCV's RGBImageField accepts; a bad sample kills an FFCV worker, so check first."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3:
        raise DataError(f"{name}: expected a uint8 (H, W, 3) array, got {type(img).__name__}")
    if img.shape[2] != 3 or min(img.shape[:2]) < 1 or max(img.shape[:2]) > 65535:
        raise DataError(f"{name}: bad image shape {img.shape}")
    if not isinstance(label, (int, np.integer)):
        raise DataError(f"{name}: label {label!r} is not an integer")


def sample_stats(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (8,) float64: channel sums, channel sums of squares, H, W.

    Integer sums are exact; float64 holds them exactly below 2**53 (~1e9 pixels of 255^2).
    """
    px = img.reshape(-1, 3).astype(np.int64)
    return np.concatenate([px.sum(0), (px * px).sum(0), img.shape[:2]]).astype(np.float64)


def mean_std(stats: np.ndarray) -> tuple[list[float], list[float]]:
    """(N, 8) per-sample stats -> per-channel mean and population std in [0, 1] units."""
    pixels = float((stats[:, 6] * stats[:, 7]).sum())
    if pixels == 0:
        raise DataError("the training split is empty")
    mean = stats[:, 0:3].sum(0) / pixels / 255.0
    sq = stats[:, 3:6].sum(0) / pixels / 255.0**2
    std = np.sqrt(np.maximum(sq - mean**2, 0.0))
    return [float(m) for m in mean], [float(s) for s in std]


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_npz(
    split: Split, path: Path, encoding: str, jpeg_quality: int, timeout_s: float
) -> np.ndarray:
    """Write `split` as a .npz store at `path` (a temp name); returns (N, 8) stats."""
    deadline = time.monotonic() + timeout_s
    n = len(split)
    stats = np.zeros((n, STATS_COLS))
    chunks: list[np.ndarray] = []
    offsets = np.zeros(n + 1, np.int64)
    for i in range(n):
        if time.monotonic() > deadline:
            raise DataError(f"writing {path.name} timed out after {timeout_s:.0f} s ({i}/{n})")
        img, label = split.image(i), split.labels[i]
        check_sample(img, label, split.name(i))
        stats[i] = sample_stats(img)
        raw = img.reshape(-1) if encoding == "raw" else encode_jpeg(img, jpeg_quality)
        chunks.append(np.frombuffer(raw, np.uint8) if isinstance(raw, bytes) else raw)
        offsets[i + 1] = offsets[i] + len(chunks[-1])
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    with open(path, "wb") as f:
        np.savez(
            f,
            data=data,
            offsets=offsets,
            shapes=stats[:, 6:8].astype(np.int32),
            labels=np.asarray(split.labels, np.int64),
            jpeg=np.asarray(encoding == "jpeg"),
        )
        f.flush()
        os.fsync(f.fileno())
    return stats
