"""Typed configuration: params.yaml → validated pydantic models. The only YAML reader.

params.yaml holds a `common` block, one section per stage (named like the stage, with
underscores; the table of stages is sections.STAGES), and a `slurm` block. A stage's
config is common + its section + `--set` overrides; unknown keys fail with the list of
valid ones. Every tunable has exactly one default, here (the add-ons' settings: beside
their methods, lowbit/methods/*_config.py).
"""

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
    QUANT_STAGES,
    SP,
    STAGES,
    TRAINING_STAGES,
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
    Stage,
    StochasticPrecision,
    Train,
    TsPqKd,
    section_key,
)
from lowbit.config.stage import StageConfig

__all__ = [
    "KD", "QUANT_STAGES", "SP", "STAGES", "TRAINING_STAGES", "BitDecay", "Common", "Direct",
    "Distill", "LongDirect", "Optim", "Pipeline", "Prepare", "Pretrain", "QuantizeActivations",
    "QuantizeWeights", "Quantized", "Report", "Slurm", "Stage", "StageConfig",
    "StochasticPrecision", "Train", "TsPqKd", "apply_overrides", "explain", "load_config",
    "load_runs", "read_params", "section_key", "stage_bits", "validate",
]  # fmt: skip
