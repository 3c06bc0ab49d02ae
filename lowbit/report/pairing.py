"""How the arms of a claim pair up: the FP network each run's init chain starts from.

The methods of one seed are paired when they ran the same seeds from the same FP network
(lowbit.report.claims); a run's start is found by following its init path through the runs
of its own folder (`fp_roots`). A study that trains its FP networks once and starts every
seed from them (pipeline/cifar10-resnet20/study.sh) compares against one FP network, whose
top-1 is then a constant of the test (`shared_fp`).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import pandas as pd

_SEED_FOLDER = re.compile(r"seed\d+")


def _location(run: str) -> tuple[str, ...]:
    """A run's folder under its runs folder, "<stage>/<slug>": committed results keep
    each seed under seed<N>/ (lowbit archive), so that first part is dropped."""
    parts = PurePosixPath(run).parts
    return parts[1:] if parts and _SEED_FOLDER.fullmatch(parts[0]) else parts


def fp_roots(sub: pd.DataFrame) -> list[str | None]:
    """Per row of `sub` (one model and dataset): the run folder (run_path) its init chain
    starts from. A run with init "scratch" (FP pretraining) is its own start; a run
    initialised from "<runs_dir>/<stage>/<slug>/model.pt" continues with that run of the
    same seed in the same folder of runs; a path that matches no run is itself the start;
    no init recorded: None (unknown). A run that recorded the weights it started from
    (init_weights_digest) continues with the run whose final weights they are, wherever
    its files are, and with none if no run has them. Without them, an init that names no
    run of its own folder is looked up elsewhere (`_elsewhere`): a study whose seeds share
    seed 0's FP network names one start for every seed."""
    paths = [str(p) for p in (sub["run_path"] if "run_path" in sub else sub["run"])]
    info = {p: (r.seed, r.run, r.init) for p, r in zip(paths, sub.itertuples(), strict=True)}
    made, started = _digests(sub, paths)

    def folder(path: str) -> tuple:  # the seed and the folder holding its runs
        seed, run, _ = info[path]
        parts = PurePosixPath(path).parts
        return seed, parts[: len(parts) - len(_location(run))]

    siblings: dict[tuple, list[str]] = {}
    for p in paths:
        siblings.setdefault(folder(p), []).append(p)

    def root(path: str) -> str | None:
        for _ in range(len(paths) + 1):  # a chain visits each run at most once
            init = info[path][2]
            if not isinstance(init, str) or not init:
                return None
            if init == "scratch":
                return path
            if path in started:  # by the weights themselves: no run ended with them, no start
                if started[path] not in made:
                    return init
                path = made[started[path]]
                continue
            parent = PurePosixPath(init).parent.parts
            found = [
                (len(loc), p)
                for p in siblings[folder(path)]
                if parent[-len(loc := _location(info[p][1])) :] == loc
            ] or _elsewhere(parent, folder(path)[1], siblings)
            if not found:
                return init
            path = max(found)[1]
        return None  # a cycle: no start

    return [root(p) for p in paths]


def _digests(sub: pd.DataFrame, paths: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """({weights digest: the run that ended with those weights}, {run: the digest of the
    weights it started from}); runs without the columns (older ones) are in neither. Of
    two runs with the same final weights (one network in two folders) the first path."""

    def column(name: str) -> list:
        return list(sub[name]) if name in sub else [None] * len(paths)

    ends = sorted(zip(paths, column("weights_digest"), strict=True), reverse=True)
    made = {d: p for p, d in ends if isinstance(d, str) and d}  # the first path last: kept
    started = {p: d for p, d in zip(paths, column("init_weights_digest"), strict=True)
               if isinstance(d, str) and d}  # fmt: skip
    return made, started


def _elsewhere(parent: tuple[str, ...], here: tuple[str, ...],
              siblings: dict[tuple, list[str]]) -> list[tuple[int, str]]:  # fmt: skip
    """The run an init's folder `parent` names outside the run's own folder, as [(rank, run
    path)]: one in the seed folder the init names ("runs/seed0/pretrain/fp" → seed0/
    pretrain/fp), else the only run anywhere at that location (a seed folder whose pretrain/
    links to seed 0's: "runs/seed1/pretrain/fp", seed 1 holding no FP run of its own);
    several candidates and none named: [] (unknown). Those beside `here` rank first."""
    found = []
    for (_, where), paths in siblings.items():
        for p in paths:
            loc = PurePosixPath(p).parts[len(where) :]
            if loc and parent[-len(loc) :] == loc:
                named = bool(where) and parent[-len(loc) - 1 : -len(loc)] == where[-1:]
                found.append((named, int(where[:-1] == here[:-1]), p))
    pick = [f for f in found if f[0]] or (found if len(found) == 1 else [])
    return [(rank, p) for _, rank, p in pick]


def unpaired(arms: list[pd.DataFrame]) -> str:
    """Why the arms cannot be paired by seed, "" when they can."""
    if any(a["seed"].duplicated().any() for a in arms):
        return "a seed ran twice"
    if len({frozenset(a["seed"]) for a in arms}) > 1:
        return "different seeds"
    starts = [a.set_index("seed")["root"] for a in arms]
    if any(s.isna().any() for s in starts):
        return "FP start unknown"
    if any(not s.sort_index().equals(starts[0].sort_index()) for s in starts[1:]):
        return "different FP starts"
    return ""


def shared_fp(arms: list[pd.DataFrame]) -> int | None:
    """The index of the arm that is one FP network every seed of the others started from
    (a study that trains its FP networks once: pipeline/cifar10-resnet20/study.sh), None
    when there is none. That arm is one run of FP pretraining; every other arm ran the same
    ≥ 2 seeds, and all of their runs descend from one start, so no seed had an FP network
    of its own to compare with."""
    single = [i for i, a in enumerate(arms) if len(a) == 1 and bool(a["start"].iloc[0])]
    others = [a for i, a in enumerate(arms) if i not in single]
    if len(single) != 1 or not others or unpaired(others) or len(others[0]) < 2:
        return None
    roots = pd.concat([a["root"] for a in others])
    return single[0] if roots.nunique() == 1 else None
