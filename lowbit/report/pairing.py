"""How the arms of a claim pair up: the FP network each run's init chain starts from.

The methods of one seed are paired when they ran the same seeds (or on the ≥ 2 they
share: `matched`) from the same FP network (lowbit.report.claims); a run's start is
found by following its init path through the runs of its own folder (`fp_roots`). A
study that trains its FP networks once and starts every seed from them
(pipeline/cifar10-resnet20/study.sh) compares against one FP network, whose top-1 is
then a constant of the test (`shared_fp`).
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
    starts from. A run with init "scratch" (FP pretraining) is its own start; no init
    recorded: None (unknown). A run that recorded the weights it started from
    (init_weights_digest) continues with the run whose final weights they are, wherever its
    files are. Otherwise its init path "<runs_dir>/<stage>/<slug>/model.pt" is followed:
    to that run in the same seed folder, else in the seed folder the path names, else to
    the only run at that place (`_elsewhere`: a study whose seeds share seed 0's FP network
    names one start for every seed); a run that recorded other weights is never taken for
    it. A path that leads to no run is itself the start."""
    paths = run_paths(sub)
    info = {p: (r.seed, r.run, r.init) for p, r in zip(paths, sub.itertuples(), strict=True)}
    ended = _digests(sub, paths, "weights_digest")
    started = _digests(sub, paths, "init_weights_digest")
    # digest -> the run that ended with it; of one network in two folders, the first path
    made = {d: p for p, d in sorted(ended.items(), reverse=True)}
    locs = {p: _location(info[p][1]) for p in paths}
    siblings: dict[tuple, list[str]] = {}
    for p in paths:  # by seed and the folder holding its runs
        parts = PurePosixPath(p).parts
        siblings.setdefault((info[p][0], parts[: len(parts) - len(locs[p])]), []).append(p)
    folder = {p: key for key, ps in siblings.items() for p in ps}

    def root(path: str) -> str | None:
        for _ in range(len(paths) + 1):  # a chain visits each run at most once
            init = info[path][2]
            if not isinstance(init, str) or not init:
                return None
            if init == "scratch":
                return path
            if started.get(path) in made:  # by the weights themselves
                path = made[started[path]]
                continue
            parent = PurePosixPath(init).parent.parts
            found = _in_own_folder(parent, folder[path][1], siblings[folder[path]], locs)
            found = found or _elsewhere(parent, folder[path][1], siblings)
            if path in started:  # its start had a digest that no run here ended with
                found = [f for f in found if f[1] not in ended]
            if not found:
                return init
            path = max(found)[1]
        return None  # a cycle: no start

    return [root(p) for p in paths]


def run_paths(sub: pd.DataFrame) -> list[str]:
    """Each row's run folder: run_path, or run where a frame has no run_path."""
    return [str(p) for p in (sub["run_path"] if "run_path" in sub else sub["run"])]


def _digests(sub: pd.DataFrame, paths: list[str], column: str) -> dict[str, str]:
    """{run: its digest in `column`}; runs older than the column, or without a value
    (NaN when other runs have one), are left out."""
    values = sub[column] if column in sub else [None] * len(paths)
    return {p: d for p, d in zip(paths, values, strict=True) if isinstance(d, str) and d}


def _in_own_folder(parent: tuple[str, ...], here: tuple[str, ...], own: list[str],
                   locs: dict[str, tuple[str, ...]]) -> list[tuple[int, str]]:  # fmt: skip
    """The runs of the folder `here` at the place an init's folder `parent` names, as
    (rank, path); none when the init names another seed's folder ("runs/seed0/pretrain/fp"
    read in seed2/, which may hold an FP network of its own)."""
    found = []
    for p in own:
        loc = locs[p]
        named = parent[-len(loc) - 1 : -len(loc)]
        other_seed = bool(named) and _SEED_FOLDER.fullmatch(named[0]) and named != here[-1:]
        if parent[-len(loc) :] == loc and not other_seed:
            found.append((len(loc), p))
    return found


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


def matched(arms: list[pd.DataFrame], skip: int | None = None) -> list[set[int]]:
    """The seeds to leave out of each arm so that every arm (but `skip`, a shared FP
    network) has the seeds they all ran: a study that adds seeds to some cells first
    (docs/claims.md) keeps its other claims paired on the seeds they share. Nothing is left
    out when the arms ran the same seeds or share fewer than 2 (then Welch on all)."""
    seeds = [set(a["seed"]) for i, a in enumerate(arms) if i != skip]
    common = set.intersection(*seeds) if seeds else set()
    if len(common) < 2 or all(s == common for s in seeds):
        return [set() for _ in arms]
    return [set() if i == skip else set(a["seed"]) - common for i, a in enumerate(arms)]


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
