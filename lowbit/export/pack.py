"""k-bit code packing: unsigned codes in [0, 2^k - 1], k bits each, most significant first.

A tensor of n codes takes ceil(n k / 8) bytes: four 2-bit codes or two 4-bit codes per
byte; 3-bit codes straddle bytes. numpy's packbits does the bit shuffling.
"""

from __future__ import annotations

import numpy as np

from lowbit.export.program import ExportError


def packed_size(count: int, bits: int) -> int:
    """Bytes that `count` codes of `bits` bits take."""
    return -(-count * bits // 8)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Flattened unsigned codes -> uint8 (packed_size(codes.size, bits),)."""
    if not 1 <= bits <= 16:
        raise ExportError(f"codes must have 1 to 16 bits, got {bits}")
    c = np.asarray(codes).reshape(-1).astype(np.int64)
    if c.size and (c.min() < 0 or c.max() >= 2**bits):
        raise ExportError(f"codes outside [0, {2**bits - 1}] cannot be packed in {bits} bits")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    bit_matrix = ((c[:, None] >> shifts) & 1).astype(np.uint8)  # (n, bits), MSB first
    return np.packbits(bit_matrix.reshape(-1))


def unpack_codes(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The inverse of pack_codes: int32 (count,) codes."""
    if packed.dtype != np.uint8 or packed.size != packed_size(count, bits):
        raise ExportError(
            f"packed codes hold {packed.size} bytes, {count} codes of {bits} bits "
            f"need {packed_size(count, bits)}"
        )
    bit_matrix = np.unpackbits(packed, count=count * bits).reshape(count, bits)
    weights = (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))[None, :]
    return (bit_matrix.astype(np.int64) * weights).sum(axis=1).astype(np.int32)
