"""meta.json: what a prepared dataset holds, and the checks that it is intact.

meta.json is written last (atomically) by prepare_dataset, so a folder without it is
an unfinished preparation; it records a sha256 and size per data file, so a truncated
or altered file is caught before any loader reads it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lowbit.checkpoint import atomic_write_json
from lowbit.errors import DataError

META_NAME = "meta.json"
SCHEMA = 1
SPLITS = ("train", "val")  # always written
# written beside them when prepare holds validation images out of the training set: the
# source's own evaluation images become `test`, reported but never used to choose
OPTIONAL_SPLITS = ("test",)
FULL_HASH_LIMIT = 1 << 30  # verify="auto": sha256 up to 1 GiB per file, size only above


@dataclass(frozen=True)
class DatasetMeta:
    source: str
    root: str | None
    classes: list[str]
    num_classes: int
    counts: dict[str, int]  # samples per split
    mean: list[float]  # per channel (R, G, B) over the stored train pixels, in [0, 1] units
    std: list[float]  # population std, same units
    image_size: int  # raw: every image is image_size^2; jpeg: longer side <= image_size
    encoding: str  # "raw" | "jpeg"
    format: str  # "beton" (FFCV) | "npz" (plain numpy store, written without FFCV)
    files: dict[str, dict[str, Any]]  # file name -> {"sha256": hex, "bytes": int}
    version: str  # lowbit version that wrote it
    fixed_shape: list[int] | None = None  # [H, W] when every stored image has it
    jpeg_quality: int = 90
    seed: int = 0
    val_fraction: float | None = None  # digits only
    train_per_class: int | None = None
    ffcv_version: str | None = None
    schema: int = SCHEMA
    extra: dict[str, Any] = field(default_factory=dict)

    def splits(self) -> tuple[str, ...]:
        """The splits this preparation wrote: train, val, and test when it held out
        validation images."""
        return SPLITS + tuple(s for s in OPTIONAL_SPLITS if s in self.counts)

    def data_file(self, split: str) -> str:
        return f"{split}.{self.format}"

    def write(self, data_dir: Path) -> None:
        atomic_write_json(Path(data_dir) / META_NAME, asdict(self))

    def recipe(self) -> dict[str, Any]:
        """What a run trained on, for its run.json: the same for every seed of one
        params.yaml (no seed, no file digests, no pixel statistics of the seed's subset),
        different for another subset size, image size or encoding."""
        keys = ("source", "num_classes", "counts", "image_size", "encoding", "jpeg_quality",
                "val_fraction", "train_per_class", "extra")  # fmt: skip
        return {k: getattr(self, k) for k in keys}

    @classmethod
    def load(cls, data_dir: Path) -> DatasetMeta:
        path = Path(data_dir) / META_NAME
        if not path.is_file():
            raise DataError(
                f"{path} not found: {data_dir} is not a prepared dataset "
                "(run prepare_dataset / `lowbit stage prepare` first)"
            )
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read {path}: {e}") from None
        if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
            raise DataError(f"{path}: not a lowbit dataset description (schema {SCHEMA})")
        names = {f.name for f in fields(cls)}
        missing = sorted(n for n in ("source", "classes", "files", "mean", "std") if n not in raw)
        if missing:
            raise DataError(f"{path}: missing keys {missing}")
        try:
            return cls(**{k: v for k, v in raw.items() if k in names})
        except TypeError as e:
            raise DataError(f"{path}: {e}") from None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def verify_files(meta: DatasetMeta, data_dir: Path, verify: str = "auto") -> None:
    """Check each data file against meta.json: size always; sha256 for verify="full",
    or "auto" with files up to 1 GiB (hashing ImageNet on every start costs minutes)."""
    if verify not in ("auto", "full", "size"):
        raise DataError(f"verify must be 'auto', 'full' or 'size', got {verify!r}")
    for split in meta.splits():
        name = meta.data_file(split)
        path = Path(data_dir) / name
        rec = meta.files.get(name)
        if rec is None:
            raise DataError(f"{Path(data_dir) / META_NAME} lists no {name}")
        if not path.is_file():
            raise DataError(f"missing data file {path} (listed in meta.json)")
        size = path.stat().st_size
        if size != rec["bytes"]:
            raise DataError(
                f"{path} has {size} bytes, meta.json says {rec['bytes']}: "
                "truncated or replaced; prepare the dataset again"
            )
        full = verify == "full" or (verify == "auto" and size <= FULL_HASH_LIMIT)
        if full and sha256_file(path) != rec["sha256"]:
            raise DataError(
                f"{path} is corrupt: sha256 differs from meta.json; prepare the dataset again"
            )
