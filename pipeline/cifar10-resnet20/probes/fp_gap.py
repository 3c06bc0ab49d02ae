"""Where a trained FP network loses its test accuracy: eval-mode top-1 on the test,
validation and (unaugmented) training images, bf16 against fp32, and after re-estimating
the BN statistics in fp32 over the unaugmented training images.

    python probes/fp_gap.py runs/seed0/pretrain/fp-preresnet20/model.pt data/prepared
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from lowbit.checkpoint import load
from lowbit.data.loaders import LoaderOptions, build_eval_loader, build_loaders
from lowbit.engine.evaluation import evaluate
from lowbit.engine.steps import Execution
from lowbit.models.registry import build_model


def report(model: nn.Module, name: str, loader: Iterable, precision: str) -> None:
    t = time.perf_counter()
    r = evaluate(model, loader, torch.device("cpu"), Execution(precision=precision))
    s = time.perf_counter() - t
    print(f"| {name} | {precision} | {r['top1']:.2f} | {r['loss']:.3f} | {s:.0f} s |", flush=True)


@torch.no_grad()
def reestimate_bn(model: nn.Module, loader: Iterable) -> None:
    """Cumulative (momentum None) BN statistics of one pass over `loader`, fp32."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    for x, _ in loader:
        model(x)
    model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("data_dir", type=Path)
    a = ap.parse_args()
    ck = load(a.checkpoint)
    model = build_model(ck["arch"]["model"], ck["arch"]["num_classes"], ck["arch"]["image_size"])
    model.load_state_dict(ck["nets"][ck["main"]]["model"])
    opts = LoaderOptions(workers=1, augment="none")
    train, val = build_loaders(a.data_dir, 256, opts)
    test = build_eval_loader(a.data_dir, "test", 256, opts)
    print("| images | precision | top-1 | loss | time |\n|---|---|---|---|---|")
    report(model, "test", test, "bf16")
    report(model, "test", test, "fp32")
    report(model, "validation", val, "fp32")
    report(model, "training, unaugmented", train, "fp32")
    reestimate_bn(model, train)
    report(model, "test, BN re-estimated", test, "fp32")


if __name__ == "__main__":
    main()
