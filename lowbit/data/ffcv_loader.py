"""The FFCV backend: ffcv.loader.Loader with per-epoch deterministic augmentation.

Pipelines (image field):
    CPU:  decode [+ crop/flip] -> NormalizeToCHW (lookup table, new NCHW array) -> ToTensor
    CUDA: decode [+ crop/flip] -> ToTensor -> ToDevice -> ToTorchImage(channels_last),
          then (x - mean) / std on the GPU here (FFCV's GPU NormalizeImage needs cupy).
Decoders: fixed-size data -> SimpleRGBImageDecoder; otherwise centre crop (val, "none")
or SeededRandomResizedCropDecoder (imagenet training). Imported only when used.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from ffcv.fields.decoders import CenterCropRGBImageDecoder, IntDecoder, SimpleRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.loader.epoch_iterator import EpochIterator
from ffcv.pipeline.compiler import Compiler
from ffcv.transforms import ToDevice, ToTensor, ToTorchImage
from ffcv.traversal_order import QuasiRandom

from lowbit import distributed
from lowbit.data import augment as aug
from lowbit.data.ffcv_ops import (
    KeyCell,
    NormalizeToCHW,
    SeededPadCropFlip,
    SeededRandomResizedCropDecoder,
)
from lowbit.data.loaders import CIFAR_PAD, VAL_CROP_RATIO, LoaderSpec, normalize_lut
from lowbit.data.store import BetonStore
from lowbit.data.torch_loader import val_shard


def _image_pipeline(spec: LoaderSpec, cell: KeyCell) -> list:
    cuda = spec.device.type == "cuda"
    if spec.size is None:
        ops: list = [SimpleRGBImageDecoder()]
    elif spec.augment == "imagenet" and spec.train:
        ops = [SeededRandomResizedCropDecoder((spec.size, spec.size), cell)]
    else:
        ratio = VAL_CROP_RATIO if spec.augment == "imagenet" else 1.0
        ops = [CenterCropRGBImageDecoder((spec.size, spec.size), ratio)]
    if spec.train and spec.augment in ("cifar", "imagenet"):
        ops.append(SeededPadCropFlip(cell, CIFAR_PAD if spec.augment == "cifar" else 0))
    if cuda:
        ops += [
            ToTensor(),
            ToDevice(spec.device, non_blocking=True),
            ToTorchImage(channels_last=True),
        ]
    else:
        ops += [NormalizeToCHW(normalize_lut(spec.meta)), ToTensor()]
    return ops


def _label_pipeline(spec: LoaderSpec) -> list:
    ops: list = [IntDecoder(), ToTensor()]
    if spec.device.type == "cuda":
        ops.append(ToDevice(spec.device, non_blocking=True))
    return ops


class _DeviceEpochIterator(EpochIterator):
    """FFCV's epoch thread, bound to the loader's CUDA device before it runs: it records
    the events that guard FFCV's output buffers on the current device's stream."""

    def run(self) -> None:
        distributed.bind(self.loader.cuda_device)  # type: ignore[attr-defined]
        super().run()


class _DeviceLoader(Loader):
    """ffcv.loader.Loader whose epochs run on `cuda_device` (None: the CPU), in the
    calling thread (FFCV's streams and the stream it waits on) and in its own thread."""

    def __init__(self, *args: object, cuda_device: torch.device | None, **kwargs: object) -> None:
        self.cuda_device = cuda_device
        super().__init__(*args, **kwargs)

    def __iter__(self) -> EpochIterator:
        # Loader.__iter__ of ffcv 1.0.2 (pinned), with the epoch thread bound to the device
        Compiler.set_num_threads(self.num_workers)
        order = self.next_traversal_order()
        selected_order = order[: len(self) * self.batch_size]
        self.next_epoch += 1
        if self.code is None or self.recompile:
            self.generate_code()
        distributed.bind(self.cuda_device)
        return _DeviceEpochIterator(self, selected_order)


def _cuda_device(device: torch.device) -> torch.device | None:
    """The loader's CUDA device with its index (a bare "cuda" is the current one)."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.device("cuda", index)


class FfcvLoader:
    """Iterable of (x float32 (N, 3, H, W), y int64 (N,)) with len() and set_epoch().

    Every yielded tensor is fresh memory (FFCV reuses its own output buffers a few
    batches later, so a caller keeping a batch would otherwise see it overwritten).
    """

    def __init__(self, spec: LoaderSpec) -> None:
        self.spec = spec
        self.cell = KeyCell()
        if spec.train:
            order = OrderOption.QUASI_RANDOM if spec.order == "quasi_random" else OrderOption.RANDOM
        else:
            order = OrderOption.SEQUENTIAL
        store = BetonStore(spec.path)  # a clear DataError for a damaged file, before FFCV
        threads = torch.get_num_threads()  # FFCV sets torch's thread count to num_workers
        # Validation over several ranks: each rank reads its own ids, unpadded (FFCV's
        # distributed SEQUENTIAL order pads like DistributedSampler, double-counting).
        shard = spec.distributed and not spec.train
        self.loader = _DeviceLoader(
            str(spec.path),
            cuda_device=_cuda_device(spec.device),
            batch_size=spec.batch_size,
            num_workers=max(1, spec.workers),
            os_cache=spec.order != "quasi_random",  # QUASI_RANDOM pays off with its own cache
            order=order,
            distributed=spec.distributed and not shard,
            indices=val_shard(len(store.labels)) if shard else None,
            seed=spec.seed,
            pipelines={"image": _image_pipeline(spec, self.cell), "label": _label_pipeline(spec)},
            drop_last=spec.train,
        )
        torch.set_num_threads(threads)
        # CUDA: normalised by arithmetic on the GPU (float32, within an ulp of the table;
        # a table gather would need an int64 index as large as 2x the float batch)
        mean = torch.tensor(spec.meta.mean, dtype=torch.float32) * 255
        std = torch.tensor(spec.meta.std, dtype=torch.float32).clamp_min(1 / 255) * 255
        self.mean, self.std = (t.view(1, 3, 1, 1).to(spec.device) for t in (mean, std))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The next iteration yields epoch `epoch`; later iterations count on from it."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        self.cell.set(aug.epoch_key(self.spec.seed, epoch))
        self.loader.next_epoch = epoch  # FFCV's orders are functions of (seed, epoch) ...
        if isinstance(self.loader.traversal_order, QuasiRandom):
            # ... except that QUASI_RANDOM shuffles its page table in place, so its order
            # would also depend on the epochs drawn before; rebuild the table first.
            self.loader.traversal_order.prepare_data_structures()
        threads = torch.get_num_threads()
        try:
            cuda = self.spec.device.type == "cuda"
            for i, (x, y) in enumerate(self.loader):
                if i == 0:  # FFCV's epoch thread set torch to num_workers threads by now
                    torch.set_num_threads(threads)
                if cuda:  # x: uint8 (N, 3, H, W) channels_last in FFCV's GPU buffer
                    x = x.float().sub_(self.mean).div_(self.std)  # new, still channels_last
                yield x, y.reshape(-1).clone()  # CPU x is already new: NormalizeToCHW
        finally:
            torch.set_num_threads(threads)
