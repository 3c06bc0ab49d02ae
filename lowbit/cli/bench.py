"""`lowbit bench overhead` and `lowbit bench loader`: benchmarks that write measured numbers
to reports/bench/ (the measuring code is lowbit.bench.overhead and lowbit.bench.loader)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lowbit.cli.errors import guarded

bench_app = typer.Typer(
    help="Benchmarks that write measured numbers to reports/bench/.", no_args_is_help=True
)


@bench_app.command("overhead")
def bench_overhead(
    quick: Annotated[
        bool, typer.Option(help="Batch 4, 2 repetitions, memory in one process: a smoke run.")
    ] = False,
    out_dir: Annotated[Path, typer.Option(help="Where overhead.json + overhead.md go.")] = Path(
        "reports/bench"
    ),
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N | auto (CUDA if present).")] = (
        "auto"
    ),
    reps: Annotated[
        int | None, typer.Option(min=1, help="Interleaved repetitions (default 20; quick: 2).")
    ] = None,
    variants: Annotated[
        str,
        typer.Option(
            help="Rows, comma separated: network names (fp, lowbit_w2a2, …: all their rows), "
            "row names with wildcards ('*.compiled.*', 'lowbit_w2a2.eager.mixed'; mixed = "
            "the device's bf16 / fp16), or all."
        ),
    ] = "all",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per step (quick: ≤ 4).")] = 128,
    one_memory_process: Annotated[
        bool,
        typer.Option(
            help="Measure every row's memory in one child process, not one per row: "
            "shorter; sound on CUDA (live tensor bytes), approximate on the CPU (RSS)."
        ),
    ] = False,
) -> None:
    """Train-step time and peak memory of quantized training vs FP and peers: eager and
    compiled, fp32 and mixed precision, relative to the fastest FP row."""
    from lowbit.bench.overhead import OverheadSpec, run_overhead
    from lowbit.bench.overhead.markdown import markdown

    spec = OverheadSpec(
        device=device,
        variants=tuple(variants.split(",")),
        batch_size=batch_size,
        reps=reps,
        quick=quick,
        one_memory_process=one_memory_process,
    )
    result = guarded(False, lambda: run_overhead(spec, out_dir))
    typer.echo(markdown(result))
    typer.echo(f"written: {out_dir / 'overhead.json'}, {out_dir / 'overhead.md'}")


@bench_app.command("loader")
def bench_loader(
    data_root: Annotated[
        Path, typer.Option(help="CIFAR-10 JPEG zips (train.zip, test.zip).")
    ] = Path("../shared/data/cifar10"),
    out_dir: Annotated[Path, typer.Option(help="Where JSON + Markdown go.")] = Path(
        "reports/bench"
    ),
) -> None:
    """Images/s of the FFCV loader vs torchvision ImageFolder + DataLoader."""
    from lowbit.bench.loader import run_loader_bench

    guarded(False, lambda: run_loader_bench(data_root=data_root, out_dir=out_dir))
