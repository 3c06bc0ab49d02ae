"""Typed configuration: params.yaml → validated pydantic models. The only YAML reader.

params.yaml holds a `common` block, one section per stage (named like the stage, with
underscores), and a `slurm` block. A stage's config is common + its section + `--set`
overrides; unknown keys fail with the list of valid ones. Every tunable has exactly one
default, here.
"""

from lowbit.config.base import QUANT_STAGES, STAGES, TRAINING_STAGES
from lowbit.config.common import Common, LongDirect, Pipeline, Slurm
from lowbit.config.loading import (
    apply_overrides,
    explain,
    load_config,
    load_runs,
    read_params,
    stage_bits,
    validate,
)
from lowbit.config.sections import (
    KD,
    SECTIONS,
    SP,
    BitDecay,
    Direct,
    Distill,
    Optim,
    Prepare,
    Pretrain,
    QuantizeActivations,
    Quantized,
    QuantizeWeights,
    Report,
    StochasticPrecision,
    Train,
    TsPqKd,
    section_key,
)
from lowbit.config.stage import StageConfig

__all__ = [
    "KD", "QUANT_STAGES", "SECTIONS", "SP", "STAGES", "TRAINING_STAGES", "BitDecay", "Common",
    "Direct", "Distill", "LongDirect", "Optim", "Pipeline", "Prepare", "Pretrain",
    "QuantizeActivations", "QuantizeWeights", "Quantized", "Report", "Slurm", "StageConfig",
    "StochasticPrecision", "Train", "TsPqKd", "apply_overrides", "explain", "load_config",
    "load_runs", "read_params", "section_key", "stage_bits", "validate",
]  # fmt: skip
