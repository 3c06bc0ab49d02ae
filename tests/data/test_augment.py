"""Hash-based augmentation: semantics of crop and flip, uniformity, numba == numpy."""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.data import augment as aug


def test_pad_crop_flip_matches_pad_then_slice_then_mirror():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (64, 6, 5, 3), dtype=np.uint8)
    idx = np.arange(1000, 1064)
    key = aug.epoch_key(1, 2)
    out = aug.pad_crop_flip_batch(imgs, idx, key, 2)
    with np.errstate(over="ignore"):
        oy, ox, flip = aug.pad_crop_flip_params(key, idx.astype(np.uint64), 2)
    for i in range(len(idx)):
        padded = np.pad(imgs[i], ((2, 2), (2, 2), (0, 0)))
        want = padded[oy[i] : oy[i] + 6, ox[i] : ox[i] + 5]
        assert np.array_equal(out[i], want[:, ::-1] if flip[i] else want)


def test_crop_offsets_and_flips_are_uniform_and_epoch_dependent():
    idx = np.arange(90_000, dtype=np.uint64)
    with np.errstate(over="ignore"):
        oy, ox, flip = aug.pad_crop_flip_params(aug.epoch_key(0, 0), idx, 4)
        oy1, _, _ = aug.pad_crop_flip_params(aug.epoch_key(0, 1), idx, 4)
    counts = np.bincount((oy * 9 + ox).astype(int), minlength=81)
    assert counts.min() > 0.85 * 90_000 / 81 and counts.max() < 1.15 * 90_000 / 81
    assert abs(flip.mean() - 0.5) < 0.01
    assert (oy == oy1).mean() < 0.15  # another epoch: independent draws (1/9 agree)
    assert aug.epoch_key(0, 1) != aug.epoch_key(1, 0)


@pytest.mark.ffcv
def test_numba_random_resized_crop_equals_python_and_stays_inside():
    from lowbit.data.ffcv_ops import _JIT

    jit_box = _JIT["rrc_box"]
    key = aug.epoch_key(3, 7)
    lr = (float(np.log(3 / 4)), float(np.log(4 / 3)))
    areas = []
    for i, (h, w) in enumerate([(32, 32), (48, 20), (500, 375), (7, 300)] * 50):
        with np.errstate(over="ignore"):
            py = aug.rrc_box(h, w, key, np.uint64(i), 0.08, 1.0, *lr)
        assert tuple(jit_box(np.uint32(h), np.uint32(w), key, np.uint64(i), 0.08, 1.0, *lr)) == py
        top, left, ch, cw = py
        assert min(top, left) >= 0 and min(ch, cw) > 0 and top + ch <= h and left + cw <= w
        areas.append(ch * cw / (h * w))
    assert min(areas) < 0.2 and max(areas) > 0.8  # the scale range (0.08, 1) is used


def test_center_box():
    assert aug.center_box(256, 320, 224 / 256) == (16, 48, 224, 224)
    assert aug.center_box(20, 10, 1.0) == (5, 0, 10, 10)
