"""Random access to the samples of one prepared split, for the torch backend.

BetonStore reads FFCV's .beton layout with numpy alone (header, field descriptors,
per-sample metadata, data pages, allocation table; ffcv/types.py, format version 2),
so a dataset prepared where FFCV works also trains where it does not. NpzStore reads
the plain store of writer.py. Both give raw bytes per sample; decode() turns them
into (H, W, 3) uint8.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from lowbit.errors import DataError

BETON_VERSION = 2
_HEADER = np.dtype(
    [("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"),
     ("num_samples", "<u8"), ("alloc_table_ptr", "<u8")],
    align=True,
)  # fmt: skip
_FIELD_DESC = np.dtype(
    [("type_id", "<u1"), ("name", ("<u1", 16)), ("arguments", ("<u1", (1024,)))], align=True
)
_ALLOC = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])
_IMAGE_META = np.dtype([("mode", "<u1"), ("width", "<u2"), ("height", "<u2"), ("data_ptr", "<u8")])
_SAMPLE_META = np.dtype([("", _IMAGE_META), ("", "<i8")], align=True)  # f0 image, f1 label
_FIELDS = (("image", 2), ("label", 1))  # (name, FFCV type id): RGBImageField, IntField
_JPEG_MODE = 0  # FFCV's IMAGE_MODES["jpg"]; "raw" is 1


class Store:
    """labels (N,) int64; shapes (N, 2) (H, W); jpeg (N,) bool; raw(i) -> uint8 bytes."""

    path: Path
    labels: np.ndarray
    shapes: np.ndarray
    jpeg: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def raw(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def gather_raw(self, idx: np.ndarray) -> np.ndarray:
        """Fixed-size raw samples idx -> (n, H, W, 3) uint8 in one vectorised read."""
        h, w = (int(v) for v in self.shapes[0])
        starts = self._starts()[idx]
        flat = self._data()[starts[:, None] + np.arange(h * w * 3)]
        return flat.reshape(len(idx), h, w, 3)

    def _starts(self) -> np.ndarray:
        raise NotImplementedError

    def _data(self) -> np.ndarray:
        raise NotImplementedError

    def image(self, i: int) -> np.ndarray:
        """Sample i decoded -> (H, W, 3) uint8."""
        h, w = (int(v) for v in self.shapes[i])
        data = self.raw(i)
        if not self.jpeg[i]:
            return data.reshape(h, w, 3)
        try:
            with Image.open(io.BytesIO(data.tobytes())) as img:
                return np.asarray(img.convert("RGB"))
        except Exception as e:
            raise DataError(f"{self.path}: sample {i} is not a readable JPEG ({e})") from None


class BetonStore(Store):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        size = self.path.stat().st_size
        if size < _HEADER.itemsize:
            raise DataError(f"{self.path} is not an FFCV .beton file (too short)")
        header = np.fromfile(self.path, _HEADER, count=1)[0]
        n, n_fields = int(header["num_samples"]), int(header["num_fields"])
        if int(header["version"]) != BETON_VERSION or n_fields != len(_FIELDS):
            raise DataError(f"{self.path}: not a lowbit .beton (format {BETON_VERSION}, 2 fields)")
        desc = np.fromfile(self.path, _FIELD_DESC, count=n_fields, offset=_HEADER.itemsize)
        names = [bytes(d["name"]).split(b"\0")[0].decode("ascii", "replace") for d in desc]
        if list(zip(names, desc["type_id"].tolist(), strict=True)) != list(_FIELDS):
            raise DataError(f"{self.path}: fields {names}, expected image (RGB) and label (int)")
        meta_at = _HEADER.itemsize + desc.nbytes
        table_at = int(header["alloc_table_ptr"])
        if table_at > size or meta_at + n * _SAMPLE_META.itemsize > size:
            raise DataError(f"{self.path} is truncated")
        meta = np.fromfile(self.path, _SAMPLE_META, count=n, offset=meta_at)
        table = np.fromfile(self.path, _ALLOC, offset=table_at)
        img = meta["f0"]
        self.labels = meta["f1"].astype(np.int64)
        self.shapes = np.stack([img["height"], img["width"]], 1).astype(np.int64)
        self.jpeg = img["mode"] == _JPEG_MODE
        self.ptrs = img["data_ptr"].astype(np.int64)
        order = np.argsort(table["ptr"])  # sizes by pointer, as FFCV's memory managers
        ptrs, sizes = table["ptr"][order].astype(np.int64), table["size"][order].astype(np.int64)
        pos = np.searchsorted(ptrs, self.ptrs)
        if n and (pos.max() >= len(ptrs) or not np.array_equal(ptrs[pos], self.ptrs)):
            raise DataError(f"{self.path}: allocation table does not match the samples")
        self.sizes = sizes[pos] if n else np.zeros(0, np.int64)
        if n and int((self.ptrs + self.sizes).max()) > table_at:
            raise DataError(f"{self.path}: sample data runs past the end of the data region")
        self._mm: np.memmap | None = None

    def _data(self) -> np.ndarray:
        if self._mm is None:  # opened lazily: every DataLoader worker maps the file itself
            self._mm = np.memmap(self.path, np.uint8, mode="r")
        return self._mm

    def _starts(self) -> np.ndarray:
        return self.ptrs

    def raw(self, i: int) -> np.ndarray:
        return np.asarray(self._data()[self.ptrs[i] : self.ptrs[i] + self.sizes[i]])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_mm": None}


class NpzStore(Store):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            with np.load(self.path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("data", "offsets", "shapes", "labels", "jpeg")}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
            raise DataError(f"cannot read {self.path}: {e}") from None
        self.data, self.offsets = arrays["data"], arrays["offsets"].astype(np.int64)
        self.labels = arrays["labels"].astype(np.int64)
        self.shapes = arrays["shapes"].astype(np.int64)
        n = len(self.labels)
        if (
            len(self.offsets) != n + 1
            or len(self.shapes) != n
            or self.offsets[-1] != len(self.data)
        ):
            raise DataError(f"{self.path}: inconsistent store (offsets, shapes, labels)")
        self.jpeg = np.full(n, bool(arrays["jpeg"]))

    def _data(self) -> np.ndarray:
        return self.data

    def _starts(self) -> np.ndarray:
        return self.offsets[:-1]

    def raw(self, i: int) -> np.ndarray:
        return self.data[self.offsets[i] : self.offsets[i + 1]]


def open_store(path: Path) -> Store:
    return BetonStore(path) if Path(path).suffix == ".beton" else NpzStore(path)
