"""Reading the sources: digits, CIFAR pickles, image folders and zips, and bad inputs."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lowbit.data.sources import load_source
from lowbit.data.splits import fit_image, per_class_subset
from lowbit.errors import DataError
from tests.data.conftest import (
    TREE,
    tree_files,
    write_cifar10,
    write_cifar100,
    write_tree,
    write_zip,
)


def _images(split) -> np.ndarray:
    return np.stack([split.image(i) for i in range(len(split))])


def test_digits_are_resized_rgb_and_split_stratified_by_seed():
    src = load_source("digits", None, 12, seed=0, val_fraction=0.25, encoding="raw")
    assert len(src.train) + len(src.val) == 1797 and src.classes == [str(i) for i in range(10)]
    assert abs(len(src.val) - 0.25 * 1797) <= 1
    x = _images(src.val)
    assert x.shape[1:] == (12, 12, 3) and x.dtype == np.uint8
    assert (x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all()  # gray -> RGB
    share = np.bincount(src.val.labels, minlength=10) / np.bincount(
        np.concatenate([src.train.labels, src.val.labels]), minlength=10
    )
    assert np.allclose(share, 0.25, atol=0.02)  # stratified: every class at the fraction
    again = load_source("digits", None, 12, seed=0, val_fraction=0.25, encoding="raw")
    other = load_source("digits", None, 12, seed=1, val_fraction=0.25, encoding="raw")
    assert np.array_equal(again.val.labels, src.val.labels)
    assert np.array_equal(_images(again.val), x)
    assert not np.array_equal(_images(other.val), x)


def test_cifar10_pickles_give_hwc_images_labels_and_names(tmp_path):
    truth = write_cifar10(tmp_path / "c10")
    src = load_source("cifar10", tmp_path / "c10", 32, 0, 0.2, "raw")
    assert src.classes[:3] == ["airplane", "automobile", "bird"] and len(src.classes) == 10
    assert np.array_equal(_images(src.train), truth["x"])  # row layout -> HWC, batches in order
    assert np.array_equal(src.train.labels, truth["y"])
    assert np.array_equal(_images(src.val), truth["x_val"])
    assert np.array_equal(src.val.labels, truth["y_val"])


def test_cifar100_uses_fine_labels(tmp_path):
    truth = write_cifar100(tmp_path / "c100")
    src = load_source("cifar100", tmp_path / "c100", 32, 0, 0.2, "raw")
    assert len(src.classes) == 100 and src.classes[7] == "class007"
    assert np.array_equal(src.train.labels, truth["y"])
    assert np.array_equal(_images(src.val), truth["x_val"])


def test_cifar_resized_when_image_size_differs(tmp_path):
    write_cifar10(tmp_path / "c10")
    src = load_source("cifar10", tmp_path / "c10", 16, 0, 0.2, "raw")
    assert src.train.image(0).shape == (16, 16, 3)


def test_cifar_missing_batch_names_the_file(tmp_path):
    write_cifar10(tmp_path / "c10")
    (tmp_path / "c10" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_source("cifar10", tmp_path / "c10", 32, 0, 0.2, "raw")


def test_cifar_truncated_pickle_names_the_file(tmp_path):
    write_cifar10(tmp_path / "c10")
    path = tmp_path / "c10" / "test_batch"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="test_batch"):
        load_source("cifar10", tmp_path / "c10", 32, 0, 0.2, "raw")


def test_cifar_pickle_cannot_run_code(tmp_path):
    write_cifar10(tmp_path / "c10")

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    with open(tmp_path / "c10" / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": Evil()}, f, protocol=2)
    with pytest.raises(DataError, match=r"batches\.meta.*refusing"):
        load_source("cifar10", tmp_path / "c10", 32, 0, 0.2, "raw")
    assert not Path("pwned").exists()


def test_cifar_wrong_shape_is_reported(tmp_path):
    write_cifar10(tmp_path / "c10")
    with open(tmp_path / "c10" / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(DataError, match=r"test_batch.*3072"):
        load_source("cifar10", tmp_path / "c10", 32, 0, 0.2, "raw")


def _expected_counts(split: str) -> list[int]:
    return [TREE[split][c] for c in sorted(TREE[split])]


def _layouts(tmp_path: Path) -> dict[str, Path]:
    files = tree_files()
    return {
        "folder": write_tree(tmp_path / "tree", files),
        "folder_test": write_tree(tmp_path / "tree_test", tree_files("test")),
        "zip": write_zip(tmp_path / "one.zip", files),
        "zip_with_top_folder": write_zip(tmp_path / "top.zip", files, prefix="tiny/"),
        "train_zip_test_zip": _split_zips(tmp_path / "zips"),
    }


def _split_zips(root: Path) -> Path:
    files = tree_files("test")
    for split in ("train", "test"):
        write_zip(root / f"{split}.zip", {k: v for k, v in files.items() if k.startswith(split)})
    return root


@pytest.mark.parametrize(
    "layout", ["folder", "folder_test", "zip", "zip_with_top_folder", "train_zip_test_zip"]
)
def test_imagefolder_layouts(tmp_path, layout):
    root = _layouts(tmp_path)[layout]
    src = load_source("imagefolder", root, 16, 0, 0.2, "raw")
    assert src.classes == ["cat", "dog", "emu"]
    assert np.bincount(src.train.labels).tolist() == _expected_counts("train")
    assert np.bincount(src.val.labels).tolist() == _expected_counts("val")
    x = src.train.image(len(src.train) - 1)  # the last emu image, a JPEG read in place
    assert x.shape == (16, 16, 3) and x.dtype == np.uint8
    name = src.train.name(len(src.train) - 1)
    assert "emu" in name and name.endswith("002.jpg")


def test_fit_image_raw_is_square_and_jpeg_keeps_aspect():
    img = Image.new("RGB", (40, 20), (10, 20, 30))
    assert fit_image(img, 16, "raw").shape == (16, 16, 3)
    assert fit_image(img, 16, "jpeg").shape == (8, 16, 3)  # longer side 40 -> 16
    assert fit_image(img, 64, "jpeg").shape == (20, 40, 3)  # never enlarged


def test_imagefolder_missing_root(tmp_path):
    with pytest.raises(DataError, match="not found.*nowhere"):
        load_source("imagefolder", tmp_path / "nowhere", 16, 0, 0.2, "raw")


def test_imagefolder_wrong_layout(tmp_path):
    write_tree(tmp_path / "flat", {"cat/1.jpg": b"x"})
    with pytest.raises(DataError, match=r"flat: expected train/ and val/"):
        load_source("imagefolder", tmp_path / "flat", 16, 0, 0.2, "raw")
    write_tree(tmp_path / "noval", {"train/cat/1.jpg": b"x"})
    with pytest.raises(DataError, match="no val/ or test/"):
        load_source("imagefolder", tmp_path / "noval", 16, 0, 0.2, "raw")


def test_imagefolder_empty_class_folder_in_dir_and_zip(tmp_path):
    root = write_tree(tmp_path / "tree", tree_files())
    (root / "train" / "fox").mkdir()
    with pytest.raises(DataError, match=r"empty class folder fox/"):
        load_source("imagefolder", root, 16, 0, 0.2, "raw")
    path = write_zip(tmp_path / "t.zip", tree_files())
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("val/fox/", b"")
    with pytest.raises(DataError, match=r"t\.zip: empty class folder val/fox/"):
        load_source("imagefolder", path, 16, 0, 0.2, "raw")


def test_imagefolder_val_class_unknown_to_train(tmp_path):
    files = tree_files()
    files["val/yak/0.jpg"] = files["val/cat/001.jpg"]
    with pytest.raises(DataError, match=r"\['yak'\] are not training classes"):
        load_source("imagefolder", write_tree(tmp_path / "t", files), 16, 0, 0.2, "raw")


def test_imagefolder_corrupt_image_names_the_member(tmp_path):
    files = tree_files()
    files["train/dog/001.jpg"] = files["train/dog/001.jpg"][:60]  # truncated JPEG
    src = load_source("imagefolder", write_zip(tmp_path / "c.zip", files), 16, 0, 0.2, "raw")
    i = src.train.files.index((str(tmp_path / "c.zip"), "train/dog/001.jpg"))
    with pytest.raises(DataError, match=r"c\.zip!train/dog/001\.jpg"):
        src.train.image(i)


def _read_all_repeatedly(split, want: list[np.ndarray], rounds: int = 20) -> bool:
    return all(np.array_equal(split.image(i), w) for _ in range(rounds) for i, w in enumerate(want))


def test_zip_members_read_concurrently_after_fork(tmp_path):
    # FFCV's writer forks workers that read the same zip at once; a ZipFile handle
    # inherited through fork would share its file offset and interleave their reads.
    src = load_source("imagefolder", write_zip(tmp_path / "c.zip", tree_files()), 16, 0, 0.2, "raw")
    want = [src.train.image(i) for i in range(len(src.train))]  # opens the zip in the parent
    assert pickle.loads(pickle.dumps(next(iter(src.train._zips.values()))))._zf is None
    pid = os.fork()
    if pid == 0:  # child: exit 0 only if every read gave the right pixels
        os._exit(0 if _read_all_repeatedly(src.train, want) else 1)
    ok = _read_all_repeatedly(src.train, want)
    assert os.waitpid(pid, 0)[1] == 0 and ok


def test_per_class_subset_is_balanced_seeded_and_ordered():
    labels = np.repeat(np.arange(4), [10, 3, 8, 6])
    idx = per_class_subset(labels, 5, seed=0)
    assert np.bincount(labels[idx]).tolist() == [5, 3, 5, 5]
    assert (np.diff(idx) > 0).all()
    assert np.array_equal(idx, per_class_subset(labels, 5, seed=0))
    assert not np.array_equal(idx, per_class_subset(labels, 5, seed=1))


def test_png_and_jpeg_members_decode_to_their_pixels(tmp_path):
    files = tree_files()
    src = load_source("imagefolder", write_zip(tmp_path / "z.zip", files), 20, 0, 0.2, "jpeg")
    for i in (0, 1):  # 000.png, 001.jpg of class cat: stored size 20x16 kept in jpeg mode
        member = src.train.files[i][1]
        want = np.asarray(Image.open(io.BytesIO(files[member])).convert("RGB"))
        assert np.array_equal(src.train.image(i), want)
