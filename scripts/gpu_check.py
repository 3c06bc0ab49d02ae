"""The Python half of scripts/gpu-check.sh: one subcommand per check that needs logic.

    device-name --device D     the card's name (or the CPU model), one line
    cuda-tests                 node ids of the tests that skip without CUDA ("needs CUDA")
    ddp --device D             under torchrun: a process group from env://, W2A2
                               ResNet-20 wrapped in DistributedDataParallel, a few steps
                               through lowbit.engine.fit
    cifar --device D ...       `lowbit stage prepare` of a CIFAR-10 subset, then W2A2
                               `lowbit stage direct` twice from the same seed (compile +
                               mixed precision vs plain fp32), top-1s compared against
                               the binomial sd of their difference on the validation set

Run from the repository root with the project's Python; every subcommand prints what it
checked and exits non-zero when the check fails.
"""

from __future__ import annotations

import argparse
import ast
import faulthandler
import json
import math
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lowbit.engine import History, Trainee

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10


def device_name(device: str) -> str:
    import torch

    from lowbit.provenance import cpu_model

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return "no CUDA device visible"
        name = torch.cuda.get_device_name(0)
        return f"{name} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    return f"CPU: {cpu_model()} ({os.cpu_count()} cores, torch {torch.__version__})"


# ---- the tests that need CUDA ---------------------------------------------------------


def _needs_cuda(decorator: ast.expr) -> bool:
    """A `pytest.mark.skipif(..., reason="needs CUDA...")` decorator."""
    if not isinstance(decorator, ast.Call) or "skipif" not in ast.unparse(decorator.func):
        return False
    return any(
        k.arg == "reason"
        and isinstance(k.value, ast.Constant)
        and "needs CUDA" in str(k.value.value)
        for k in decorator.keywords
    )


def cuda_tests(tests: Path = ROOT / "tests") -> list[str]:
    """pytest node ids (relative to the repository root) of every test function, or whole
    test class, marked to skip without CUDA."""
    ids = []
    for path in sorted(tests.rglob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and any(
                _needs_cuda(d) for d in node.decorator_list
            ):
                ids.append(f"{path.relative_to(ROOT)}::{node.name}")
    return ids


# ---- DDP smoke, under torchrun -------------------------------------------------------------


def _batches(n: int, batch: int, seed: int, device: object) -> list:
    """n batches of (batch, 3, 32, 32) images whose label is the argmax of a fixed random
    projection: learnable, so the loss should fall within a few steps."""
    import torch

    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(3 * 32 * 32, CLASSES, generator=torch.Generator().manual_seed(0))
    out = []
    for _ in range(n):
        x = torch.randn(batch, 3, 32, 32, generator=g)
        out.append((x.to(device), (x.flatten(1) @ proj).argmax(1).to(device)))
    return out


def ddp(args: argparse.Namespace) -> int:
    """Initialise the process group from torchrun's environment, train W2A2 ResNet-20
    in DDP for a few steps through lowbit.engine.fit, check ranks agree."""
    import torch
    import torch.distributed as dist

    from lowbit import engine
    from lowbit.models import build_model
    from lowbit.quant import quantize

    rank = int(os.environ["RANK"])  # torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(local % torch.cuda.device_count())
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    backend = "nccl" if cuda else "gloo"
    # a hung collective prints every thread's stack and exits, instead of waiting forever
    faulthandler.dump_traceback_later(args.hang_s, exit=True)
    dist.init_process_group(backend)  # env://: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
    try:
        ckpt = Path(args.work) / "ddp-smoke.pt"  # one path: rank 0 writes, every rank reads
        if rank == 0:
            ckpt.unlink(missing_ok=True)  # a fresh run: fit() would resume an old one
        dist.barrier()
        torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts)
        model = quantize(build_model("resnet20", CLASSES), 2, 2).to(device)
        model = model.to(memory_format=torch.channels_last)
        # lowbit wraps in DDP only when world_size > 1; wrap here so one process also runs
        # DDP's reducer (the engine keeps a model that is already a DDP as it is).
        ids = [device.index] if cuda else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        ex = engine.Execution(precision=args.precision)
        trainee = engine.make_trainee("student", model, engine.OptimSpec(lr=0.05), device, ex)
        train = _batches(args.steps, args.batch_size, seed=1 + rank, device=device)
        val = _batches(2, args.batch_size, seed=99, device=device)
        spec = engine.FitSpec(
            epochs=args.epochs,
            seed=0,
            device=device,
            checkpoint=ckpt,
            progress=False,
            execution=ex,
        )
        hist = engine.fit([trainee], train, val, spec)
        return _ddp_verdict(trainee, hist, backend, args.work)
    finally:
        dist.destroy_process_group()


