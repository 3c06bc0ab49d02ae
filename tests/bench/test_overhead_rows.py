"""The overhead benchmark's row catalog, selection and arithmetic, on made-up numbers
(no training steps; one small child process for the memory error path)."""

from __future__ import annotations

import pytest
import torch

from lowbit.bench import overhead
from lowbit.bench.overhead import rows as rows_mod
from lowbit.bench.overhead import variants as variants_mod
from lowbit.bench.overhead.variants import Variant, catalog, select
from lowbit.errors import ConfigError

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("device, mixed", [(CPU, "bf16"), (CUDA, "fp16")])
def test_catalog_has_the_grid_for_fp_and_w2a2(device, mixed):
    names = [v.name for v in catalog(device)]
    assert len(names) == len(set(names))
    for model in ("fp", "lowbit_w2a2", "lowbit_w4a4", "lowbit_w2a2_sp", "lowbit_w2a2_kd"):
        for mode in ("eager", "compiled"):
            assert {f"{model}.{mode}.fp32", f"{model}.{mode}.{mixed}"} <= set(names)
    assert [n for n in names if n.endswith(".nchw")] == ["fp.eager.fp32.nchw"]
    assert all(Variant.parse(n).name == n for n in names)
    assert all(v.channels_last for v in catalog(device) if v.name != "fp.eager.fp32.nchw")


def test_variant_execution_is_the_engines():
    ex = Variant.parse("lowbit_w2a2.compiled.bf16").execution
    assert (ex.channels_last, ex.precision, ex.compile) == (True, "bf16", True)
    assert not Variant.parse("fp.eager.fp32.nchw").execution.channels_last
    with pytest.raises(ConfigError):
        Variant.parse("fp.jit.fp32")


def test_select_by_network_pattern_and_mixed():
    rows = catalog(CUDA)
    assert [v.name for v in select(rows, ["fp"], CUDA)][-1] == "fp.eager.fp32.nchw"
    assert len(select(rows, ["fp"], CUDA)) == 5
    got = {v.name for v in select(rows, ["*.compiled.mixed"], CUDA)}
    assert got and all(n.endswith(".compiled.fp16") for n in got)
    assert select(rows, ["all"], CUDA) == rows
    order = select(rows, ["lowbit_w2a2.eager.fp32", "fp.eager.fp32"], CUDA)
    assert [v.name for v in order] == ["fp.eager.fp32", "lowbit_w2a2.eager.fp32"]  # catalog order
    with pytest.raises(ConfigError, match="matches no row"):
        select(rows, ["fp", "lowbit_w3a3"], CUDA)


def test_missing_brevitas_is_a_reason_not_an_error(monkeypatch):
    monkeypatch.setattr(variants_mod.importlib.util, "find_spec", lambda name: None)
    ok, skipped = variants_mod.available(catalog(CPU))
    assert set(skipped) == {"brevitas_w2a2.eager.fp32", "brevitas_w2a2.eager.bf16"}
    assert "pip install" in skipped["brevitas_w2a2.eager.fp32"]
    assert all(v.model != "brevitas_w2a2" for v in ok)


def _series(ms: float) -> dict[str, list[float]]:
    s = [ms / 1e3, 1.1 * ms / 1e3, 1.2 * ms / 1e3]
    return {"step": s, "cpu": [2 * v for v in s], "faults": [0.0, 0.0, 0.0]}


def test_reference_is_the_fastest_fp_row_not_the_default():
    medians = {
        "fp.eager.fp32": 100.0, "fp.compiled.bf16": 50.0, "fp.eager.fp32.nchw": 150.0,
        "lowbit_w2a2.eager.fp32": 120.0, "lowbit_w2a2.compiled.bf16": 54.0,
        "brevitas_w2a2.eager.fp32": 400.0,
    }  # fmt: skip
    variants = [Variant.parse(n) for n in medians]
    times = {n: _series(ms) for n, ms in medians.items()}
    memory = {n: {"peak_mb": 10.0 + i} for i, n in enumerate(medians)}
    rows, ref = rows_mod.variant_rows(variants, times, memory, {})
    assert ref == "fp.compiled.bf16"
    w = rows["lowbit_w2a2.eager.fp32"]
    assert w["ratio_fastest_fp"] == pytest.approx(1.1 * 120 / (1.1 * 50))
    assert w["ratio_fp_same"] == pytest.approx(1.2) and w["fp_same_execution"] == "fp.eager.fp32"
    assert w["memory_ratio_fp_same"] == pytest.approx(13 / 10)
    assert w["ratio_peers"] == {"brevitas_w2a2.eager.fp32": pytest.approx(120 / 400)}
    t = rows_mod.targets(rows, "cuda")
    assert t["time_ratio"] == 1.10
    by = {c["precision"]: c for c in t["checks"]}
    assert by["bf16"]["time_ratio"] == pytest.approx(54 / 50) and by["bf16"]["time_met"]
    assert by["fp32"]["fp"] == "fp.eager.fp32" and not by["fp32"]["time_met"]
    assert t["peers"][0]["speedup"] == pytest.approx(400 / 120) and t["peers_met"]


def test_summary_quartiles():
    s = overhead.summary([0.001, 0.002, 0.003, 0.004, 0.005])  # seconds
    assert s["median_ms"] == pytest.approx(3.0)
    assert s["q25_ms"] == pytest.approx(2.0) and s["q75_ms"] == pytest.approx(4.0)
    assert s["iqr_ms"] == pytest.approx(2.0)


def test_memory_child_failure_is_reported_not_raised():
    out = overhead.measure_memory([["no_such.eager.fp32"]], CPU, 2, 1)
    assert "not a benchmark row name" in out["no_such.eager.fp32"]["error"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        overhead.resolve_device("cuda")
