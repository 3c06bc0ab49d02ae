"""A split is an indexable of (uint8 HWC image, int label), decoded lazily.

Both writers (FFCV's worker processes and the plain .npz writer) consume splits, so
decoding and resizing happen once, in whichever process writes the sample.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lowbit.errors import DataError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif"}
)


def fit_image(img: Image.Image, image_size: int, encoding: str) -> np.ndarray:
    """Shape one decoded image for storage -> (H, W, 3) uint8, C-contiguous.

    raw: exactly image_size x image_size (shorter side resized to image_size, then a
    centred crop), so the FFCV loader can use its fixed-size decoder. jpeg: shrunk so
    the longer side is at most image_size (aspect kept, never enlarged), as FFCV's
    ImageNet example stores images for random-resized-crop.
    """
    img = img.convert("RGB")
    w, h = img.size
    if encoding == "raw":
        if (w, h) != (image_size, image_size):
            s = image_size / min(w, h)
            nw, nh = max(image_size, round(w * s)), max(image_size, round(h * s))
            left, top = (nw - image_size) // 2, (nh - image_size) // 2
            img = img.resize((nw, nh), Image.BILINEAR)
            img = img.crop((left, top, left + image_size, top + image_size))
    elif max(w, h) > image_size:
        s = image_size / max(w, h)
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


class Split:
    """Interface: len(), labels (N,) int64, image(i) -> (H, W, 3) uint8, name(i)."""

    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def name(self, i: int) -> str:
        raise NotImplementedError

    def subset(self, indices: np.ndarray) -> Split:
        raise NotImplementedError


@dataclass
class ArraySplit(Split):
    """Images already in memory (digits, CIFAR pickles): (N, H, W, 3) uint8."""

    images: np.ndarray
    labels: np.ndarray
    origin: str  # the file the images came from, for messages

    def image(self, i: int) -> np.ndarray:
        return self.images[i]

    def name(self, i: int) -> str:
        return f"{self.origin}[{i}]"

    def subset(self, indices: np.ndarray) -> ArraySplit:
        return ArraySplit(self.images[indices], self.labels[indices], self.origin)


class ZipReader:
    """Reads members of one zip file; reopens the file in each process.

    A ZipFile inherited through fork shares its file offset with the parent and the
    other FFCV writer workers, so concurrent reads would interleave; one handle per
    process avoids that.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._pid = -1
        self._zf: zipfile.ZipFile | None = None

    def read(self, member: str) -> bytes:
        if self._zf is None or self._pid != os.getpid():
            self._zf = zipfile.ZipFile(self.path)
            self._pid = os.getpid()
        return self._zf.read(member)

    def __getstate__(self) -> dict:
        return {"path": self.path, "_pid": -1, "_zf": None}


@dataclass
class FileSplit(Split):
    """Image files in a folder or zip members: (container, member) per sample."""

    files: list[tuple[str, str]]  # (folder or zip path, path inside it)
    labels: np.ndarray
    image_size: int
    encoding: str
    _zips: dict[str, ZipReader] = field(default_factory=dict, repr=False)

    def _bytes(self, i: int) -> bytes:
        container, member = self.files[i]
        if container.endswith(".zip"):
            if container not in self._zips:
                self._zips[container] = ZipReader(Path(container))
            return self._zips[container].read(member)
        return (Path(container) / member).read_bytes()

    def image(self, i: int) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(self._bytes(i))) as img:
                img.load()  # decode now: truncated files fail here, not later
                return fit_image(img, self.image_size, self.encoding)
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ...
            raise DataError(f"cannot read image {self.name(i)}: {e}") from None

    def name(self, i: int) -> str:
        container, member = self.files[i]
        sep = "!" if container.endswith(".zip") else "/"
        return f"{container}{sep}{member}"

    def subset(self, indices: np.ndarray) -> FileSplit:
        files = [self.files[int(i)] for i in indices]
        return FileSplit(files, self.labels[indices], self.image_size, self.encoding)


def per_class_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of a seeded, class-balanced subset: min(per_class, n_c) samples of every
    class c, in their original order (so the written file keeps the source order)."""
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def per_class_holdout(labels: np.ndarray, per_class: int | None, holdout: int,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(train, held-out) indices, disjoint and class-balanced. Each class draws the same
    seeded permutation as per_class_subset, so the training subset is the one
    per_class_subset(labels, per_class, seed) gives whenever the class has images to
    spare; the held-out images come from the end of the permutation, i.e. first from
    images the subset does not use. Without per_class, train is every image not held out.
    """
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(labels):
        perm = rng.permutation(np.flatnonzero(labels == c))
        if holdout >= len(perm):
            raise DataError(
                f"class {c} has {len(perm)} training images: cannot hold out {holdout} "
                "per class for validation and keep any for training"
            )
        rest = len(perm) - holdout
        train.append(perm[: rest if per_class is None else min(per_class, rest)])
        held.append(perm[rest:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))
