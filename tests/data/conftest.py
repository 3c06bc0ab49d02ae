"""Builders of small real inputs (CIFAR pickles, image folders, zips) and shared datasets.

Preparing a dataset and compiling an FFCV loader (numba, seconds) are the slow steps,
so the datasets several tests read are prepared once per session.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lowbit.data import ffcv_available, prepare_dataset

CIFAR10_ZIPS = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")  # fmt: skip
FFCV_TIMEOUT_S = 120  # every FFCV write in the tests runs under this deadline
# digits split so that the 1408 training images make 22 full batches of 64: an epoch holds
# every image once (drop_last drops nothing), which the order tests rely on
DIGITS_VAL_FRACTION, DIGITS_TRAIN, DIGITS_BATCH = 0.2164, 1408, 64


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ffcv_items = [item for item in items if "ffcv" in item.keywords]
    if ffcv_items and not ffcv_available():
        skip = pytest.mark.skip(reason="FFCV (or its system libraries) cannot be imported")
        for item in ffcv_items:
            item.add_marker(skip)
    # numba prints a harmless KeyError when FFCV's compiled pipelines are collected
    quiet = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
    for item in ffcv_items:
        item.add_marker(quiet)


def cifar_images(n: int, seed: int) -> np.ndarray:
    """(n, 32, 32, 3) uint8 random images."""
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _dump(path: Path, obj: dict) -> None:
    # The official files are Python 2 pickles of dicts with bytes keys (protocol 2).
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _rows(images: np.ndarray) -> np.ndarray:
    """(n, 32, 32, 3) -> (n, 3072) rows: 1024 red, 1024 green, 1024 blue values."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def write_cifar10(root: Path, per_batch: int = 8, test: int = 6) -> dict[str, np.ndarray]:
    """A tiny cifar-10-batches-py folder; returns the images and labels written."""
    root.mkdir(parents=True, exist_ok=True)
    names = [c.encode() for c in CIFAR10_CLASSES]
    _dump(root / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    xs, ys = [], []
    for b in range(1, 6):
        x = cifar_images(per_batch, b)
        y = [(b + i) % 10 for i in range(per_batch)]
        _dump(root / f"data_batch_{b}", {b"data": _rows(x), b"labels": y, b"batch_label": b"x"})
        xs.append(x)
        ys += y
    xt, yt = cifar_images(test, 99), [i % 10 for i in range(test)]
    _dump(root / "test_batch", {b"data": _rows(xt), b"labels": yt})
    return {"x": np.concatenate(xs), "y": np.asarray(ys), "x_val": xt, "y_val": np.asarray(yt)}


def write_cifar100(root: Path, n: int = 12, test: int = 5) -> dict[str, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    fine = [f"class{i:03d}".encode() for i in range(100)]
    _dump(root / "meta", {b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20})
    x, xt = cifar_images(n, 1), cifar_images(test, 2)
    y, yt = [(7 * i) % 100 for i in range(n)], [(3 * i) % 100 for i in range(test)]
    _dump(root / "train", {b"data": _rows(x), b"fine_labels": y, b"coarse_labels": [0] * n})
    _dump(root / "test", {b"data": _rows(xt), b"fine_labels": yt, b"coarse_labels": [0] * test})
    return {"x": x, "y": np.asarray(y), "x_val": xt, "y_val": np.asarray(yt)}


def image_bytes(seed: int, size: tuple[int, int] = (20, 16), fmt: str = "JPEG") -> bytes:
    """A small smooth image (compresses like a photo) encoded as JPEG or PNG; size (w, h)."""
    import io

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    ramp_x, ramp_y = 180 * xx / max(w - 1, 1), 180 * yy / max(h - 1, 1)
    rgb = np.stack([20 + ramp_x, 20 + ramp_y, np.full_like(ramp_x, 20 + (seed * 23) % 200)], -1)
    rgb = rgb.astype(np.uint8)  # smooth ramps: small JPEG error; the blue level tells images apart
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, quality=95)
    return buf.getvalue()


TREE = {  # split -> class -> number of images
    "train": {"cat": 5, "dog": 4, "emu": 3},
    "val": {"cat": 2, "dog": 2, "emu": 1},
}


def tree_files(val_name: str = "val", sizes: bool = False) -> dict[str, bytes]:
    """Relative path -> file bytes of a tiny image-folder tree (PNG and JPEG mixed).

    sizes=True gives every image its own size (for the variable-size JPEG mode)."""
    files, k = {}, 0
    for split, classes in TREE.items():
        for c, n in classes.items():
            for i in range(n):
                size = (24 + 7 * k % 23, 18 + 5 * k % 17) if sizes else (20, 16)
                fmt = "PNG" if i == 0 else "JPEG"
                ext = "png" if fmt == "PNG" else "jpg"
                name = f"{val_name if split == 'val' else split}/{c}/{i:03d}.{ext}"
                files[name] = image_bytes(k, size, fmt)
                k += 1
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def write_zip(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(prefix + name, data)
    return path


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits_npz")
    prepare_dataset(
        "digits", None, out, image_size=16, val_fraction=DIGITS_VAL_FRACTION, format="npz"
    )
    return out


@pytest.fixture(scope="session")
def digits_beton(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not ffcv_available():
        pytest.skip("FFCV cannot be imported")
    out = tmp_path_factory.mktemp("digits_beton")
    prepare_dataset("digits", None, out, image_size=16, val_fraction=DIGITS_VAL_FRACTION,
                    format="beton", timeout_s=FFCV_TIMEOUT_S)  # fmt: skip
    return out


@pytest.fixture(scope="session")
def digits_ffcv_loaders(digits_beton: Path) -> tuple:
    """FFCV loaders over digits, batch 64, cifar augmentation, compiled once per session."""
    from lowbit.data import build_loaders

    return build_loaders(digits_beton, DIGITS_BATCH, backend="ffcv", augment="cifar", seed=3)
