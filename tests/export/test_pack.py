"""k-bit code packing: exact sizes, exact round trips, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.export.pack import pack_codes, packed_size, unpack_codes
from lowbit.export.program import ExportError


def test_four_2bit_codes_per_byte_msb_first():
    packed = pack_codes(np.array([0, 1, 2, 3, 3, 2]), 2)
    assert packed.tolist() == [0b00011011, 0b11100000]


@pytest.mark.parametrize("bits", [2, 3, 4, 7, 8])
def test_round_trip_and_size(bits):
    codes = np.random.default_rng(bits).integers(0, 2**bits, size=1001)
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == packed_size(1001, bits)
    assert packed.size == -(-1001 * bits // 8)
    assert np.array_equal(unpack_codes(packed, bits, 1001), codes)


def test_refuses_codes_that_do_not_fit():
    with pytest.raises(ExportError, match=r"outside \[0, 3\]"):
        pack_codes(np.array([0, 4]), 2)
    with pytest.raises(ExportError, match="need 2"):
        unpack_codes(np.zeros(3, np.uint8), 4, 4)
