"""prepare_dataset: real .beton and .npz files, meta.json values, and failure handling."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from lowbit.data import DatasetMeta, ffcv_available, prepare_dataset
from lowbit.data.meta import sha256_file
from lowbit.data.sources import Source, load_source
from lowbit.data.splits import ArraySplit
from lowbit.data.store import BetonStore, open_store
from lowbit.errors import ConfigError, DataError
from tests.data.conftest import (
    CIFAR10_CLASSES,
    CIFAR10_ZIPS,
    FFCV_TIMEOUT_S,
    TREE,
    tree_files,
    write_cifar10,
    write_tree,
    write_zip,
)

FORMATS = ["npz", pytest.param("beton", marks=pytest.mark.ffcv)]


def _stored(data_dir, split: str, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    store = open_store(data_dir / f"{split}.{fmt}")
    return np.stack([store.image(i) for i in range(len(store))]), store.labels


def _numpy_mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    px = x.reshape(-1, 3).astype(np.float64) / 255.0
    return px.mean(0), px.std(0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_digits_files_hold_the_source_pixels_and_meta_is_right(tmp_path, fmt):
    meta = prepare_dataset("digits", None, tmp_path, image_size=16, format=fmt, timeout_s=60)
    src = load_source("digits", None, 16, 0, 0.2, "raw")
    x, y = _stored(tmp_path, "train", fmt)
    assert np.array_equal(x, src.train.images) and np.array_equal(y, src.train.labels)
    xv, yv = _stored(tmp_path, "val", fmt)
    assert np.array_equal(xv, src.val.images) and np.array_equal(yv, src.val.labels)
    mean, std = _numpy_mean_std(src.train.images)  # train split only, [0, 1] units
    assert np.allclose(meta.mean, mean, atol=1e-9) and np.allclose(meta.std, std, atol=1e-9)
    assert meta.counts == {"train": len(src.train), "val": len(src.val)}
    assert meta.num_classes == 10 and meta.fixed_shape == [16, 16] and meta.format == fmt
    for name, rec in meta.files.items():
        assert rec["sha256"] == sha256_file(tmp_path / name)
        assert rec["bytes"] == (tmp_path / name).stat().st_size
    assert DatasetMeta.load(tmp_path) == meta  # meta.json round-trips
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*meta.files, "meta.json"])


@pytest.mark.ffcv
def test_beton_reader_agrees_with_ffcv_and_files_stay_small(digits_beton):
    from ffcv.reader import Reader

    ours, theirs = (
        BetonStore(digits_beton / "train.beton"),
        Reader(str(digits_beton / "train.beton")),
    )
    assert np.array_equal(ours.labels, theirs.metadata["f1"])
    assert np.array_equal(ours.ptrs, theirs.metadata["f0"]["data_ptr"].astype(np.int64))
    assert np.array_equal(ours.shapes[:, 0], theirs.metadata["f0"]["height"])
    # 1408 images of 768 bytes: one 2 MiB page after a page-aligned header, not ~16 MiB
    assert (digits_beton / "train.beton").stat().st_size < 5 * 2**20


def test_cifar_pickles_prepared_with_subset(tmp_path):
    truth = write_cifar10(tmp_path / "c10", per_batch=8)
    meta = prepare_dataset("cifar10", tmp_path / "c10", tmp_path / "out", train_per_class=2,
                           format="npz")  # fmt: skip
    x, y = _stored(tmp_path / "out", "train", "npz")
    assert np.bincount(y, minlength=10).tolist() == [2] * 10 and meta.counts["train"] == 20
    rows = {truth["x"][i].tobytes(): truth["y"][i] for i in range(len(truth["y"]))}
    assert all(rows[img.tobytes()] == label for img, label in zip(x, y, strict=True))
    assert np.allclose(meta.mean, _numpy_mean_std(x)[0], atol=1e-9)
    assert meta.classes[0] == "airplane" and meta.train_per_class == 2


def test_holdout_is_class_balanced_disjoint_and_the_source_val_becomes_test(tmp_path):
    from lowbit.data.loaders import build_eval_loader

    truth = write_cifar10(tmp_path / "c10", per_batch=10, test=7)  # 5 images per class
    plain = prepare_dataset("cifar10", tmp_path / "c10", tmp_path / "plain", train_per_class=2,
                            format="npz", seed=3)  # fmt: skip
    meta = prepare_dataset("cifar10", tmp_path / "c10", tmp_path / "out", train_per_class=2,
                           holdout_per_class=2, format="npz", seed=3)  # fmt: skip
    xt, _ = _stored(tmp_path / "out", "train", "npz")
    xv, yv = _stored(tmp_path / "out", "val", "npz")
    xs, ys = _stored(tmp_path / "out", "test", "npz")
    # the training subset is the one the same seed gives without a holdout (5 >= 2 + 2)
    assert np.array_equal(xt, _stored(tmp_path / "plain", "train", "npz")[0])
    assert np.bincount(yv, minlength=10).tolist() == [2] * 10
    assert not {img.tobytes() for img in xv} & {img.tobytes() for img in xt}
    train_pixels = {img.tobytes() for img in truth["x"]}
    assert all(img.tobytes() in train_pixels for img in xv)  # held out of the training set
    assert np.array_equal(xs, truth["x_val"]) and np.array_equal(ys, truth["y_val"])
    assert meta.counts == {"train": 20, "val": 20, "test": 7} and "test.npz" in meta.files
    assert meta.extra["holdout_per_class"] == 2 and plain.counts == {"train": 20, "val": 7}
    # the held-out images come first from those the subset leaves: 4 + 2 > 5 shrinks train
    big = prepare_dataset("cifar10", tmp_path / "c10", tmp_path / "big", train_per_class=4,
                          holdout_per_class=2, format="npz", seed=3)  # fmt: skip
    assert big.counts["train"] == 30 and big.counts["val"] == 20
    test = build_eval_loader(tmp_path / "out", "test", batch_size=4)
    assert test is not None and sum(len(y) for _, y in test) == 7
    assert build_eval_loader(tmp_path / "plain", "test", batch_size=4) is None
    with pytest.raises(DataError, match="cannot hold out 5 per class"):
        prepare_dataset("cifar10", tmp_path / "c10", tmp_path / "x", holdout_per_class=5,
                        format="npz")  # fmt: skip
    assert not (tmp_path / "x" / "meta.json").exists()


@pytest.mark.ffcv
def test_shared_cifar10_jpeg_zips_through_ffcv(tmp_path):
    if not (CIFAR10_ZIPS / "train.zip").is_file():
        pytest.skip("shared CIFAR-10 zips not present")
    meta = prepare_dataset("imagefolder", CIFAR10_ZIPS, tmp_path, train_per_class=20,
                           val_per_class=5, format="beton", timeout_s=FFCV_TIMEOUT_S)  # fmt: skip
    assert meta.classes == sorted(CIFAR10_CLASSES)
    assert meta.counts == {"train": 200, "val": 50} and meta.fixed_shape == [32, 32]
    x, y = _stored(tmp_path, "train", "beton")
    assert np.bincount(y).tolist() == [20] * 10
    src = load_source("imagefolder", CIFAR10_ZIPS, 32, 0, 0.2, "raw")
    from lowbit.data.splits import per_class_subset

    first = per_class_subset(src.train.labels, 20, 0)[0]
    assert np.array_equal(x[0], src.train.image(first))  # raw mode: the decoded JPEG exactly
    assert np.allclose(meta.mean, _numpy_mean_std(x)[0], atol=1e-9)
    assert 0.35 < meta.mean[0] < 0.6 and 0.15 < meta.std[2] < 0.35  # CIFAR-like statistics


@pytest.mark.parametrize("fmt", FORMATS)
def test_variable_size_jpeg_mode(tmp_path, fmt):
    root = write_tree(tmp_path / "t", tree_files(sizes=True))
    meta = prepare_dataset("imagefolder", root, tmp_path / "o", image_size=24, encoding="jpeg",
                           format=fmt, timeout_s=FFCV_TIMEOUT_S)  # fmt: skip
    store = open_store(tmp_path / "o" / f"train.{fmt}")
    shapes = {tuple(s) for s in store.shapes.tolist()}
    assert meta.fixed_shape is None and len(shapes) > 3
    assert all(max(s) <= 24 for s in shapes) and store.jpeg.all()
    src = load_source("imagefolder", root, 24, 0, 0.2, "jpeg")
    err = np.abs(store.image(3).astype(int) - src.train.image(3).astype(int)).mean()
    assert err < 6  # lossy but close (mean absolute error in 0..255 units)


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupt_image_fails_naming_it_and_leaves_nothing(tmp_path, fmt):
    files = tree_files()
    files["val/dog/001.jpg"] = files["val/dog/001.jpg"][:80]
    root = write_zip(tmp_path / "bad.zip", files)
    t0 = time.monotonic()
    with pytest.raises(DataError, match=r"bad\.zip!val/dog/001\.jpg"):
        prepare_dataset("imagefolder", root, tmp_path / "o", image_size=16, format=fmt,
                        timeout_s=FFCV_TIMEOUT_S)  # fmt: skip
    assert time.monotonic() - t0 < 30  # no hang on a failed FFCV worker
    assert list((tmp_path / "o").iterdir()) == []  # no temp files, no train file, no meta.json


class _SlowSplit(ArraySplit):
    def image(self, i: int) -> np.ndarray:
        time.sleep(0.5)
        return super().image(i)


@pytest.mark.parametrize("fmt", FORMATS)
def test_write_timeout_raises_and_keeps_the_previous_dataset(tmp_path, monkeypatch, fmt):
    prepare_dataset("digits", None, tmp_path, image_size=8, format=fmt, timeout_s=FFCV_TIMEOUT_S)
    before = json.loads((tmp_path / "meta.json").read_text())
    imgs = np.zeros((40, 8, 8, 3), np.uint8)
    slow = Source(["a", "b"], _SlowSplit(imgs, np.arange(40) % 2, "slow"),
                  _SlowSplit(imgs[:4], np.arange(4) % 2, "slow"))  # fmt: skip
    monkeypatch.setattr("lowbit.data.prepare.load_source", lambda *a: slow)
    with pytest.raises(DataError, match=r"train\.\w+.*timed out after 1 s"):
        prepare_dataset("digits", None, tmp_path, image_size=8, format=fmt, timeout_s=1)
    assert json.loads((tmp_path / "meta.json").read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before["files"], "meta.json"])


def test_bad_arguments_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown data source 'mnist'"):
        prepare_dataset("mnist", None, tmp_path)
    with pytest.raises(ConfigError, match="encoding"):
        prepare_dataset("digits", None, tmp_path, encoding="png")
    with pytest.raises(ConfigError, match="train_per_class"):
        prepare_dataset("digits", None, tmp_path, train_per_class=0, format="npz")
    with pytest.raises(DataError, match="needs a root"):
        prepare_dataset("cifar10", None, tmp_path)


def test_without_ffcv_auto_writes_npz_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setattr("lowbit.data.backend._ffcv_import_error", lambda: "ImportError: simulated")
    assert not ffcv_available()
    with pytest.warns(RuntimeWarning, match="FFCV is not importable"):
        meta = prepare_dataset("imagefolder", write_tree(tmp_path / "t", tree_files()),
                               tmp_path / "o", image_size=16)  # fmt: skip
    assert meta.format == "npz" and meta.counts == {"train": 12, "val": 5}
    assert sum(TREE["train"].values()) == 12
    with pytest.raises(DataError, match="format='beton' needs FFCV"):
        prepare_dataset("digits", None, tmp_path / "x", format="beton")
