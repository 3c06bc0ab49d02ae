"""build_loaders: a prepared dataset -> (train, val) loaders for the engine.

Both backends yield (x, y): x float32 (N, 3, H, W) normalised with meta.json's mean and
std, y int64 (N,); both have len() (batches per epoch) and set_epoch(epoch). The
training order and every augmentation draw are functions of (seed, epoch, sample id)
only, so an epoch can be replayed exactly (resume == uninterrupted), and on the CPU
the two backends yield identical batches for fixed-size raw data.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist

from lowbit.data.backend import ffcv_available, ffcv_unavailable_reason
from lowbit.data.cpus import bound_workers
from lowbit.data.meta import DatasetMeta, verify_files
from lowbit.errors import ConfigError, DataError

AUGMENTS = ("auto", "cifar", "imagenet", "none")
ORDERS = ("random", "quasi_random")
CIFAR_PAD = 4  # pixels of zero padding for the random crop (He et al. 2016)
VAL_CROP_RATIO = 224 / 256  # ImageNet evaluation: centre crop of 87.5 % of the short side


class EpochLoader(Protocol):
    """What the engine consumes: batches, their count, and the epoch to produce next."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...


@dataclass(frozen=True)
class LoaderSpec:
    """Everything a backend needs to build one loader (resolved, validated)."""

    path: Path  # the split's data file
    meta: DatasetMeta
    train: bool
    batch_size: int
    workers: int
    device: torch.device
    seed: int
    augment: str  # "cifar" | "imagenet" | "none" (resolved)
    order: str
    distributed: bool
    size: int | None  # output side in pixels; None: the stored fixed shape

    @property
    def out_shape(self) -> tuple[int, int]:
        """(H, W) of every output image."""
        if self.size is None:
            assert self.meta.fixed_shape is not None
            h, w = self.meta.fixed_shape
            return int(h), int(w)
        return self.size, self.size


def normalize_lut(meta: DatasetMeta) -> np.ndarray:
    """(256, 3) float32: (v - mean_c) / std_c for every uint8 value v and channel c.

    The FFCV backend (ffcv_ops.NormalizeToCHW) and the torch backend both read this
    table (FFCV NormalizeImage's formula), so they normalise bit-identically.
    std is floored at 1/255 so a constant channel cannot produce inf.
    """
    mean = np.asarray(meta.mean, np.float64) * 255.0
    std = np.maximum(np.asarray(meta.std, np.float64), 1 / 255) * 255.0
    return ((np.arange(256)[:, None] - mean[None, :]) / std[None, :]).astype(np.float32)


def _resolve_backend(backend: str, meta: DatasetMeta) -> str:
    if backend not in ("auto", "ffcv", "torch"):
        raise ConfigError(f"backend must be 'auto', 'ffcv' or 'torch', got {backend!r}")
    if backend == "ffcv":
        if not ffcv_available():
            raise DataError(
                f"backend='ffcv' but FFCV cannot be imported: {ffcv_unavailable_reason()}"
            )
        if meta.format != "beton":
            raise DataError("backend='ffcv' needs .beton files; this dataset was prepared as .npz")
        return "ffcv"
    if backend == "auto":
        if meta.format == "beton" and ffcv_available():
            return "ffcv"
        why = ffcv_unavailable_reason() or "the dataset was prepared without FFCV (.npz)"
        warnings.warn(f"using the torch data loader, slower than FFCV ({why})", RuntimeWarning, 3)
    return "torch"  # reads .beton files with store.BetonStore, without FFCV


def _resolve_size(meta: DatasetMeta, augment: str, crop_size: int | None) -> int | None:
    """Output side: crop_size, else 224/256 of image_size for imagenet, else as stored."""
    if crop_size is not None:
        return crop_size
    if augment == "imagenet":
        return max(8, round(meta.image_size * VAL_CROP_RATIO))
    return None if meta.fixed_shape else meta.image_size


