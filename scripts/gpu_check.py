"""lowbit's device check: what a first GPU run must establish, offline, in 8 minutes.

    gpu_check.py prepare [--data-root DIR]     here: .carry/ (wheels + CIFAR-10 subset),
                                               the carry list and the command to run
    gpu_check.py run [--device cuda|cpu] [--quick] [--out DIR]
                                               there (or here, as a dry run): every step,
                                               the report under --out ($OUT if set)
    gpu_check.py step NAME --settings F --record F   one step (the driver runs these)

Steps (scripts/gpucheck/): setup (carried wheels installed offline), quant (CUDA
quantizers and layers vs the CPU reference, fp16 / bf16 levels), steptime (FP vs W2A2,
eager / compiled, fp32 / bf16), training (real runs on the subset: accuracy floor,
eager vs compiled within the measured noise, kill and resume), ddp (two ranks, equal
parameters for DoReFa, LSQ, SP and KD). Each step has its own time cap; on the GPU the
caps add up to 540 s. The report (gpu-check.md, .json, .log: three files) is rewritten
after every step and whenever a step records a check.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    prep = sub.add_parser("prepare", help="make .carry/ here")
    prep.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    prep.add_argument("--carry", type=Path, default=ROOT / ".carry")
    prep.add_argument("--train-per-class", type=int, default=1000)
    prep.add_argument("--val-per-class", type=int, default=200)
    prep.add_argument("--python-version", default="3.12", help="of the wheels (the device's: 3.12)")
    prep.add_argument("--no-wheels", action="store_true", help="keep the wheels already there")
    run = sub.add_parser("run", help="run the check")
    run.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    run.add_argument("--quick", action="store_true", help="the smallest dry run (CI)")
    run.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "reports/bench/gpu-check")
    )
    run.add_argument("--carry", type=Path, default=ROOT / ".carry")
    run.add_argument("--site", type=Path, default=ROOT / ".site")
    step = sub.add_parser("step", help="one step (internal)")
    step.add_argument("name")
    step.add_argument("--settings", type=Path, required=True)
    step.add_argument("--record", type=Path, required=True)
    args = p.parse_args(argv)
    if args.cmd == "prepare":
        from gpucheck.carry import prepare

        per_class = (args.train_per_class, args.val_per_class)
        prepare(args.carry, args.data_root, per_class, args.python_version, not args.no_wheels)
        return 0
    if args.cmd == "run":
        from gpucheck.driver import run as drive

        profile = "quick" if args.quick else "gpu" if args.device == "cuda" else "cpu"
        return drive(args.device, profile, args.out, args.carry, args.site)
    return _step(args.name, args.settings, args.record)


def _step(name: str, settings: Path, record: Path) -> int:
    from gpucheck.record import Record

    rec = Record(name, record)
    module = importlib.import_module(f"gpucheck.{name}")
    module.run(rec, json.loads(settings.read_text()))
    return 1 if any(c["status"] == "FAIL" for c in rec.data["checks"]) else 0


if __name__ == "__main__":
    sys.exit(main())