def _ddp_verdict(trainee: Trainee, hist: History, backend: str, work: str) -> int:
    """Finite losses, and the same parameters on every rank (DDP averaged the gradients)."""
    import torch
    import torch.distributed as dist

    losses = [r["student/train_loss"] for r in hist.epochs]
    flat = torch.cat([p.detach().float().flatten() for p in trainee.model.parameters()])
    spread = torch.stack([flat.sum(), -flat.sum()])
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)  # the checksum's max and -min over ranks
    agree = bool((spread[0] + spread[1]).abs() <= 1e-5 * flat.abs().sum().clamp(min=1))
    ok = all(math.isfinite(v) for v in losses) and agree
    world = dist.get_world_size()
    if dist.get_rank() == 0:
        line = (
            f"DDP smoke {'OK' if ok else 'FAILED'}: backend {backend}, world size {world}, "
            f"{type(trainee.model).__name__} on {flat.device}, precision {trainee.precision}, "
            f"train loss per epoch {[round(v, 4) for v in losses]}, val top-1 "
            f"{hist.epochs[-1]['student/val_top1']:.1f} %, parameters equal over ranks: {agree}"
        )
        print(line)
        Path(work, "ddp.md").write_text(line + "\n")
    return 0 if ok else 1


# ---- CIFAR-10: compile + mixed precision vs plain fp32 ---------------------------------


def _members(src: Path, split: str) -> dict[str, list[tuple[str, bytes]]]:
    """class -> sorted [(file name, JPEG bytes)] of src/<split>.zip (<split>/<class>/<file>)."""
    if not (src / f"{split}.zip").is_file():
        raise SystemExit(f"{src / split}.zip not found: --data-root needs train.zip + test.zip")
    out: dict[str, list[tuple[str, bytes]]] = {}
    with zipfile.ZipFile(src / f"{split}.zip") as zf:
        for name in sorted(n for n in zf.namelist() if not n.endswith("/")):
            *_, cls, file = name.split("/")
            out.setdefault(cls, []).append((file, zf.read(name)))
    return out


def subset_root(src: Path, dst: Path, per_class: dict[str, int]) -> Path:
    """An image-folder copy of the first k images per class of each split (sorted names:
    the same subset on every machine), e.g. per_class {"train": 32, "test": 20}."""
    for split, k in per_class.items():
        for cls, files in _members(src, split).items():
            (dst / split / cls).mkdir(parents=True, exist_ok=True)
            for name, data in files[:k]:
                (dst / split / cls / name).write_bytes(data)
    return dst


def write_params(args: argparse.Namespace, data_root: Path, train_per_class: int | None) -> Path:
    """A params.yaml (JSON is YAML) for `lowbit stage prepare` and `lowbit stage direct`;
    the two runs differ only by --set common.compile / common.precision / runs_dir."""
    work = Path(args.work).resolve()
    params = {
        "common": {
            "seed": 0, "dataset": "imagefolder", "data_root": str(data_root.resolve()),
            "data_dir": str(work / "prepared"), "runs_dir": str(work / "runs-plain"),
            "reports_dir": str(work / "reports"), "live_dir": None, "model": "resnet20",
            "device": args.device, "batch_size": args.batch_size, "workers": args.workers,
            "loader": "ffcv", "augment": "cifar", "progress": False,
            "precision": "fp32", "compile": False,
        },
        "prepare": {"image_size": 32, "train_per_class": train_per_class, "encoding": "raw"},
        "direct": {
            "init": "scratch", "epochs": args.epochs, "eval_every": args.epochs,
            "optim": {"lr": args.lr, "milestones": [0.5, 0.75]},
        },
    }  # fmt: skip
    path = work / "params.yaml"
    path.write_text(json.dumps(params, indent=2) + "\n")
    return path


def _lowbit(args: Sequence[str], timeout_s: float) -> None:
    """`lowbit …` with this Python; its output goes to ours (the step's log)."""
    cmd = [sys.executable, "-m", "lowbit.cli", *args]
    print("$ lowbit " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, timeout=timeout_s, cwd=ROOT)


def _top1(runs_dir: Path) -> dict[str, float]:
    (metrics,) = runs_dir.glob("direct/*/metrics.json")
    m = json.loads(metrics.read_text())
    return {"top1": float(m["top1"]), "wall_s": float(m.get("wall_s") or math.nan)}


def noise_verdict(fast: float, plain: float, n: int, k: float = 2.0) -> tuple[float, bool]:
    """The binomial sd (points) of the difference of two top-1s (%) on n images each,
    sqrt(p1 (1 - p1) / n + p2 (1 - p2) / n), and whether |difference| <= k sd. It covers
    the sampling of the validation images only; two training runs also differ by their
    trajectories (compile and fp16 change rounding), which adds to it."""
    p1, p2 = fast / 100, plain / 100
    sd = 100 * math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n)
    return sd, abs(fast - plain) <= k * max(sd, 1e-9)