def _check(batch_size: int, workers: int, augment: str, order: str, distributed: bool) -> None:
    if batch_size < 1 or workers < 0:
        raise ConfigError(f"batch_size must be >= 1 and workers >= 0, got {batch_size}, {workers}")
    if augment not in AUGMENTS:
        raise ConfigError(f"augment must be one of {list(AUGMENTS)}, got {augment!r}")
    if order not in ORDERS:
        raise ConfigError(f"order must be one of {list(ORDERS)}, got {order!r}")
    if distributed and not (dist.is_available() and dist.is_initialized()):
        raise ConfigError("distributed=True needs torch.distributed to be initialised first")
    if distributed and order == "quasi_random":
        raise ConfigError("order='quasi_random' is not supported with distributed=True (FFCV)")


@dataclass(frozen=True)
class LoaderOptions:
    """How a prepared dataset is read.

    augment: "cifar" (random crop with 4-pixel zero padding + flip), "imagenet"
    (random-resized-crop + flip; val: resize + centre crop), "none", or "auto" (cifar up
    to 64 px, imagenet above). backend: "ffcv" | "torch" | "auto". crop_size: output
    side for imagenet / variable-size data (default: 224/256 of image_size). verify:
    "auto" | "full" | "size" (see meta.verify_files)."""

    workers: int = 2
    device: torch.device | str = "cpu"
    seed: int = 0
    augment: str = "auto"
    backend: str = "auto"
    distributed: bool = False
    order: str = "random"
    crop_size: int | None = None
    verify: str = "auto"


def build_loaders(
    data_dir: Path, batch_size: int, options: LoaderOptions | None = None, **overrides: Any
) -> tuple[EpochLoader, EpochLoader]:
    """(train_loader, val_loader) over a dataset written by prepare_dataset; `options`
    (or its fields as keywords): see LoaderOptions. Training drops the last partial
    batch; val keeps it."""
    o = replace(options or LoaderOptions(), **overrides)
    opened = _open(Path(data_dir), batch_size, o)
    meta = opened[0]
    if meta.counts["train"] < batch_size * (dist.get_world_size() if o.distributed else 1):
        raise DataError(
            f"{data_dir}: {meta.counts['train']} training samples are fewer than one batch "
            f"({batch_size}); training drops partial batches"
        )
    train = _loader(Path(data_dir), "train", opened, batch_size, o)
    return train, _loader(Path(data_dir), "val", opened, batch_size, o)


def build_eval_loader(
    data_dir: Path, split: str, batch_size: int, options: LoaderOptions | None = None
) -> EpochLoader | None:
    """An evaluation loader over another split (the held-out `test` images, when
    prepare wrote them; None when it did not), transformed like the val loader."""
    o = options or LoaderOptions()
    opened = _open(Path(data_dir), batch_size, o)
    if split not in opened[0].counts:
        return None
    return _loader(Path(data_dir), split, opened, batch_size, o)


Opened = tuple[DatasetMeta, str, str, int]  # meta, backend, resolved augment, workers


def _open(data_dir: Path, batch_size: int, o: LoaderOptions) -> Opened:
    """A prepared dataset, its files verified, and the workers its loaders get: at most
    one per CPU this process may use (lowbit.data.cpus)."""
    _check(batch_size, o.workers, o.augment, o.order, o.distributed)
    meta = DatasetMeta.load(data_dir)
    verify_files(meta, data_dir, o.verify)
    backend = _resolve_backend(o.backend, meta)
    augment = o.augment
    if augment == "auto":
        augment = "cifar" if meta.image_size <= 64 else "imagenet"
    return meta, backend, augment, bound_workers(o.workers)


def _loader(data_dir: Path, split: str, opened: Opened, batch_size: int,
            o: LoaderOptions) -> EpochLoader:  # fmt: skip
    meta, backend, augment, workers = opened
    train = split == "train"
    spec = LoaderSpec(
        path=data_dir / meta.data_file(split),
        meta=meta,
        train=train,
        batch_size=batch_size,
        workers=workers,
        device=torch.device(o.device),
        seed=o.seed,
        augment=augment if train else ("none" if augment == "cifar" else augment),
        order=o.order,
        distributed=o.distributed,
        size=_resolve_size(meta, augment, o.crop_size),
    )
    return _make_loader(spec, backend)


def _make_loader(spec: LoaderSpec, backend: str) -> EpochLoader:
    if backend == "ffcv":
        from lowbit.data.ffcv_loader import FfcvLoader

        return FfcvLoader(spec)
    from lowbit.data.torch_loader import TorchLoader

    return TorchLoader(spec)
