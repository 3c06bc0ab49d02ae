"""lowbit.bench.overhead in quick mode: the report's rows, its reference row and ratio
arithmetic, never the timings themselves (a quick run is a smoke run).

Every eager row of both models and both precisions runs. The compiled rows do not: they
cost over a minute per network on a cold inductor cache (a fresh CI machine, 207 s of the
suite), and what they time, a step under `torch.compile`, is held equal to eager by
tests/quant/test_compile.py and tests/test_compile_rounds.py."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from typer.testing import CliRunner

from lowbit.bench import overhead
from lowbit.cli import app
from lowbit.provenance import cpu_model

PATTERNS = ("fp.eager.*", "lowbit_w2a2.eager.*")
SCOPED = {
    f"{m}.eager.{p}" for m in ("fp", "lowbit_w2a2") for p in ("fp32", "bf16")
} | {"fp.eager.fp32.nchw"}  # fmt: skip


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    spec = overhead.OverheadSpec(
        device="cpu", variants=PATTERNS, quick=True, threads=1
    )  # 1 thread: OpenMP's spinning makes tiny steps slow on a busy machine
    result = overhead.run_overhead(spec, out)
    assert torch.get_num_threads() == threads  # restored
    return out, result


def test_quick_run_has_the_scoped_rows(quick_run):
    out, result = quick_run
    assert json.loads((out / "overhead.json").read_text()) == json.loads(json.dumps(result))
    assert set(result["variants"]) == SCOPED and not result["skipped"]
    assert not any(r["compiled"] for r in result["variants"].values())


def test_ratios_are_relative_to_the_fastest_fp_row(quick_run):
    _, result = quick_run
    rows = result["variants"]
    fp = {n: r for n, r in rows.items() if n.startswith("fp.")}
    ref = min(fp, key=lambda n: fp[n]["median_ms"])
    assert result["reference"]["row"] == ref
    assert result["reference"]["median_ms"] == rows[ref]["median_ms"]
    for name, row in rows.items():
        assert row["ratio_fastest_fp"] == pytest.approx(row["median_ms"] / rows[ref]["median_ms"])
        assert row["min_ratio_fastest_fp"] == pytest.approx(row["min_ms"] / rows[ref]["min_ms"])
        assert row["cpu_ratio_fastest_fp"] == pytest.approx(row["cpu_ms"] / rows[ref]["cpu_ms"])
        twin = name.replace("lowbit_w2a2.", "fp.")  # FP in the same execution
        assert row["fp_same_execution"] == twin
        assert row["ratio_fp_same"] == pytest.approx(row["median_ms"] / rows[twin]["median_ms"])
        assert row["memory_ratio_fp_same"] == pytest.approx(row["peak_mb"] / rows[twin]["peak_mb"])
    assert min(r["ratio_fastest_fp"] for r in fp.values()) == pytest.approx(1.0)


def test_targets_compare_within_each_precision(quick_run):
    _, result = quick_run
    rows, t = result["variants"], result["targets"]
    assert t["time_ratio"] == 1.15 and t["memory_ratio"] == 1.3
    assert {c["precision"] for c in t["checks"]} == {"fp32", "bf16"}
    for c in t["checks"]:
        same = [n for n in rows if n.split(".")[2] == c["precision"]]
        assert c["fp"] == min(
            (n for n in same if n.startswith("fp.")), key=lambda n: rows[n]["median_ms"]
        )
        assert c["w2a2"] == min(
            (n for n in same if n.startswith("lowbit")), key=lambda n: rows[n]["median_ms"]
        )
        ratio = rows[c["w2a2"]]["median_ms"] / rows[c["fp"]]["median_ms"]
        assert c["time_ratio"] == pytest.approx(ratio)
        assert c["time_met"] == (ratio <= 1.15)
    assert t["time_met"] == all(c["time_met"] for c in t["checks"])


def test_device_and_fastest_row_are_named(quick_run):
    out, result = quick_run
    m, md = result["machine"], (out / "overhead.md").read_text()
    assert m["device"] == "cpu" and cpu_model() in m["device_name"]
    assert f"Device: **{m['device_name']}**" in md
    assert f"Fastest FP row: `{result['reference']['row']}`" in md
    assert m["threads"] == 1 and m["torch"] == torch.__version__
    assert m["lowbit_kernels"] in ("cpp", "torch")


def test_markdown_lists_each_row(quick_run):
    out, result = quick_run
    md = (out / "overhead.md").read_text()
    assert "| Variant | row | median ms | IQR ms | min ms | CPU ms | peak MB |" in md
    for name, row in result["variants"].items():
        line = next(ln for ln in md.splitlines() if f"| `{name}` |" in ln)
        assert line.startswith(f"| {row['label']} |")
        assert f"| {row['median_ms']:.1f} |" in line
    assert "Targets for lowbit W2A2" in md and "quick mode" in md


def test_numbers_are_positive_and_consistent(quick_run):
    _, result = quick_run
    c = result["config"]
    assert c["quick"] and c["batch_size"] == 4 and c["reps"] == 2
    assert c["compiled_warmup"] == c["warmup"] + 2
    for name, row in result["variants"].items():
        assert len(row["times_ms"]) == c["reps"]
        assert row["median_ms"] == pytest.approx(statistics.median(row["times_ms"]), rel=1e-3)
        assert 0 < row["min_ms"] <= row["q25_ms"] <= row["median_ms"] <= row["q75_ms"]
        assert row["iqr_ms"] == pytest.approx(row["q75_ms"] - row["q25_ms"])
        assert row["cpu_ms"] > 0 and row["peak_mb"] > 0, (name, row["memory"])
        mem = row["memory"]
        assert mem["state_mb"] > 0 and mem["peak_mb"] == pytest.approx(
            mem["state_mb"] + mem["step_mb"]
        )


@pytest.fixture(scope="module")
def methods_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-methods")
    names = ("fp.eager.fp32", "lowbit_w4a4.eager.fp32", "lowbit_w2a2_sp.eager.fp32")
    names += ("lowbit_w2a2_kd.eager.fp32", "torch_ao_qat", "brevitas_w2a2")
    spec = overhead.OverheadSpec(device="cpu", variants=names, quick=True, threads=1)
    return overhead.run_overhead(spec, out)


def test_methods_and_peers_run_or_say_why(methods_run):
    ran, skipped = set(methods_run["variants"]), methods_run["skipped"]
    assert {"lowbit_w4a4.eager.fp32", "lowbit_w2a2_sp.eager.fp32", "torch_ao_qat.eager.fp32"} <= ran
    assert "lowbit_w2a2_kd.eager.fp32" in ran
    brevitas = {"brevitas_w2a2.eager.fp32", "brevitas_w2a2.eager.bf16"}
    assert brevitas <= ran | set(skipped) and all(skipped.values())
    fp = methods_run["variants"]["fp.eager.fp32"]
    assert "torch_ao_qat.eager.fp32" in fp["ratio_peers"]


def test_kd_reports_total_and_each_network(methods_run):
    kd = methods_run["variants"]["lowbit_w2a2_kd.eager.fp32"]
    parts = kd["parts"]
    assert set(parts) == {"teacher", "student"}
    assert all(p["median_ms"] > 0 for p in parts.values())
    # the two networks' shares add up to (at most) the whole step
    assert parts["teacher"]["median_ms"] + parts["student"]["median_ms"] <= kd["median_ms"] * 1.05


def test_cli_scopes_rows_and_rejects_unknown_ones(tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        app, ["bench", "overhead", "--variants", "nope", "--out-dir", str(tmp_path)]
    )
    assert res.exit_code == 2 and "matches no row" in res.output
    args = ["bench", "overhead", "--quick", "--device", "cpu", "--reps", "3"]
    res = runner.invoke(app, [*args, "--variants", "fp.eager.fp32", "--out-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "overhead.json").read_text())
    assert list(result["variants"]) == ["fp.eager.fp32"] and result["config"]["reps"] == 3
    assert "| FP, eager, fp32 | `fp.eager.fp32` |" in res.output
