"""Keep a finished seed's results in git: copy each run's small files out of runs/.

    lowbit archive --to results          # runs/<stage>/<variant>/ -> results/seed<N>/...

DVC caches the run folders (model.pt is large); the few kilobytes a report needs from each
run -- metrics.json, history.csv, run.json -- are copied to `<to>/seed<seed>/<stage>/
<variant>/`, a folder meant to be committed. The report reads it beside runs/
(`report.results`), so a later seed adds to the table without rerunning earlier ones.
An archived run is never silently replaced by a different one.
"""

from __future__ import annotations

import json
from pathlib import Path

from lowbit.checkpoint import atomic_write_bytes
from lowbit.errors import ConfigError

FILES = ("metrics.json", "history.csv", "run.json")


def _pending(runs_dir: Path, dest: Path) -> list[tuple[Path, Path]]:
    """(run folder, its archive folder) for every finished run under runs_dir."""
    out = []
    for metrics in sorted(runs_dir.rglob("metrics.json")):
        run = metrics.parent
        if any(part.startswith(".") for part in run.relative_to(runs_dir).parts):
            continue  # resume state and temp folders, never results
        seed = json.loads(metrics.read_text()).get("seed")
        if not isinstance(seed, int):
            raise ConfigError(f"{metrics}: no integer 'seed'; not a lowbit run")
        out.append((run, dest / f"seed{seed}" / run.relative_to(runs_dir)))
    return out


def archive(runs_dir: Path, dest: Path, force: bool = False) -> list[Path]:
    """Copy every run's FILES to dest/seed<N>/<run>; returns the archive folders written.

    A folder that already holds different files is an error unless `force`; checks every
    run before writing any, so a refusal leaves the archive as it was."""
    if not runs_dir.is_dir():
        raise ConfigError(f"runs folder not found: {runs_dir} (run the pipeline first)")
    pairs = _pending(runs_dir, dest)
    if not pairs:
        raise ConfigError(f"no finished runs under {runs_dir}: nothing to archive")
    for run, target in [] if force else pairs:
        for name in FILES:
            src, dst = run / name, target / name
            if src.is_file() and dst.is_file() and dst.read_bytes() != src.read_bytes():
                raise ConfigError(
                    f"{target} already holds other results of this seed; "
                    "pass --force to replace them"
                )
    for run, target in pairs:
        for name in FILES:
            if (run / name).is_file():
                atomic_write_bytes(target / name, (run / name).read_bytes())
    return [t for _, t in pairs]
