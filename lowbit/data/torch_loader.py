"""The torch backend: a DataLoader whose workers build whole batches.

Used where FFCV is missing (or backend="torch"). It reproduces the FFCV backend's
order (numpy's default_rng(seed + epoch) permutation, FFCV's RANDOM order), crop and
flip (augment.py) and normalisation (the same lookup table), so for fixed-size raw data
both backends yield identical batches. quasi_random is served as random here.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from lowbit.data import augment as aug
from lowbit.data.loaders import CIFAR_PAD, VAL_CROP_RATIO, LoaderSpec, normalize_lut
from lowbit.data.store import Store, open_store


def val_shard(n: int) -> np.ndarray:
    """This rank's validation ids: every world-th from its rank, without the padding a
    DistributedSampler adds (padded duplicates would be counted twice in the top-1)."""
    import torch.distributed as dist

    return np.arange(dist.get_rank(), n, dist.get_world_size())


def epoch_order(n: int, spec: LoaderSpec, epoch: int) -> np.ndarray:
    """Sample ids of one epoch on this rank, as FFCV's RANDOM / SEQUENTIAL orders."""
    if spec.distributed and not spec.train:
        return val_shard(n)
    if spec.distributed:
        sampler = DistributedSampler(range(n), shuffle=spec.train, seed=spec.seed, drop_last=False)
        sampler.set_epoch(epoch)
        return np.asarray(list(sampler), np.int64)
    if not spec.train:
        return np.arange(n)
    return np.random.default_rng(spec.seed + epoch).permutation(n)


class EpochBatches(Sampler[tuple[int, list[int]]]):
    """Yields (epoch, sample ids of one batch); drops the partial batch in training.

    The epoch travels with every batch request, so persistent DataLoader workers (which
    hold a copy of the dataset made once) still augment for the right epoch.
    """

    def __init__(self, n: int, spec: LoaderSpec) -> None:
        self.n, self.spec, self.epoch = n, spec, 0

    def __len__(self) -> int:
        m = len(epoch_order(self.n, self.spec, 0)) if self.spec.distributed else self.n
        b = self.spec.batch_size
        return m // b if self.spec.train else -(-m // b)

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        epoch = self.epoch
        order = epoch_order(self.n, self.spec, epoch)
        b = self.spec.batch_size
        order = order[: len(self) * b]
        for s in range(0, len(order), b):
            yield epoch, order[s : s + b].tolist()


class BatchDataset(Dataset):
    """dataset[(epoch, ids)] -> (float32 (n, 3, H, W), int64 (n,)): augmented for that
    epoch and normalised, in the worker process."""

    def __init__(self, store: Store, spec: LoaderSpec) -> None:
        self.store, self.spec = store, spec
        self.lut = normalize_lut(spec.meta)  # (256, 3) float32

    def __len__(self) -> int:
        return len(self.store)

    def _crop(self, i: int, key: np.uint64) -> np.ndarray:
        """One decoded image cropped and resized to out_shape (variable-size or imagenet)."""
        img = self.store.image(i)
        h, w = img.shape[:2]
        if self.spec.augment == "imagenet" and self.spec.train:
            scale, logr = (0.08, 1.0), (np.log(3 / 4), np.log(4 / 3))
            with np.errstate(over="ignore"):
                top, left, ch, cw = aug.rrc_box(h, w, key, np.uint64(i), *scale, *logr)
        else:
            ratio = VAL_CROP_RATIO if self.spec.augment == "imagenet" else 1.0
            top, left, ch, cw = aug.center_box(h, w, ratio)
        oh, ow = self.spec.out_shape
        crop = Image.fromarray(img).resize(
            (ow, oh), Image.BILINEAR, box=(left, top, left + cw, top + ch)
        )
        return np.asarray(crop)

    def __getitem__(self, item: tuple[int, list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, ids = item
        idx = np.asarray(ids, np.int64)
        key = aug.epoch_key(self.spec.seed, epoch)
        fixed_raw = self.spec.size is None and not self.store.jpeg[idx].any()
        if fixed_raw:
            x = self.store.gather_raw(idx)
        elif self.spec.size is None:
            x = np.stack([self.store.image(int(i)) for i in idx])
        else:
            x = np.stack([self._crop(int(i), key) for i in idx])
        if self.spec.train and self.spec.augment == "cifar":
            x = aug.pad_crop_flip_batch(x, idx, key, CIFAR_PAD)
        elif self.spec.train and self.spec.augment == "imagenet":
            x = aug.flip_batch(x, idx, key)
        # per-channel np.take: ~1.5 ms per 256 CIFAR images, 30x faster than torch indexing
        x = np.stack([self.lut[:, c].take(x[..., c]) for c in range(3)], 1)
        return torch.from_numpy(x), torch.from_numpy(self.store.labels[idx])


class TorchLoader:
    """Iterable of (x float32 (N, 3, H, W), y int64 (N,)) with len() and set_epoch()."""

    def __init__(self, spec: LoaderSpec) -> None:
        self.spec = spec
        self.dataset = BatchDataset(open_store(spec.path), spec)
        self.batches = EpochBatches(len(self.dataset), spec)
        self.loader = DataLoader(
            self.dataset,
            batch_size=None,  # the sampler yields whole batches
            sampler=self.batches,
            num_workers=spec.workers,
            pin_memory=spec.device.type == "cuda",
            persistent_workers=spec.workers > 0,  # start the worker processes once
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The next iteration yields epoch `epoch`; later iterations count on from it."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.batches.epoch, self.epoch = self.epoch, self.epoch + 1
        dev = self.spec.device
        for x, y in self.loader:
            x = x.to(dev, non_blocking=True)  # (N, 3, H, W) float32
            if dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(dev, non_blocking=True)
