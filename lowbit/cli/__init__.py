"""The `lowbit` command: `lowbit stage <name>`, `lowbit info`, `lowbit bench …`.

The only package that imports typer: this app, `errors` (an error a user can fix is one
line, `error: …`, exit status 2; `--debug` shows the traceback instead) and `bench`.
"""

from __future__ import annotations

import enum
import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from lowbit.cli.bench import bench_app
from lowbit.cli.errors import OneLineErrors, fail, guarded
from lowbit.config import STAGES
from lowbit.errors import ConfigError

app = typer.Typer(
    cls=OneLineErrors,
    help="Train CNNs with low-bitwidth weights and activations (Zhuang et al., TPAMI 2022).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stage_app = typer.Typer(
    cls=OneLineErrors,
    help="Run one pipeline stage (the same function DVC and SLURM jobs call).",
    no_args_is_help=True,
)
app.add_typer(stage_app, name="stage")
app.add_typer(bench_app, name="bench")


ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params.yaml to read.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override: key=value (this stage) or section.key=value."),
]
BitsOpt = Annotated[int | None, typer.Option(help="Shorthand for --w-bits N --a-bits N.")]
WOpt = Annotated[int | None, typer.Option("--w-bits", help="Weight bit-width (2..32).")]
AOpt = Annotated[int | None, typer.Option("--a-bits", help="Activation bit-width (2..32).")]


class Executor(enum.StrEnum):
    inline = "inline"
    local = "local"
    slurm = "slurm"


ExecOpt = Annotated[
    Executor | None,
    typer.Option(help="inline (in this process) | local | slurm (a submitit job)."),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]


AllOpt = Annotated[
    bool,
    typer.Option(
        "--all",
        help="Every run params.yaml's pipeline section lists for this stage (its bit-widths, "
        "pretrain's FP starts, direct's long runs), one after another: what dvc.yaml runs.",
    ),
]


def _run_stage(stage: str, params: Path, sets: list[str] | None, bits: tuple, how: tuple) -> None:
    """Load the config of one run (bits: (w, a) or Nones) or of every run (--all), launch
    them one after another, print the metrics as JSON (a list with --all)."""
    from lowbit.config import load_config, load_runs
    from lowbit.launch import launch_runs

    executor, debug, every = how
    ex = executor and executor.value

    def go() -> list[dict[str, Any]]:
        if every:
            if bits != (None, None):
                raise ConfigError("--all runs the pipeline's bit-widths: drop --bits")
            return launch_runs(load_runs(stage, params, sets or [], ex))
        return launch_runs([load_config(stage, params, sets or [], *bits, ex)])

    found = guarded(debug, go) or []
    shown = [{k: v for k, v in m.items() if isinstance(v, int | float | str)} for m in found]
    typer.echo(json.dumps(shown if every else shown[0], indent=2, default=str))


def _make_stage_command(stage: str) -> Callable[..., None]:
    """The command of one stage; only quantized stages take --bits / --w-bits / --a-bits.
    Its help is the docstring of the stage's section model (lowbit.config.STAGES)."""
    row = STAGES[stage]
    doc = inspect.cleandoc(row.section.__doc__ or stage)

    def quantized(
        params: ParamsOpt = Path("params.yaml"),
        set_: SetOpt = None,
        bits: BitsOpt = None,
        w_bits: WOpt = None,
        a_bits: AOpt = None,
        executor: ExecOpt = None,
        all_: AllOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        w = w_bits if w_bits is not None else bits
        a = a_bits if a_bits is not None else bits
        _run_stage(stage, params, set_, (w, a), (executor, debug, all_))

    def plain(
        params: ParamsOpt = Path("params.yaml"),
        set_: SetOpt = None,
        executor: ExecOpt = None,
        all_: AllOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        _run_stage(stage, params, set_, (None, None), (executor, debug, all_))

    command = quantized if row.quantized else plain
    command.__doc__ = doc
    return command


for _stage in STAGES:
    # help comes from the command's docstring (the stage module's), set in the factory
    stage_app.command(_stage)(_make_stage_command(_stage))


@app.command()
def info() -> None:
    """Versions, device and FFCV availability."""
    import torch

    from lowbit.provenance import cpu_model, versions

    typer.echo(f"lowbit {versions().get('lowbit', '?')}")
    for k, v in versions().items():
        if k != "lowbit":
            typer.echo(f"  {k:12s} {v}")
    cuda = torch.cuda.is_available()
    typer.echo(f"device       {'cuda: ' + torch.cuda.get_device_name() if cuda else 'cpu'}")
    typer.echo(f"cpu          {cpu_model()} ({torch.get_num_threads()} threads)")
    try:
        from lowbit.data import ffcv_available

        typer.echo(
            f"ffcv         {'available' if ffcv_available() else 'not importable (torch loaders)'}"
        )
    except ImportError:
        typer.echo("ffcv         unknown")


class ExportFormat(enum.StrEnum):
    npz = "npz"
    onnx = "onnx"


@app.command("export")
def export(
    run_dir: Annotated[Path, typer.Argument(help="A quantized run, e.g. runs/distill/w2a2.")],
    format_: Annotated[
        ExportFormat, typer.Option("--format", help="npz: packed k-bit codes; onnx: ConvInteger.")
    ] = ExportFormat.npz,
    out: Annotated[Path | None, typer.Option(help="Default: <runs>/../exports/.")] = None,
    check: Annotated[
        bool, typer.Option(help="Audit every layer and prove agreement on the validation set.")
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Export a trained low-bit network as an integer network (docs/export.md)."""
    from lowbit.export.command import export_run

    result = guarded(debug, lambda: export_run(run_dir, format_.value, out, check))
    typer.echo(result.describe())


@app.command("archive")
def archive_runs(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    to: Annotated[Path, typer.Option(help="The results folder to commit.")] = Path("results"),
    experiments: Annotated[
        bool, typer.Option(help="Every DVC experiment of HEAD (e.g. a queued seed sweep).")
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace archived runs that differ.")] = False,
) -> None:
    """Copy each finished run's metrics.json, history.csv and run.json out of the runs
    folder into <to>/seed<N>/<stage>/<slug>/, for git (the report reads it back)."""
    from lowbit.archive import archive, archive_experiments
    from lowbit.config import load_config

    def go() -> list[Path]:
        cfg = load_config("report", params, set_ or [])  # e.g. --set common.runs_dir=…
        if experiments:
            return archive_experiments(cfg.base_dir, cfg.runs_dir, cfg.path(to), force)
        return archive(cfg.runs_dir, cfg.path(to), force)

    written = guarded(False, go)
    typer.echo(f"archived {len(written)} runs under {to}")


@app.command("show-report")
def show_report(
    path: Annotated[Path, typer.Argument(help="A generated report README.")] = Path(
        "reports/README.md"
    ),
) -> None:
    """Print a generated report and say where the plots are: rendered (rich Markdown) on a
    terminal, the Markdown itself when piped."""
    if not path.is_file():
        fail(f"no report at {path}; run `dvc repro` (or `lowbit stage report`) first")
    text = path.read_text()
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(text))
    else:
        typer.echo(text)
    typer.echo(f"\nreport: {path.resolve()} (plots beside it)")


def main() -> None:  # pragma: no cover
    app()
