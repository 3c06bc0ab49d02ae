"""What travels to the offline GPU machine, made here in git-ignored .carry/:

    wheels/     cp312 manylinux wheels of what lowbit needs beyond the device image
                (pinned; never torch: the image's own is used)
    cifar10/    train.zip / test.zip: the first k images per class of the shared CIFAR-10
                JPEG zips (sorted names: the same subset on every machine), same layout
    MANIFEST.json  versions, sizes and sha256 of every file

dvclive and its dvc tree do not travel: the check's runs set common.live_dir: null, and
lowbit imports dvclive only to log into a live_dir.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

from gpucheck.record import atomic_write

ROOT = Path(__file__).resolve().parents[2]
# the device image lacks these (docs: platform.md, "The GPU machine"); versions as tested
PINS = {
    "pydantic": "2.14.4",
    "pydantic-core": "2.50.5",
    "annotated-types": "0.8.0",
    "typing-inspection": "0.4.5",
    "typing-extensions": "4.16.0",  # pydantic's floor can be above an image's copy
    "submitit": "1.5.4",
    "cloudpickle": "3.1.3",
    # lowbit.cli is written against typer 0.29, which ships its own click; the image's
    # typer is of unknown age
    "typer": "0.29.2",
    "annotated-doc": "0.0.7",
    "shellingham": "1.5.4",
}
PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64")


def download_wheels(dest: Path, python: str = "3.12") -> list[Path]:
    """The pinned wheels for CPython `python` on x86-64 Linux, with pip (no dependencies)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        python,
        "--implementation",
        "cp",
        "-d",
        str(dest),
    ]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    out = subprocess.run(
        [*cmd, *(f"{k}=={v}" for k, v in PINS.items())], capture_output=True, text=True
    )
    if out.returncode != 0:
        lines = [ln for ln in out.stderr.splitlines() if "is ignored" not in ln]
        raise SystemExit(f"prepare: pip download failed: {' | '.join(lines[-3:])}")
    wanted = {k.replace("-", "_").lower() for k in PINS}
    wheels = sorted(dest.glob("*.whl"))
    for stale in (w for w in wheels if w.name.split("-")[0].lower() not in wanted):
        stale.unlink()  # an earlier pin's wheel would be installed too
    return sorted(dest.glob("*.whl"))


def subset(src: Path, dest: Path, per_class: dict[str, int]) -> dict[str, int]:
    """dest/<split>.zip holding the first k files per class of src/<split>.zip."""
    counts = {}
    for split, k in per_class.items():
        if not (src / f"{split}.zip").is_file():
            raise SystemExit(f"prepare: {src / split}.zip not found (CIFAR-10 JPEG zips)")
        with zipfile.ZipFile(src / f"{split}.zip") as zin:
            by_class: dict[str, list[str]] = {}
            for name in sorted(n for n in zin.namelist() if not n.endswith("/")):
                by_class.setdefault(name.split("/")[-2], []).append(name)
            dest.mkdir(parents=True, exist_ok=True)
            tmp = dest / f".{split}.zip.tmp"
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zout:
                for names in by_class.values():
                    for name in names[:k]:
                        zout.writestr(name, zin.read(name))
            tmp.replace(dest / f"{split}.zip")
        counts[split] = sum(min(k, len(v)) for v in by_class.values())
    return counts


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def travelling_bytes(carry: Path) -> dict[str, int]:
    """Bytes that travel: the repository's tracked and not-ignored files, and `carry`."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    files = [ROOT / f for f in out.stdout.split("\0") if f and (ROOT / f).is_file()]
    repo = sum(f.stat().st_size for f in files)
    extra = sum(f.stat().st_size for f in carry.rglob("*") if f.is_file())
    return {"repository": repo, "carry": extra, "total": repo + extra}


def prepare(
    carry: Path,
    data_root: Path,
    per_class: tuple[int, int],
    python: str = "3.12",
    wheels: bool = True,
) -> dict:
    """Make `carry` and its manifest; print the carry list and the command."""
    files = (
        download_wheels(carry / "wheels", python) if wheels else sorted(carry.glob("wheels/*.whl"))
    )
    counts = subset(data_root, carry / "cifar10", {"train": per_class[0], "test": per_class[1]})
    manifest = {
        "pins": PINS,
        "images": counts,
        "source": str(data_root),
        "files": {
            str(f.relative_to(carry)): {"bytes": f.stat().st_size, "sha256": _sha256(f)}
            for f in sorted(carry.rglob("*"))
            if f.is_file() and f.name != "MANIFEST.json"
        },
    }
    manifest["travel_bytes"] = travelling_bytes(carry)
    atomic_write(carry / "MANIFEST.json", json.dumps(manifest, indent=1) + "\n")
    rel = carry.resolve().relative_to(ROOT) if carry.resolve().is_relative_to(ROOT) else carry
    mib = {k: round(v / 2**20, 1) for k, v in manifest["travel_bytes"].items()}
    print(f"prepared {carry}: {len(files)} wheels, {counts} CIFAR-10 images")
    print(f"travels: {mib['total']} MiB (repository {mib['repository']}, carry {mib['carry']})")
    print(f"carry: {json.dumps([str(rel)])}")
    print('command: bash scripts/gpu-check.sh --out "$OUT"   (timeout_s 600)')
    return manifest
