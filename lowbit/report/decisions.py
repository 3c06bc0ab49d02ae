"""The report's Decisions section: what is the paper's, what is lowbit's, and the
report's own conventions (docs/decisions.md has the full table)."""

from __future__ import annotations

from lowbit.report.reference import PUBLISHED

DECISIONS_PAPER = (
    "Quantizers (DoReFa-style tanh weights, clipped activations, straight-through rounding), "
    "the layer policy (first conv and last fc full precision), joint KD losses and the "
    "CIFAR-100 / ImageNet recipes are the paper's (paper.md §1, §4, §5).",
)
DECISIONS_LOWBIT = (
    "Stochastic precision (SP): the whole design is lowbit's: unit = layer or residual block; "
    "each unit quantized independently with probability p(t), stepped 0.5 → 0.75 → 0.875 → 1.0 "
    "(after Dong et al., BMVC 2017) and then held at 1; selection uniform (default) or by "
    "quantization error; evaluation always fully quantized (paper.md §3).",
    "Two-stage (TS): stage-1 activations are clipped to [0, 1] but not rounded (`clip`, "
    "default; `relu` offered); stage lengths and learning rates are parameters (§2).",
    "Progressive bit decay (PQ): the bit schedule (16, 8, 4, 2 in the paper pipelines; 8, 4, 2 "
    "in the quick one) and the epochs per step are parameters (§2).",
    "Joint KD feature hint: optional L2 hint at each residual stage output, weight β, off by "
    "default (the paper's layers and weight are unconfirmed, §4).",
    "PACT and LSQ quantizers are offered beyond the paper, behind the same interface (§1).",
)
DECISIONS_REPORT = (
    "Tables show the best epoch, as the paper does (§5), chosen on held-out validation images "
    "where the run had them and then quoting the test images at that epoch; final-epoch "
    "tables are written too.",
    "Δ is against lowbit's own fp network of the same model and dataset, not the paper's FP.",
    "Several seeds: mean ± sample standard deviation (n−1), with n.",
    "Other networks trained in a run (e.g. the KD teacher) are rows `<method>-<net>` "
    "(e.g. `kd-teacher`), after the methods; their bit-widths are their own (32/32 for a "
    "teacher).",
    "budget_epochs counts network-epochs after FP pretraining: every round of TS/PQ and "
    "both networks of KD; extra_epochs is the part beyond the final network's own epochs.",
    f"Published peers are shown beside our rows only where model and dataset match, marked "
    f"'{PUBLISHED}'.",
    "metrics.json: best-epoch top-1, mean over seeds, of each final network: `fp` (and "
    "`fp [clip start]`), `w2a2` → {method: top-1}; another model or dataset than the "
    "first is keyed `<model>/<dataset>/<bits>`; mixed bit-widths (W2A32) only in the tables.",
)


def decisions() -> str:
    def bullets(items: tuple[str, ...]) -> str:
        return "\n".join(f"- {x}" for x in items) + "\n"

    return (
        f"**[paper]** (stated by the paper or its released code):\n\n{bullets(DECISIONS_PAPER)}\n"
        "**[lowbit]** (the paper leaves these open; lowbit's choices, all parameters, values "
        f"per run in the Configs section):\n\n{bullets(DECISIONS_LOWBIT)}\n"
        f"**This report's conventions:**\n\n{bullets(DECISIONS_REPORT)}"
    )
