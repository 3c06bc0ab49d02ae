"""Several `lowbit` commands in one process, one after another:

    python -m lowbit.bench.determinism.sequence stage direct --bits 2 -- stage pretrain

Each command goes through the same CLI as `lowbit …`; the process pays torch's import
once for all of them (about 10 s of CPU a process on a small machine, more than a
shrunk stage trains), which keeps a test that runs every stage kind several times cheap.
Exit status: 0, or the first failing command's.
"""

from __future__ import annotations

import sys


def split(argv: list[str]) -> list[list[str]]:
    """The commands between `--` separators.

    >>> split(["stage", "pretrain", "--", "stage", "direct", "--bits", "2"])
    [['stage', 'pretrain'], ['stage', 'direct', '--bits', '2']]
    """
    out: list[list[str]] = [[]]
    for a in argv:
        if a == "--":
            out.append([])
        else:
            out[-1].append(a)
    return [c for c in out if c]


def main(argv: list[str] | None = None) -> int:
    from lowbit.cli import app

    for command in split(sys.argv[1:] if argv is None else argv):
        print(f"$ lowbit {' '.join(command)}", flush=True)
        try:
            rc = app(command, standalone_mode=False)
        except SystemExit as e:  # a failing stage: `error: …` printed, exit status set
            rc = e.code
        if rc not in (None, 0):
            return int(rc) if isinstance(rc, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
