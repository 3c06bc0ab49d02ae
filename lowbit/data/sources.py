"""Data sources -> (classes, train split, val split).

digits:      scikit-learn's bundled 8x8 digits, resized, seeded stratified split.
cifar10/100: the python-pickle layout of the official archives, read with an
             unpickler that only builds numpy arrays (loading never runs code).
imagefolder: train/<class>/* and val/<class>/* (or test/) in a folder, in one zip,
             or as train.zip + val.zip/test.zip; zip members are read in place.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from lowbit.data.splits import IMAGE_EXTENSIONS, ArraySplit, FileSplit, Split
from lowbit.errors import DataError

SOURCES = ("digits", "cifar10", "cifar100", "imagefolder")
VAL_NAMES = ("val", "test")  # the first one present is the validation split


@dataclass
class Source:
    classes: list[str]
    train: Split
    val: Split


def _resize_all(images: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w, 3) uint8 -> (N, size, size, 3) uint8, bilinear (a no-op at the same size)."""
    if images.shape[1:3] == (size, size):
        return np.ascontiguousarray(images)
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, im in enumerate(images):
        out[i] = np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR))
    return out


def load_digits_source(image_size: int, seed: int, val_fraction: float) -> Source:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    gray = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8), 0..16 -> 0..255
    rgb = _resize_all(np.repeat(gray[..., None], 3, axis=3), image_size)
    labels = d.target.astype(np.int64)
    idx = np.arange(len(labels))
    tr, va = train_test_split(idx, test_size=val_fraction, stratify=labels, random_state=seed)
    tr, va = np.sort(tr), np.sort(va)
    origin = "sklearn.datasets.load_digits"
    return Source(
        [str(c) for c in d.target_names],
        ArraySplit(rgb[tr], labels[tr], origin),
        ArraySplit(rgb[va], labels[va], origin),
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Allows only what the CIFAR pickles hold: dicts, lists, bytes and numpy arrays."""

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> type:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core") :]
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"missing CIFAR file: {path}")
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:
        raise DataError(f"cannot read CIFAR pickle {path}: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} does not hold a CIFAR dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickle -> images (N, 32, 32, 3) uint8 and labels (N,) int64."""
    d = _load_pickle(path)
    try:
        data = np.asarray(d["data"], dtype=np.uint8)
        labels = np.asarray(d[label_key], dtype=np.int64)
    except KeyError as e:
        raise DataError(f"{path} has no {e} entry (not a CIFAR batch)") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"{path}: expected data (N, 3072) and N labels, got {data.shape}")
    # rows are 1024 red, 1024 green, 1024 blue values, each 32x32 row-major
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar_source(name: str, root: Path, image_size: int) -> Source:
    if name == "cifar10":
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        val_file, meta_file, label_key, names_key = (
            "test_batch",
            "batches.meta",
            "labels",
            "label_names",
        )
    else:
        train_files = ["train"]
        val_file, meta_file, label_key = "test", "meta", "fine_labels"
        names_key = "fine_label_names"
    meta = _load_pickle(root / meta_file)
    if names_key not in meta:
        raise DataError(f"{root / meta_file} has no {names_key!r} entry")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[names_key]]
    parts = [_cifar_batch(root / f, label_key) for f in train_files]
    x_val, y_val = _cifar_batch(root / val_file, label_key)
    x_tr, y_tr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    for y, f in ((y_tr, train_files[0]), (y_val, val_file)):
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise DataError(f"{root / f}: labels outside 0..{len(classes) - 1}")
    return Source(
        classes,
        ArraySplit(_resize_all(x_tr, image_size), y_tr, str(root)),
        ArraySplit(_resize_all(x_val, image_size), y_val, str(root / val_file)),
    )


# -- image folders -------------------------------------------------------------------


def _zip_listing(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"cannot open zip file {path}: {e}") from None


