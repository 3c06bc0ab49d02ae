"""Fixtures of the export tests: digits data and small trained-ish quantized networks."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from tests.export import nets


@pytest.fixture(scope="session")
def d16() -> nets.Data:
    return nets.digits(16)


@pytest.fixture(scope="session")
def val16(d16) -> list[tuple[Tensor, Tensor]]:
    """The 397 validation digits at 16x16, in batches of 200."""
    return list(DataLoader(TensorDataset(*d16[1]), batch_size=200))


@pytest.fixture(scope="session")
def resnet20(d16) -> Callable[[str, int], nn.Module]:
    """(quantizer, bits) -> a fine-tuned ResNet-20 at W`bits`A`bits` (built once each)."""
    fp_state = nets.float_resnet20(d16)
    cache: dict[tuple[str, int], nn.Module] = {}

    def get(quantizer: str, bits: int) -> nn.Module:
        if (quantizer, bits) not in cache:
            cache[quantizer, bits] = nets.quantized_resnet20(fp_state, d16, quantizer, bits)
        return cache[quantizer, bits]

    return get
