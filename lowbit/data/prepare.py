"""prepare_dataset: a source -> out_dir/{train,val}.{beton|npz} + meta.json.

Crash safety: the data files are written under temporary names and renamed only when
both are complete; an old meta.json is removed before the renames and the new one is
written last, so a folder never holds a meta.json that describes missing or partial
files.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

import lowbit
from lowbit.data.backend import ffcv_available, ffcv_version
from lowbit.data.meta import META_NAME, OPTIONAL_SPLITS, SPLITS, DatasetMeta, file_record
from lowbit.data.sources import SOURCES, Source, load_source
from lowbit.data.splits import Split, per_class_holdout, per_class_subset
from lowbit.data.writer import mean_std, write_npz
from lowbit.errors import ConfigError, DataError


def _check_args(source: str, image_size: int, val_fraction: float, encoding: str,
                jpeg_quality: int, fmt: str) -> None:  # fmt: skip
    if source not in SOURCES:
        raise ConfigError(f"unknown data source {source!r}; expected one of {list(SOURCES)}")
    if encoding not in ("raw", "jpeg"):
        raise ConfigError(f"encoding must be 'raw' or 'jpeg', got {encoding!r}")
    if fmt not in ("auto", "beton", "npz"):
        raise ConfigError(f"format must be 'auto', 'beton' or 'npz', got {fmt!r}")
    if not 8 <= image_size <= 4096:
        raise ConfigError(f"image_size must be in 8..4096 pixels, got {image_size}")
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if not 1 <= jpeg_quality <= 100:
        raise ConfigError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")


def _resolve_format(fmt: str) -> str:
    if fmt == "auto":
        if ffcv_available():
            return "beton"
        warnings.warn(
            "FFCV is not importable; writing the plain .npz store (torch loaders only)",
            RuntimeWarning,
            stacklevel=3,
        )
        return "npz"
    if fmt == "beton" and not ffcv_available():
        raise DataError("format='beton' needs FFCV, which cannot be imported here")
    return fmt


def _write_split(split: Split, path: Path, fmt: str, o: PrepareOptions) -> np.ndarray:
    if fmt == "npz":
        return write_npz(split, path, o.encoding, o.jpeg_quality, o.timeout_s)
    from lowbit.data.ffcv_writer import write_beton

    max_bytes = o.image_size * o.image_size * 3  # a raw sample; a JPEG of it is smaller
    return write_beton(split, path, (o.encoding, o.jpeg_quality), o.workers, o.timeout_s, max_bytes)


def _select(src: Source, o: PrepareOptions) -> dict[str, Split]:
    """The splits to write: class-balanced seeded subsets where asked for. With
    holdout_per_class, `val` is held out of the training source (its images never in
    `train`) and the source's own evaluation images become `test`."""
    for name, k in (("train", o.train_per_class), ("val", o.val_per_class),
                    ("holdout", o.holdout_per_class)):  # fmt: skip
        if k is not None and k < 1:
            raise ConfigError(f"{name}_per_class must be >= 1, got {k}")
    evaluation = src.val
    if o.val_per_class is not None:
        evaluation = evaluation.subset(per_class_subset(evaluation.labels, o.val_per_class, o.seed))
    if o.holdout_per_class is None:
        train = src.train
        if o.train_per_class is not None:
            train = train.subset(per_class_subset(train.labels, o.train_per_class, o.seed))
        return {"train": train, "val": evaluation}
    keep, held = per_class_holdout(src.train.labels, o.train_per_class, o.holdout_per_class, o.seed)
    return {"train": src.train.subset(keep), "val": src.train.subset(held), "test": evaluation}


