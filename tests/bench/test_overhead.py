"""lowbit.bench.overhead in quick mode: the report's structure and its numbers' sanity
(positive times and memory, consistent ratios), never the timings themselves."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from lowbit.bench import overhead


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    # 1 thread: a smoke run, and OpenMP's spinning makes tiny steps slow on a busy machine
    result = overhead.run_overhead(out_dir=out, quick=True, threads=1)
    assert torch.get_num_threads() == threads  # restored
    return out, result


def test_quick_run_writes_json_and_markdown(quick_run):
    out, result = quick_run
    on_disk = json.loads((out / "overhead.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    md = (out / "overhead.md").read_text()
    assert "| Variant | median ms | IQR ms | × FP | min ms | × FP (min) | CPU ms |" in md
    assert "peak MB | memory × FP |" in md
    for row in result["variants"].values():
        assert f"| {row['label']} |" in md


def test_every_variant_ran_or_says_why(quick_run):
    _, result = quick_run
    ran, skipped = set(result["variants"]), set(result["skipped"])
    assert ran | skipped == set(overhead.VARIANTS) and not ran & skipped
    assert {"fp", "lowbit_w4a4", "lowbit_w2a2", "lowbit_w2a2_sp", "lowbit_w2a2_kd"} <= ran
    assert all(isinstance(why, str) and why for why in result["skipped"].values())


def test_numbers_are_positive_and_consistent(quick_run):
    _, result = quick_run
    c = result["config"]
    assert c["quick"] and c["batch_size"] == 4 and c["reps"] == 2
    for name, row in result["variants"].items():
        assert len(row["times_ms"]) == c["reps"]
        assert row["median_ms"] == pytest.approx(statistics.median(row["times_ms"]), rel=1e-3)
        assert 0 < row["min_ms"] <= row["q25_ms"] <= row["median_ms"] <= row["q75_ms"]
        assert row["cpu_ms"] > 0 and row["cpu_ratio_fp"] > 0 and row["min_ratio_fp"] > 0
        assert row["iqr_ms"] == pytest.approx(row["q75_ms"] - row["q25_ms"])
        assert row["peak_mb"] > 0, (name, row["memory"])
        assert row["memory"]["state_mb"] > 0
        fp = result["variants"]["fp"]
        assert row["ratio_fp"] == pytest.approx(row["median_ms"] / fp["median_ms"], rel=1e-2)
        assert row["memory_ratio_fp"] == pytest.approx(row["peak_mb"] / fp["peak_mb"])
        for peer, ratio in row["ratio_peers"].items():
            assert peer in overhead.PEERS and peer != name and ratio > 0
    assert result["variants"]["fp"]["ratio_fp"] == pytest.approx(1.0)


def test_kd_reports_total_and_each_network(quick_run):
    _, result = quick_run
    kd = result["variants"]["lowbit_w2a2_kd"]
    parts = kd["parts"]
    assert set(parts) == {"teacher", "student"}
    assert all(p["median_ms"] > 0 for p in parts.values())
    # the two networks' shares add up to (at most) the whole step
    assert parts["teacher"]["median_ms"] + parts["student"]["median_ms"] <= kd["median_ms"] * 1.05


def test_machine_and_targets_recorded(quick_run):
    _, result = quick_run
    m = result["machine"]
    assert m["threads"] == 1 and m["torch"] == torch.__version__
    assert m["cpu"] and m["lowbit_kernels"] in ("cpp", "torch")
    t = result["targets"]
    assert t["time_ratio"] == 1.15 and t["memory_ratio"] == 1.3
    w2a2 = result["variants"]["lowbit_w2a2"]
    assert t["time_met"] == (w2a2["ratio_fp"] <= 1.15)
    assert "RSS" in result["memory_method"] or "cuda" in result["memory_method"]


def test_summary_quartiles():
    s = overhead.summary([0.001, 0.002, 0.003, 0.004, 0.005])  # seconds
    assert s["median_ms"] == pytest.approx(3.0)
    assert s["q25_ms"] == pytest.approx(2.0) and s["q75_ms"] == pytest.approx(4.0)
    assert s["iqr_ms"] == pytest.approx(2.0)


def test_memory_child_failure_is_reported_not_raised():
    out = overhead.measure_memory([["no_such_variant"]], torch.device("cpu"), 2, 1)
    assert "error" in out["no_such_variant"]
    assert "no_such_variant" in out["no_such_variant"]["error"]
