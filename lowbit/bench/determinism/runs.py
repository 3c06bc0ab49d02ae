"""Run one training stage several times in fresh, perturbed processes from identical inputs.

The inputs are made once in a base folder: params.yaml (with the overrides applied),
`lowbit stage prepare`, and the stage's init chain (FP pretraining and any earlier
quantized stage, e.g. quantize-weights before quantize-activations). Each run then copies
those inputs into a folder of its own and runs `lowbit stage <name> …` as a subprocess
(or, with Settings.together, run i of every stage in one process, which pays torch's
import once). The runs differ only in what a training result must not depend on (Perturbation):
the hash seed, glibc's fill byte for allocated and freed memory, the size of the
environment (which moves the initial stack and what is allocated after it) and the
working directory's path and depth.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lowbit.bench.determinism.compare import Difference, RunFiles, compare_runs
from lowbit.bench.determinism.plan import Target
from lowbit.config import section_key

BIN = Path(sys.executable).parent
# glibc fills each allocation with the complement of this byte and each freed block
# with the byte itself (mallopt M_PERTURB): memory read before it is written then
# holds a different value in every run
MALLOC_BYTES = (165, 90, 17, 240, 51, 204, 119, 8)
PAD_KB = (1, 3, 8, 2, 6, 4, 7, 5)  # the extra variable's size, kB (plus 13 B per run)
PAD_VAR = "LOWBIT_DETERMINISM_PAD"


@dataclass(frozen=True)
class Perturbation:
    """What run `index` (0-based) changes in its process's surroundings."""

    index: int
    # per-run values of further variables, (name, values): run i gets values[i % len]
    vary: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def pad_bytes(self) -> int:
        return 1024 * PAD_KB[self.index % len(PAD_KB)] + 13 * self.index

    def env(self) -> dict[str, str]:
        return {
            "PYTHONHASHSEED": str(self.index + 1),
            "MALLOC_PERTURB_": str(MALLOC_BYTES[self.index % len(MALLOC_BYTES)]),
            PAD_VAR: "x" * self.pad_bytes,
            **{k: v[self.index % len(v)] for k, v in self.vary},
        }

    def folder(self, root: Path) -> Path:
        """run<i>/ nested `index` levels deeper than run 0: a longer, deeper path."""
        return root / f"run{self.index}" / Path(*(["d" * (self.index + 1)] * self.index))

    def describe(self) -> str:
        e = self.env()
        return (
            f"PYTHONHASHSEED={e['PYTHONHASHSEED']}, MALLOC_PERTURB_={e['MALLOC_PERTURB_']}, "
            f"{PAD_VAR} of {self.pad_bytes} B, working directory {self.index} levels deeper"
            + "".join(f", {k}={e[k]}" for k, _ in self.vary)
        )


@dataclass(frozen=True)
class Settings:
    """How the runs are made: their environment (see `environment`), the limit on one
    `lowbit` process and how many processes run at once."""

    env: dict[str, str]
    timeout: float = 3600.0  # seconds
    jobs: int = 1
    vary: tuple[tuple[str, tuple[str, ...]], ...] = ()  # see Perturbation
    together: bool = False  # run i of every target in one process (see measure)


@dataclass
class Measured:
    """The runs of one Target: their folders and seconds, and what differs from run 0."""

    target: Target
    folders: list[Path] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    diffs: list[list[Difference]] = field(default_factory=list)  # run i vs run 0, i >= 1

    @property
    def identical(self) -> bool:
        return not any(self.diffs)


def environment(threads: int | None, extra: dict[str, str]) -> dict[str, str]:
    """The runs' common environment: ours with the venv first on PATH, no inherited
    perturbation, `threads` OpenMP/MKL threads (None: as inherited), `extra` on top."""
    env = {k: v for k, v in os.environ.items() if k not in Perturbation(0).env()}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # the runs import the lowbit this harness imports (a checkout's, ahead of the venv's)
    here = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [env.get("PYTHONPATH")])])
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return {**env, **extra}


