"""Counter-based randomness for augmentation: every random choice is a hash of
(seed, epoch, sample index, stream), never a draw from a stateful generator.

Why: FFCV runs augmentations in numba threads whose RNG state is per thread and seeded
from entropy, and a DataLoader's workers each hold their own state. Hashing makes a
sample's crop and flip independent of threads, workers, batch composition and backend,
so `set_epoch(e)` fully determines an epoch and the FFCV and torch backends produce
the same augmented pixels for the same sample.

The scalar functions below use only uint64 arithmetic with np.uint64 constants, so
they compile unchanged under numba (the FFCV ops) and run elementwise on numpy arrays
(the torch backend).
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S11, _S32 = (np.uint64(s) for s in (30, 27, 31, 11, 32))
_INV_2_53 = 1.0 / 9007199254740992.0  # maps a 53-bit integer to [0, 1)

FLIP_STREAM = 0  # stream ids keep the crop and flip decisions independent
CROP_STREAM = 1  # random-resized-crop uses streams CROP_STREAM .. CROP_STREAM + 39


def mix64(z):
    """splitmix64 finalizer: a bijection on uint64 with good avalanche."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def sample_bits(key, index, stream):
    """64 random bits for (epoch key, sample index, stream); all uint64."""
    return mix64(key ^ mix64(index * _GOLDEN + stream))


def uniform(key, index, stream):
    """A float64 in [0, 1) from the top 53 bits of sample_bits."""
    return np.float64(sample_bits(key, index, stream) >> _S11) * _INV_2_53


def epoch_key(seed: int, epoch: int) -> np.uint64:
    """The augmentation key of one epoch: a hash of (seed, epoch)."""
    with np.errstate(over="ignore"):
        return mix64(mix64(np.uint64(seed % 2**64)) + np.uint64(epoch % 2**64))


def pad_crop_flip_params(key, index, pad):
    """Offsets (oy, ox) in [0, 2*pad] of the crop window in the zero-padded image and
    a flip flag in {0, 1}: torchvision's RandomCrop(padding=pad) + RandomHorizontalFlip.
    """
    bits = sample_bits(key, index, np.uint64(FLIP_STREAM))
    span = np.uint64(2 * pad + 1)
    oy = bits % span
    ox = (bits >> _S11) % span
    flip = (bits >> _S32) & np.uint64(1)
    return oy, ox, flip


def pad_crop_flip_batch(
    images: np.ndarray, indices: np.ndarray, key: np.uint64, pad: int
) -> np.ndarray:
    """Numpy version of the FFCV op in ffcv_ops.py, bit-identical to it.

    images (N, H, W, 3) uint8, indices (N,) sample ids -> (N, H, W, 3) uint8, where
    out[y, x] = padded[oy + y, ox + (W-1-x if flip else x)] and padded is the image
    with `pad` zero pixels on every side.
    """
    n, h, w, _ = images.shape
    with np.errstate(over="ignore"):
        oy, ox, flip = pad_crop_flip_params(key, indices.astype(np.uint64), pad)
    padded = np.zeros((n, h + 2 * pad, w + 2 * pad, 3), np.uint8)
    padded[:, pad : pad + h, pad : pad + w] = images
    out = np.empty_like(images)
    for i, (y, x) in enumerate(zip(oy.tolist(), ox.tolist(), strict=True)):
        window = padded[i, y : y + h, x : x + w]
        out[i] = window[:, ::-1] if flip[i] else window
    return out


def flip_batch(images: np.ndarray, indices: np.ndarray, key: np.uint64) -> np.ndarray:
    """Horizontal flip with probability 1/2 per sample; (N, H, W, 3) -> same."""
    return pad_crop_flip_batch(images, indices, key, 0)


def rrc_box(height, width, key, index, scale_lo, scale_hi, logr_lo, logr_hi):
    """Random-resized-crop window (top, left, h, w), torchvision's algorithm (10 tries,
    then a centred crop at the nearest allowed aspect ratio) with hashed draws.
    Scalar only; compiled by numba for the FFCV decoder.
    """
    area = height * width
    for attempt in range(10):
        s = np.uint64(CROP_STREAM + 4 * attempt)
        target = area * (scale_lo + (scale_hi - scale_lo) * uniform(key, index, s))
        log_r = logr_lo + (logr_hi - logr_lo) * uniform(key, index, s + np.uint64(1))
        aspect = np.exp(log_r)
        w = int(np.floor(np.sqrt(target * aspect) + 0.5))
        h = int(np.floor(np.sqrt(target / aspect) + 0.5))
        if 0 < w <= width and 0 < h <= height:
            i = int(uniform(key, index, s + np.uint64(2)) * (height - h + 1))
            j = int(uniform(key, index, s + np.uint64(3)) * (width - w + 1))
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < np.exp(logr_lo):
        w = width
        h = int(np.floor(w / np.exp(logr_lo) + 0.5))
    elif in_ratio > np.exp(logr_hi):
        h = height
        w = int(np.floor(h * np.exp(logr_hi) + 0.5))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def center_box(height: int, width: int, ratio: float) -> tuple[int, int, int, int]:
    """FFCV's centre crop: a square of side ratio * min(h, w), centred; (top, left, h, w)."""
    c = int(ratio * min(height, width))
    return (height - c) // 2, (width - c) // 2, c, c