def cifar(args: argparse.Namespace) -> int:
    """Prepare the subset, train W2A2 twice (compile + mixed precision, plain fp32)."""
    src, work = Path(args.data_root), Path(args.work).resolve()
    if not src.exists():
        raise SystemExit(
            f"CIFAR-10 data not found at {src}: pass --data-root DIR (train.zip, test.zip)"
        )
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.val_per_class:  # a small copy: both splits cut down
        per = {"train": args.train_per_class, "test": args.val_per_class}
        params = write_params(args, subset_root(src, work / "subset", per), None)
    else:  # all 10,000 test images; prepare draws the class-balanced training subset
        params = write_params(args, src, args.train_per_class)
    _lowbit(["stage", "prepare", "-p", str(params)], args.timeout)
    n = json.loads((work / "prepared" / "meta.json").read_text())["counts"]["val"]
    print(f"prepared in {time.perf_counter() - t0:.0f} s: {n} validation images", flush=True)
    fast_sets = ["common.compile=true", f"common.precision={args.precision}"]
    fast_sets.append(f"common.runs_dir={work / 'runs-fast'}")
    results = {}
    for name, sets in (("plain", []), ("fast", fast_sets)):
        extra = [a for s in sets for a in ("--set", s)]
        _lowbit(["stage", "direct", "--bits", "2", "-p", str(params), *extra], args.timeout)
        results[name] = _top1(work / f"runs-{name}")
    return _report(results, n, args)


def _report(results: dict[str, dict[str, float]], n: int, args: argparse.Namespace) -> int:
    """Print both top-1s, their difference and the noise; also to <work>/comparison.md."""
    fast, plain = results["fast"]["top1"], results["plain"]["top1"]
    sd, within = noise_verdict(fast, plain, n)
    text = (
        f"W2A2 ResNet-20, CIFAR-10 ({args.epochs} epochs from scratch, {n} validation images):\n"
        f"  compile + {args.precision}: top-1 {fast:.2f} %  ({results['fast']['wall_s']:.0f} s)\n"
        f"  eager fp32:      top-1 {plain:.2f} %  ({results['plain']['wall_s']:.0f} s)\n"
        f"  difference {fast - plain:+.2f} points; binomial sd of the difference "
        f"sqrt(p1(1-p1)/n + p2(1-p2)/n) = {sd:.2f} points on n = {n}\n"
        f"  within noise (|difference| <= 2 sd = {2 * sd:.2f} points): "
        f"{'yes' if within else 'NO'}"
    )
    print("\n" + text)
    Path(args.work, "comparison.md").write_text(f"```text\n{text}\n```\n")
    # Fail only beyond 3 sd: the binomial sd counts the validation sample alone, and two
    # training runs also differ by their trajectories (a real precision bug costs more)
    if args.fail_outside_noise and not noise_verdict(fast, plain, n, k=3.0)[1]:
        print(f"FAILED: the top-1s differ by more than 3 sd ({3 * sd:.2f} points)")
        return 1
    return 0


# Each subcommand's options and defaults (the GPU run's; gpu-check.sh sets the dry run's).
# ddp: --steps batches per epoch and rank, --hang-s dump every stack and exit after it.
# cifar: --precision of the compiled run, --val-per-class 0 = all 1,000 test images per
# class, --timeout seconds per lowbit command, --fail-outside-noise fail beyond 3 sd.
OPTIONS: dict[str, dict[str, object]] = {
    "device-name": {"device": "cuda"},
    "cuda-tests": {},
    "ddp": {
        "device": "cuda", "precision": "fp32", "steps": 8, "epochs": 2, "batch_size": 32,
        "work": "/tmp", "hang_s": 240.0,
    },
    "cifar": {
        "device": "cuda", "precision": "fp16", "work": "",
        "data_root": str(ROOT.parent / "shared" / "data" / "cifar10"),
        "train_per_class": 1000, "val_per_class": 0, "epochs": 8, "batch_size": 200,
        "workers": 4, "lr": 0.05, "timeout": 600.0, "fail_outside_noise": False,
    },
}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for cmd, options in OPTIONS.items():
        q = sub.add_parser(cmd)
        for key, default in options.items():
            flag = "--" + key.replace("_", "-")
            if isinstance(default, bool):
                q.add_argument(flag, action="store_true")
            else:
                q.add_argument(flag, type=type(default), default=default, required=default == "")
    args = p.parse_args(argv)
    if args.cmd == "device-name":
        print(device_name(args.device))
        return 0
    if args.cmd == "cuda-tests":
        print("\n".join(cuda_tests()))
        return 0
    return ddp(args) if args.cmd == "ddp" else cifar(args)


if __name__ == "__main__":
    sys.exit(main())
