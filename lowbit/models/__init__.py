"""Model registry: the paper's architectures, built for a dataset's classes and size."""

from lowbit.models.blocks import block_outputs
from lowbit.models.registry import MODELS, build_model, residual_blocks

__all__ = ["MODELS", "block_outputs", "build_model", "residual_blocks"]
