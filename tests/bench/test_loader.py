"""The loader benchmark on a small subset of the shared CIFAR-10 JPEG zips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lowbit.bench.loader import TARGET_RATIO, run_loader_bench
from lowbit.data import ffcv_available

ZIPS = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10"

pytestmark = [
    pytest.mark.ffcv,
    pytest.mark.skipif(not ffcv_available(), reason="FFCV cannot be imported"),
    pytest.mark.skipif(not (ZIPS / "train.zip").is_file(), reason="no shared CIFAR-10 zips"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


def test_bench_compares_the_same_work_and_writes_its_report(tmp_path):
    r = run_loader_bench(ZIPS, tmp_path, batch_size=8, workers=1, epochs=1, subset=3)
    assert r["train_images"] == 30  # 3 per class
    sides = [r["ffcv"], r["ffcv_jpeg"], r["lowbit_torch_backend"], r["torchvision"]]
    # drop_last on every side: 3 batches of 8; the same output tensors
    assert [s["images_per_epoch"] for s in sides] == [24, 24, 24, 24]
    assert {s["output"] for s in sides} == {"float32 (8, 3, 32, 32)"}
    assert all(s["images_per_s"] > 0 for s in sides)
    ratio = r["ffcv"]["images_per_s"] / r["torchvision"]["images_per_s"]
    assert r["ratio_ffcv_over_torchvision"] == pytest.approx(ratio)
    assert r["meets_target"] == (ratio >= TARGET_RATIO)
    assert json.loads((tmp_path / "loader.json").read_text())["ratio_ffcv_over_torchvision"] == (
        pytest.approx(ratio)
    )
    jpeg = r["ffcv_jpeg"]["images_per_s"] / r["torchvision"]["images_per_s"]
    assert r["ratio_ffcv_jpeg_over_torchvision"] == pytest.approx(jpeg)
    md = (tmp_path / "loader.md").read_text()
    assert (
        f"{ratio:.1f}x" in md
        and f"{jpeg:.1f}x" in md
        and r["environment"]["versions"]["ffcv"] in md
    )
