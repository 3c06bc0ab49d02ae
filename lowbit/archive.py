"""Keep finished seeds' results in git: copy each run's small files out of runs/.

    lowbit archive --to results                # the runs in the workspace
    lowbit archive --to results --experiments  # every DVC experiment of HEAD (the queue's)

DVC caches the run folders (model.pt is large); the few kilobytes a report needs from
each run -- metrics.json, history.csv, run.json -- are copied to
`<to>/seed<seed>/<stage>/<slug>/` (the run's identity, lowbit.identity), a folder meant
to be committed. The report reads it beside runs/ (`report.results`), so a later seed
adds to the tables without rerunning earlier ones. With `--experiments` the files come
from each experiment's cached outputs (DVC's filesystem at the experiment's revision),
so seeds run with `dvc exp run --queue` are gathered without applying them one by one.
An archived run is never silently replaced by a different one.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from lowbit.checkpoint import atomic_write_bytes, require_writable, unwritable
from lowbit.errors import ConfigError
from lowbit.identity import RunId

FILES = ("metrics.json", "history.csv", "run.json")
# (run folder relative to runs_dir, {file name: bytes}) per finished run
Run = tuple[PurePosixPath, dict[str, bytes]]


def _runs(metrics_paths: list[PurePosixPath], root: PurePosixPath, read: Callable) -> Iterator[Run]:
    for m in sorted(metrics_paths):
        rel = m.parent.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue  # resume state and temp folders, never results
        files = {}
        for name in FILES:
            data = read(m.parent / name)
            if data is not None:
                files[name] = data
        yield rel, files


def _local_runs(runs_dir: Path) -> list[Run]:
    if not runs_dir.is_dir():
        raise ConfigError(f"runs folder not found: {runs_dir} (run the pipeline first)")
    found = [PurePosixPath(p) for p in runs_dir.rglob("metrics.json")]

    def read(p: PurePosixPath) -> bytes | None:
        return Path(p).read_bytes() if Path(p).is_file() else None

    return list(_runs(found, PurePosixPath(runs_dir), read))


def _experiment_runs(project: Path, runs_rel: str) -> list[Run]:
    """Runs of every experiment (and baseline commit) of HEAD, from DVC's cache."""
    from dvc.api import DVCFileSystem, exp_show

    out: list[Run] = []
    for row in exp_show(repo=str(project)):
        rev = row.get("rev")
        if not rev or rev == "workspace":
            continue
        fs = DVCFileSystem(str(project), rev=rev)
        out += _revision_runs(fs, PurePosixPath("/") / runs_rel, row.get("Experiment") or rev)
    return out


def _revision_runs(fs: Any, root: PurePosixPath, name: str) -> list[Run]:
    """The finished runs under `root` at one revision; none, with a warning, when its
    outputs are not in this DVC cache (a fresh clone holds none of the commit's own)."""
    from dvc_data.index import DataIndexError

    def read(p: PurePosixPath) -> bytes | None:
        return fs.read_bytes(str(p)) if fs.exists(str(p)) else None

    try:
        if not fs.exists(str(root)):
            return []
        found = [PurePosixPath(p) for p in fs.find(str(root)) if p.endswith("/metrics.json")]
        return list(_runs(found, root, read))  # read here, inside the guard
    except (DataIndexError, FileNotFoundError) as e:
        warnings.warn(
            f"{name}: its runs are not in this DVC cache ({type(e).__name__}): not archived; "
            "`dvc pull` them, or archive where they were trained",
            RuntimeWarning,
            stacklevel=2,
        )
        return []


def _target(rel: PurePosixPath, files: dict[str, bytes]) -> PurePosixPath:
    """seed<N>/<stage>/<slug> of a run, from its metrics.json (lowbit.identity)."""
    metrics = json.loads(files["metrics.json"])
    seed = metrics.get("seed")
    if not isinstance(seed, int) or not isinstance(metrics.get("stage"), str):
        raise ConfigError(f"{rel}/metrics.json: no integer 'seed' or no 'stage'; not a lowbit run")
    run = RunId.of(metrics, rel.name)
    return PurePosixPath(f"seed{seed}", run.stage, run.slug())


def _write(runs: list[Run], dest: Path, force: bool) -> list[Path]:
    """Write every run to dest/seed<N>/<stage>/<slug>; checks all before writing any."""
    if not runs:
        raise ConfigError("no finished runs found: nothing to archive")
    targets = [(dest / _target(rel, f), f) for rel, f in runs]
    seen: dict[Path, dict[str, bytes]] = {}
    for target, files in targets:
        if target in seen and seen[target] != files and not force:
            raise ConfigError(f"two different runs would be archived as {target}")
        seen[target] = files
        for name, data in files.items():
            old = target / name
            if not force and old.is_file() and old.read_bytes() != data:
                raise ConfigError(
                    f"{target} already holds other results of this seed; "
                    "pass --force to replace them"
                )
    require_writable(dest, "--to")  # a target that refuses files: before any write
    for target, files in seen.items():
        for name, data in files.items():
            try:
                atomic_write_bytes(target / name, data)
            except OSError as e:
                raise unwritable(target / name, e, "--to") from None
    return sorted(seen)


def archive(runs_dir: Path, dest: Path, force: bool = False) -> list[Path]:
    """Copy every finished run under runs_dir to dest/seed<N>/<run>; the folders written."""
    return _write(_local_runs(runs_dir), dest, force)


def archive_experiments(
    project: Path, runs_dir: Path, dest: Path, force: bool = False
) -> list[Path]:
    """The same for every DVC experiment of HEAD in the DVC project at `project`."""
    rel = runs_dir.resolve().relative_to(project.resolve()).as_posix()
    return _write(_experiment_runs(project, rel), dest, force)