def _commit(out_dir: Path, temps: dict[str, Path], fmt: str, meta: DatasetMeta) -> None:
    """Rename the finished temp files into place; meta.json goes last."""
    (out_dir / META_NAME).unlink(missing_ok=True)  # the old set stops looking complete
    for n in temps:
        os.replace(temps[n], out_dir / f"{n}.{fmt}")
    for n in (*SPLITS, *OPTIONAL_SPLITS):  # an earlier preparation's other files
        for f in ("npz", "beton"):
            if n not in temps or f != fmt:
                (out_dir / f"{n}.{f}").unlink(missing_ok=True)
    meta.write(out_dir)


@dataclass(frozen=True)
class PrepareOptions:
    """How a source is prepared (lowbit.config.Prepare feeds it from params.yaml).

    format: "beton" (FFCV), "npz" (plain numpy store for the torch backend) or "auto"
    (beton when FFCV imports). train_per_class / val_per_class: class-balanced subsets.
    """

    image_size: int = 32
    seed: int = 0
    val_fraction: float = 0.2  # digits only
    train_per_class: int | None = None
    encoding: str = "raw"
    jpeg_quality: int = 90
    workers: int = 2
    timeout_s: float = 600
    format: str = "auto"
    val_per_class: int | None = None
    holdout_per_class: int | None = None  # validation images held out of the training set


def _subsets(o: PrepareOptions) -> dict[str, int | None]:
    return {"val_per_class": o.val_per_class, "holdout_per_class": o.holdout_per_class}


def prepare_dataset(
    source: str,
    root: Path | None,
    out_dir: Path,
    options: PrepareOptions | None = None,
    **overrides: Any,
) -> DatasetMeta:
    """Read `source`, write out_dir/train.<fmt>, out_dir/val.<fmt>, then out_dir/meta.json.

    `options` (or its fields as keywords): see PrepareOptions. Raises DataError (naming
    the file) for a missing root, a wrong layout, an empty class folder, an unreadable
    image or pickle, a timeout; ConfigError for bad arguments.
    """
    o = replace(options or PrepareOptions(), **overrides)
    _check_args(source, o.image_size, o.val_fraction, o.encoding, o.jpeg_quality, o.format)
    fmt = _resolve_format(o.format)
    src = load_source(source, root, o.image_size, o.seed, o.val_fraction, o.encoding)
    splits = _select(src, o)
    for name, split in splits.items():
        if len(split) == 0:
            raise DataError(f"the {name} split of {root or source} has no images")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    temps: dict[str, Path] = {}
    try:
        stats = {}
        for name, split in splits.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.{fmt}.", suffix=".tmp", dir=out_dir)
            os.close(fd)
            temps[name] = Path(tmp)
            stats[name] = _write_split(split, temps[name], fmt, o)
        meta = _meta(source, root, src.classes, splits, stats, (fmt, temps, o))
        _commit(out_dir, temps, fmt, meta)
        return meta
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def _meta(source: str, root: Path | None, classes: list, splits: dict, stats: dict,
          written: tuple) -> DatasetMeta:  # fmt: skip
    """meta.json of a preparation: counts, normalisation, files, how it was made."""
    fmt, temps, o = written
    mean, std = mean_std(stats["train"])
    shapes = np.concatenate([s[:, 6:8] for s in stats.values()]).astype(int)
    fixed = (shapes == shapes[0]).all()
    return DatasetMeta(
        source=source,
        root=None if root is None else str(Path(root).expanduser().resolve()),
        classes=classes,
        num_classes=len(classes),
        counts={n: len(s) for n, s in splits.items()},
        mean=mean,
        std=std,
        image_size=o.image_size,
        encoding=o.encoding,
        format=fmt,
        files={f"{n}.{fmt}": file_record(temps[n]) for n in splits},
        version=lowbit.__version__,
        fixed_shape=[int(v) for v in shapes[0]] if fixed else None,
        jpeg_quality=o.jpeg_quality,
        seed=o.seed,
        val_fraction=o.val_fraction if source == "digits" else None,
        train_per_class=o.train_per_class,
        ffcv_version=ffcv_version() if fmt == "beton" else None,
        extra={k: v for k, v in _subsets(o).items() if v},
    )