def _process(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> float:
    """Run cmd in cwd (output appended to cwd/lowbit.log); its seconds, or a clear error."""
    log, shown = cwd / "lowbit.log", " ".join(cmd[1:] if cmd[0].endswith("lowbit") else cmd)
    t0 = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"$ {shown}\n")
        out.flush()
        try:
            p = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                               timeout=timeout, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"`{shown}` in {cwd} ran past {timeout:.0f} s") from None
    if p.returncode != 0:
        tail = log.read_text().splitlines()[-5:]
        raise RuntimeError(f"`{shown}` in {cwd} failed:\n" + "\n".join(tail))
    return time.perf_counter() - t0


def lowbit(argv: tuple[str, ...], cwd: Path, env: dict[str, str], timeout: float) -> float:
    return _process([str(BIN / "lowbit"), *argv], cwd, env, timeout)


def prepare_base(base: Path, targets: list[Target], how: Settings) -> None:
    """prepare, then every command of the targets' init chains once, in order."""
    done: list[tuple[str, ...]] = []
    for argv in [("stage", "prepare"), *(a for t in targets for a in t.chain)]:
        if argv not in done:
            lowbit(argv, base, how.env, how.timeout)
            done.append(argv)


def _copy_inputs(base: Path, dest: Path, targets: list[Target]) -> None:
    dest.mkdir(parents=True)
    shutil.copy(base / "params.yaml", dest / "params.yaml")
    for rel in dict.fromkeys(r for t in targets for r in t.inputs):
        shutil.copytree(base / rel, dest / rel)


def _one(base: Path, work: Path, t: Target, p: Perturbation, how: Settings) -> tuple[Path, float]:
    """Run p of target t: a process of its own in a copy of its inputs."""
    dest = p.folder(work / section_key(t.stage))
    _copy_inputs(base, dest, [t])
    return dest, lowbit(t.argv, dest, {**how.env, **p.env()}, how.timeout)


def _all(base: Path, work: Path, order: list[Target], p: Perturbation, how: Settings) -> float:
    """Run p of every target in one process (lowbit.bench.determinism.sequence)."""
    dest = p.folder(work / "together")
    _copy_inputs(base, dest, order)
    cmd = [sys.executable, "-m", "lowbit.bench.determinism.sequence"]
    for t in order:
        cmd += [*t.argv, "--"]
    return _process(cmd[:-1], dest, {**how.env, **p.env()}, how.timeout)


def run_order(targets: list[Target]) -> list[Target]:
    """The targets in an order where none overwrites another's input before it ran
    (pretrain last when a quantized target starts from it: each starts from base's copy)."""
    left, order = list(targets), []
    while left:
        t = next(t for t in left if not any(t.files.out in o.inputs for o in left if o is not t))
        order.append(t)
        left.remove(t)
    return order


def measure(
    base: Path, work: Path, targets: list[Target], runs: int, how: Settings
) -> list[Measured]:
    """Each target `runs` times, every run in its own copy of base's inputs under work/
    (`how.jobs` at once), every run compared with run 0. how.together: run i of every
    target in one process, so there are `runs` processes in all."""
    perturb = [Perturbation(i, how.vary) for i in range(runs)]
    with ThreadPoolExecutor(max_workers=max(1, how.jobs)) as pool:
        if how.together:
            order = run_order(targets)
            secs = list(pool.map(lambda p: _all(base, work, order, p, how), perturb))
            ran = [(p.folder(work / "together"), s) for p, s in zip(perturb, secs, strict=True)]
            done = dict.fromkeys(targets, ran)
        else:
            jobs = [(t, p) for t in targets for p in perturb]
            found = list(pool.map(lambda job: _one(base, work, *job, how), jobs))
            done = {t: found[k * runs : (k + 1) * runs] for k, t in enumerate(targets)}
    out = []
    for t in targets:
        m = Measured(t, [f for f, _ in done[t]], [s for _, s in done[t]])
        files = [_files(f, t.files) for f in m.folders]
        m.diffs = [compare_runs(files[0], f) for f in files[1:]]
        out.append(m)
    return out


def _files(root: Path, rel: RunFiles) -> RunFiles:
    live, metrics = rel.live, rel.live_metrics
    return RunFiles(
        root / rel.out,
        None if live is None else root / live,
        None if metrics is None else root / metrics,
    )
