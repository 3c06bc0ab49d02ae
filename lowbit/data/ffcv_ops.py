"""FFCV pipeline operations with per-epoch deterministic augmentation.

FFCV's own RandomTranslate / RandomHorizontalFlip / RandomResizedCrop draw from numba's
per-thread RNGs, which are seeded from entropy in every new thread, so an epoch
cannot be replayed. These ops draw from augment.py's hash of (key, sample id, stream)
instead. The key changes every epoch without recompiling: numba freezes closure
arrays as constants, so the compiled code reads the key through the address of a
live one-element array (`KeyCell`), the same int-to-pointer cast FFCV uses for its
memory managers. Imported only when the FFCV backend is used.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import replace

import numba
import numpy as np
from ffcv.fields.rgb_image import IMAGE_MODES, ResizedCropRGBImageDecoder
from ffcv.libffcv import imdecode, resize_crop
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State
from ffcv.utils import cast_int_to_byte_ptr

from lowbit.data import augment


def _jit_augment() -> dict[str, Callable]:
    """augment.py's scalar functions compiled by numba, calling each other compiled.

    Each function is rebuilt over a copy of augment's globals in which the names of
    the others point at their compiled versions (numba resolves globals when it
    compiles), so augment.py itself never imports numba.
    """
    g = dict(vars(augment))
    for name in ("mix64", "sample_bits", "uniform", "pad_crop_flip_params", "rrc_box"):
        f = getattr(augment, name)
        g[name] = numba.njit(inline="always")(types.FunctionType(f.__code__, g, name))
    return g


_JIT = _jit_augment()


class KeyCell:
    """A uint64 the compiled pipeline reads at every batch: the epoch's augmentation key."""

    def __init__(self) -> None:
        self.array = np.zeros(1, np.uint64)  # kept alive as long as the loader

    @property
    def address(self) -> int:
        return self.array.ctypes.data

    def set(self, key: np.uint64) -> None:
        self.array[0] = key


def _key_reader(cell: KeyCell) -> Callable[[], np.uint64]:
    addr = cell.address

    @numba.njit(inline="always")
    def read_key() -> np.uint64:
        return numba.carray(cast_int_to_byte_ptr(addr), (8,)).view(np.uint64)[0]

    return read_key


class SeededPadCropFlip(Operation):
    """RandomCrop(size, padding=pad) + RandomHorizontalFlip on (N, H, W, 3) uint8 with
    hashed draws (pad=0: flip only). Bit-identical to augment.pad_crop_flip_batch."""

    def __init__(self, cell: KeyCell, pad: int) -> None:
        super().__init__()
        self.cell, self.pad = cell, pad

    def generate_code(self) -> Callable:
        my_range = Compiler.get_iterator()
        read_key = _key_reader(self.cell)
        params = _JIT["pad_crop_flip_params"]
        pad = self.pad

        def pad_crop_flip(images, dst, indices):
            key = read_key()
            n, h, w = images.shape[0], images.shape[1], images.shape[2]
            for i in my_range(n):
                oy, ox, flip = params(key, np.uint64(indices[i]), pad)
                dy, dx = np.int64(oy) - pad, np.int64(ox) - pad
                for y in range(h):
                    sy = y + dy
                    for x in range(w):
                        sx = (w - 1 - x if flip == 1 else x) + dx
                        inside = 0 <= sy < h and 0 <= sx < w
                        for c in range(3):
                            dst[i, y, x, c] = images[i, sy, sx, c] if inside else 0
            return dst

        pad_crop_flip.is_parallel = True
        pad_crop_flip.with_indices = True
        return pad_crop_flip

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        shape, dtype = previous_state.shape, previous_state.dtype
        return replace(previous_state, jit_mode=True), AllocationQuery(shape, dtype)


class SeededRandomResizedCropDecoder(ResizedCropRGBImageDecoder):
    """FFCV's RandomResizedCropRGBImageDecoder (decode, crop, resize in one pass) with
    the crop window from augment.rrc_box instead of numba's thread RNG."""

    def __init__(
        self,
        output_size: tuple[int, int],
        cell: KeyCell,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        super().__init__(output_size)
        self.cell, self.scale, self.ratio = cell, scale, ratio

    @property
    def get_crop_generator(self) -> Callable:  # abstract in FFCV; unused here
        return augment.rrc_box

    def generate_code(self) -> Callable:
        jpg = IMAGE_MODES["jpg"]
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        imdecode_c = Compiler.compile(imdecode)
        resize_crop_c = Compiler.compile(resize_crop)
        box = _JIT["rrc_box"]
        read_key = _key_reader(self.cell)
        s_lo, s_hi = float(self.scale[0]), float(self.scale[1])
        r_lo, r_hi = float(np.log(self.ratio[0])), float(np.log(self.ratio[1]))

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage = my_storage
            key = read_key()
            for dst_ix in my_range(len(batch_indices)):
                source_ix = batch_indices[dst_ix]
                field = metadata[source_ix]
                image_data = mem_read(field["data_ptr"], storage_state)
                height, width = np.uint32(field["height"]), np.uint32(field["width"])
                if field["mode"] == jpg:
                    buf = temp_storage[dst_ix]
                    imdecode_c(image_data, buf, height, width, height, width, 0, 0, 1, 1,
                               False, False)  # fmt: skip
                    image = buf.reshape(-1)[: 3 * height * width].reshape(height, width, 3)
                else:
                    image = image_data.reshape(height, width, 3)
                i, j, h, w = box(height, width, key, np.uint64(source_ix), s_lo, s_hi, r_lo, r_hi)
                resize_crop_c(image, i, i + h, j, j + w, destination[dst_ix])
            return destination[: len(batch_indices)]

        decode.is_parallel = True
        return decode


class NormalizeToCHW(Operation):
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) through a (256, 3) lookup table
    (loaders.normalize_lut), into a new array per batch.

    Why not NormalizeImage + ToTorchImage: their outputs live in buffers FFCV reuses a
    few batches later, and copying the channels-last view out to NCHW cost ~4 ms per
    256 images here, about 5x the rest of the pipeline; writing NCHW once avoids both.
    """

    def __init__(self, lut: np.ndarray) -> None:
        super().__init__()
        self.lut = np.ascontiguousarray(lut, np.float32)  # (256, 3)

    def generate_code(self) -> Callable:
        my_range = Compiler.get_iterator()
        lut = self.lut

        def normalize(images, _unused):
            n, h, w = images.shape[0], images.shape[1], images.shape[2]
            out = np.empty((n, 3, h, w), np.float32)
            for i in my_range(n):
                for c in range(3):  # contiguous writes; reads stride over 3 channels
                    for y in range(h):
                        for x in range(w):
                            out[i, c, y, x] = lut[images[i, y, x, c], c]
            return out

        normalize.is_parallel = True
        return normalize

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, None]:
        h, w, _ = previous_state.shape
        shape, dtype = (3, h, w), np.dtype(np.float32)
        return replace(previous_state, jit_mode=True, shape=shape, dtype=dtype), None
