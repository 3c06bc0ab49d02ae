"""Are lowbit's training stages bitwise reproducible across processes on this machine?

    python scripts/determinism.py --params params.yaml --stage stochastic-precision \\
        --bits 4 --set common.seed=1 [--runs 3] [--threads 1] [--jobs 1] \\
        [--out reports/bench/determinism.md] [--work DIR]

Prepares the inputs once (prepare, pretrain and the stage's init chain, with the --set
overrides written into a copy of params.yaml), runs each --stage --runs times as fresh
`lowbit stage` processes, each in its own copy of the inputs and with a perturbed
environment (PYTHONHASHSEED, MALLOC_PERTURB_, the environment's size, the working
directory's depth), and compares every run with run 0: model.pt tensor by tensor,
metrics.json, history.csv and the dvclive log, timings left out. Writes a markdown report
naming the machine; exits 0 when every stage's runs are identical, 1 when any differ,
2 on bad input (one line).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lowbit.bench.determinism import plan, report, runs  # noqa: E402
from lowbit.checkpoint import atomic_write_text, require_writable  # noqa: E402
from lowbit.errors import LowbitError  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--stage", action="append", required=True, help="repeat for several stages")
    p.add_argument("--bits", type=int, default=2, help="w = a bits of quantized stages")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--runs", type=int, default=3, help="processes per stage (>= 2)")
    p.add_argument("--threads", type=int, help="OMP/MKL threads per run (default: inherited)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="in every run's environment, e.g. ONEDNN_VERBOSE=0")  # fmt: skip
    p.add_argument("--vary", action="append", default=[], metavar="KEY=V0,V1,...",
                   help="per run: run i gets V(i mod count)")  # fmt: skip
    p.add_argument("--nan-fill", action="store_true",
                   help="odd runs: uninitialised tensors hold NaN")  # fmt: skip
    p.add_argument("--together", action="store_true",
                   help="run i of every --stage in one process")  # fmt: skip
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per process")
    p.add_argument("--work", type=Path, help="keep the runs here (default: a temp folder)")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "bench" / "determinism.md")
    args = p.parse_args(argv)
    if args.runs < 2 or args.jobs < 1 or (args.threads is not None and args.threads < 1):
        p.error("--runs must be at least 2, --jobs and --threads at least 1")
    if bad := [e for e in args.env + args.vary if "=" not in e]:
        p.error(f"--env and --vary expect KEY=VALUE, got {bad[0]!r}")
    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        p.error(f"--work {args.work} is not empty; name a new folder")
    try:
        require_writable(args.out, "--out")  # before the runs, not after
    except LowbitError as e:
        p.error(str(e))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    extra = dict(e.split("=", 1) for e in args.env)
    vary = tuple((k, tuple(v.split(","))) for k, v in (e.split("=", 1) for e in args.vary))
    env = runs.environment(args.threads, extra)
    if args.nan_fill:
        filled = os.pathsep.join(
            [str(ROOT / "scripts" / "determinism_nan_fill"), env["PYTHONPATH"]]
        )
        vary += (("PYTHONPATH", (env["PYTHONPATH"], filled)),)
    how = runs.Settings(env, args.timeout, args.jobs, vary, args.together)
    with tempfile.TemporaryDirectory(prefix="lowbit-determinism-") as tmp:
        work = args.work.resolve() if args.work else Path(tmp)
        try:
            params = plan.write_params(args.params, work / "base", args.set)
            targets = [plan.target(params, s, args.bits) for s in dict.fromkeys(args.stage)]
            print(f"determinism: preparing inputs in {work / 'base'}", file=sys.stderr)
            runs.prepare_base(work / "base", targets, how)
            print(f"determinism: {args.runs} runs of {len(targets)} stage(s)", file=sys.stderr)
            measured = runs.measure(work / "base", work, targets, args.runs, how)
        except (LowbitError, RuntimeError) as e:
            print(f"determinism: {e}", file=sys.stderr)
            return 2
        info = {**report.machine(ROOT, how.env), "runs at once": args.jobs, **extra}
        info["processes"] = (
            "run i of every stage in one process (seconds: the whole process)"
            if args.together
            else "one `lowbit stage` process per run of each stage"
        )
        command = "python scripts/determinism.py " + shlex.join(
            sys.argv[1:] if argv is None else argv
        )
        text = report.markdown(measured, info, command, vary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, text)
    for m in measured:
        verdict = (
            "identical" if m.identical else f"DIFFERS: {next(d for ds in m.diffs for d in ds)}"
        )
        print(f"{m.target.stage}: {verdict}")
    print(f"determinism: report in {args.out}", file=sys.stderr)
    return 0 if all(m.identical for m in measured) else 1


if __name__ == "__main__":
    sys.exit(main())
