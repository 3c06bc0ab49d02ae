"""The device check's dry run, offline, on an emulated device image (tests/scripts/image.py).

What travels is made as for the GPU machine (scripts/gpu_check.py prepare: pinned wheels,
here for this interpreter's Python, and a CIFAR-10 subset), then the check runs with
--device cpu --quick under a Python that holds only the image's packages: the carried
wheels are installed with --no-index, and every step must pass. This keeps the dry run
working; the committed reports/bench/gpu-check-dryrun.md is the full one, run on Python
3.12 with torch 2.11 as on the device (scripts/device-venv.sh).

Cost: the wheels come through pip (its cache after the first run), the run itself takes
one to three minutes on two cores: one model per step, tiny data, no compile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data.conftest import CIFAR10_CLASSES, CIFAR10_ZIPS, image_bytes, write_zip
from tests.scripts import image

ROOT = Path(__file__).resolve().parents[2]
CHECK = [sys.executable, str(ROOT / "scripts" / "gpu_check.py")]


def cifar_zips(root: Path) -> Path:
    """The shared CIFAR-10 JPEG zips, or where a host lacks them, zips of their layout
    (<split>/<class>/<n>.jpg, 32x32) holding just the images the carry takes: the dry run
    checks that every step runs and resumes, not what it learns (its accuracy floor is 0)."""
    if (CIFAR10_ZIPS / "train.zip").is_file():
        return CIFAR10_ZIPS
    k = 0
    for split, n in (("train", 16), ("test", 6)):
        files = {}
        for c in CIFAR10_CLASSES:
            for i in range(n):
                files[f"{split}/{c}/{i:04d}.jpg"] = image_bytes(k, (32, 32))
                k += 1
        write_zip(root / f"{split}.zip", files)
    return root


@pytest.fixture(scope="module")
def carry(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("carry")
    zips = cifar_zips(tmp_path_factory.mktemp("cifar10"))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    args = [
        "prepare",
        "--carry",
        str(out),
        "--data-root",
        str(zips),
        "--train-per-class",
        "16",
        "--val-per-class",
        "6",
        "--python-version",
        version,
    ]
    done = subprocess.run([*CHECK, *args], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'carry: ["' in done.stdout and "bash scripts/gpu-check.sh" in done.stdout
    return out


def test_the_carry_is_pinned_and_small(carry):
    manifest = json.loads((carry / "MANIFEST.json").read_text())
    wheels = sorted(p.name for p in (carry / "wheels").glob("*.whl"))
    assert len(wheels) == len(manifest["pins"]) and not any("torch" in w for w in wheels)
    for name, version in manifest["pins"].items():
        assert any(w.lower().startswith(f"{name.replace('-', '_')}-{version}-") for w in wheels)
    assert manifest["images"] == {"train": 160, "test": 60}
    assert manifest["travel_bytes"]["total"] < 32 * 2**20  # well under the 64 MiB that travel


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_check_runs_offline_on_the_device_image(carry, tmp_path):
    python = image.make(tmp_path / "image")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OUT")}
    for lacking in ("pydantic", "submitit", "dvclive", "ffcv"):  # from /: no repo folders
        probe = subprocess.run([python, "-c", f"import {lacking}"], capture_output=True,
                               env=env, cwd="/")  # fmt: skip
        assert probe.returncode != 0, f"the emulated image must lack {lacking}"
    out = tmp_path / "out"
    args = [
        "--device",
        "cpu",
        "--quick",
        "--out",
        str(out),
        "--carry",
        str(carry),
        "--site",
        str(tmp_path / "site"),
    ]
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu-check.sh"), *args],
        env={**env, "PYTHON": str(python)},
        capture_output=True,
        text=True,
    )
    report = json.loads((out / "gpu-check.json").read_text())
    summary = {step: st["status"] for step, st in report["steps"].items()}
    assert done.returncode == 0, (summary, (out / "gpu-check.md").read_text()[-3000:])
    assert summary == dict.fromkeys(("setup", "quant", "steptime", "training", "ddp"), "PASS")
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu-check.json",
        "gpu-check.log",
        "gpu-check.md",
    ]
    setup = {c["name"]: c for c in report["records"]["setup"]["checks"]}
    assert setup["carried wheels installed offline"]["status"] == "PASS"
    assert report["records"]["setup"]["info"]["versions"]["pydantic"] == "2.14.4"  # the carried one
