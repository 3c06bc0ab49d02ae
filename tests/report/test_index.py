"""The report's provenance says what carries across hosts: one host kind and software stack
(bitwise reruns) or several (agreement within seed noise only)."""

from __future__ import annotations

import pandas as pd

from lowbit.report.index import provenance


def _runs(cpus: list[str], caps: list[str]) -> pd.DataFrame:
    n = len(cpus)
    return pd.DataFrame({
        "run": [f"r{i}" for i in range(n)], "commit": ["abc"] * n, "dirty": [False] * n,
        "hostname": ["h"] * n, "cpu": cpus, "cpu_capability": caps, "threads": [2] * n,
        "versions": ["torch 2.14.1"] * n, "device": ["cpu"] * n, "started": [""] * n,
        "has_run_json": [True] * n,
    })  # fmt: skip


def test_one_host_kind_promises_the_same_bytes():
    text = provenance(_runs(["Xeon", "Xeon"], ["AVX512", "AVX512"]))
    assert "one kind of host and one software stack" in text and "same bytes" in text


def test_several_host_kinds_promise_seed_noise_only():
    text = provenance(_runs(["Xeon", "Xeon"], ["AVX512", "AVX2"]))  # one model, other kernels
    assert "come from 2 host kinds or software stacks" in text and "within seed noise" in text


def test_a_changed_checkout_names_its_changed_files():
    runs = _runs(["Xeon"] * 3, ["AVX512"] * 3).assign(
        dirty=[True, True, False], dirty_files=["study.sh", "", ""]
    )
    text = provenance(runs)
    assert "`abc (changed: study.sh)` (1 run)" in text
    assert "`abc (dirty)` (1 run)" in text  # an older run.json without the file list
    assert "`abc` (1 run)" in text
