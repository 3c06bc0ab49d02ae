"""Model registry: the paper's architectures, built for a dataset's classes and size."""

from lowbit.models.registry import MODELS, build_model, residual_blocks

__all__ = ["MODELS", "build_model", "residual_blocks"]