def _dir_listing(root: Path) -> list[str]:
    """Posix paths relative to root; folders end with '/' (as zip listings do)."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out.append(rel + "/" if p.is_dir() else rel)
    return out


def _scan_split(listing: list[str], prefix: str, where: str) -> dict[str, list[str]]:
    """Image paths under `prefix` grouped by class (the first folder below prefix).

    Raises DataError for a class folder without images or files outside class folders.
    """
    by_class: dict[str, list[str]] = {}
    for name in listing:
        if not name.startswith(prefix) or name == prefix:
            continue
        parts = name[len(prefix) :].rstrip("/").split("/")  # plain string ops: 1M names
        if any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue
        if name.endswith("/"):
            if len(parts) == 1:
                by_class.setdefault(parts[0], [])
            continue
        if os.path.splitext(parts[-1])[1].lower() not in IMAGE_EXTENSIONS:
            continue
        if len(parts) < 2:
            raise DataError(f"{where}: image {name} is not inside a class folder")
        by_class.setdefault(parts[0], []).append(name)
    for c, files in by_class.items():
        if not files:
            raise DataError(f"{where}: empty class folder {prefix}{c}/ (no images)")
    return {c: sorted(f) for c, f in sorted(by_class.items())}


def _split_entries(root: Path) -> tuple[tuple[str, list[str], str], tuple[str, list[str], str]]:
    """Locate the train and val trees -> ((container, listing, prefix), same for val)."""
    if root.is_file():
        if root.suffix.lower() != ".zip":
            raise DataError(f"{root}: expected a folder or a .zip file")
        listing = _zip_listing(root)
        tops = {n.split("/")[0] + "/" for n in listing if "/" in n}
        for base in ["", *sorted(tops)]:
            vals = [v for v in VAL_NAMES if any(n.startswith(f"{base}{v}/") for n in listing)]
            if any(n.startswith(f"{base}train/") for n in listing) and vals:
                return (str(root), listing, f"{base}train/"), (
                    str(root),
                    listing,
                    f"{base}{vals[0]}/",
                )
        raise DataError(f"{root}: expected train/<class>/* and val/<class>/* (or test/) inside")
    if (root / "train").is_dir():
        val = next((root / v for v in VAL_NAMES if (root / v).is_dir()), None)
        if val is None:
            raise DataError(f"{root}: has train/ but no val/ or test/ folder")
        return (str(root / "train"), _dir_listing(root / "train"), ""), (
            str(val),
            _dir_listing(val),
            "",
        )
    val_zip = next((root / f"{v}.zip" for v in VAL_NAMES if (root / f"{v}.zip").is_file()), None)
    if (root / "train.zip").is_file() and val_zip is not None:
        out = []
        for path, split in ((root / "train.zip", "train"), (val_zip, val_zip.stem)):
            listing = _zip_listing(path)
            inner = any(n.startswith(f"{split}/") for n in listing)
            out.append((str(path), listing, f"{split}/" if inner else ""))
        return out[0], out[1]
    raise DataError(
        f"{root}: expected train/ and val/ (or test/) folders, a .zip of them, "
        "or train.zip with val.zip or test.zip"
    )


def load_imagefolder_source(root: Path, image_size: int, encoding: str) -> Source:
    (tc, tl, tp), (vc, vl, vp) = _split_entries(root)
    train = _scan_split(tl, tp, tc)
    val = _scan_split(vl, vp, vc)
    if not train:
        raise DataError(f"{tc}: no class folders with images under {tp or './'}")
    classes = list(train)
    unknown = sorted(set(val) - set(classes))
    if unknown:
        raise DataError(f"{vc}: validation classes {unknown} are not training classes")

    def split(container: str, by_class: dict[str, list[str]]) -> FileSplit:
        files = [(container, f) for c in classes for f in by_class.get(c, [])]
        labels = np.asarray(
            [i for i, c in enumerate(classes) for _ in by_class.get(c, [])], np.int64
        )
        return FileSplit(files, labels, image_size, encoding)

    return Source(classes, split(tc, train), split(vc, val))


def load_source(
    source: str, root: Path | None, image_size: int, seed: int, val_fraction: float, encoding: str
) -> Source:
    if source == "digits":
        return load_digits_source(image_size, seed, val_fraction)
    if root is None:
        raise DataError(f"source {source!r} needs a root path")
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data root not found: {root}")
    if source in ("cifar10", "cifar100"):
        if not root.is_dir():
            raise DataError(f"{root}: expected the folder of the {source} python pickles")
        return load_cifar_source(source, root, image_size)
    return load_imagefolder_source(root, image_size, encoding)
