"""The report's provenance says what carries across hosts: one host kind and software stack
(bitwise reruns) or several (agreement within seed noise only)."""

from __future__ import annotations

import json

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


def test_a_run_resumed_on_another_stack_counts_that_stack_and_is_named():
    runs = _runs(["Xeon", "Xeon"], ["AVX512", "AVX512"]).assign(
        resumed=[0, 1], resumed_stacks=["", "EPYC / AVX2 / torch 2.14.1"]
    )
    text = provenance(runs)
    assert "come from 2 host kinds or software stacks" in text
    assert "resumed by a later session (run.json: provenance.resumed): r1" in text
    same = runs.assign(resumed_stacks=["", "Xeon / AVX512 / torch 2.14.1"])
    assert "one kind of host and one software stack" in provenance(same)


def test_run_json_s_resumed_sessions_become_their_stacks(tmp_path):
    from lowbit.report.collect import read_provenance

    first = {"cpu": "Xeon", "cpu_capability": "AVX512", "versions": {"torch": "2.14.1"}}
    later = {"cpu": "EPYC", "cpu_capability": "AVX2", "versions": {"torch": "2.14.1"}}
    (tmp_path / "run.json").write_text(
        json.dumps({"provenance": {**first, "resumed": [{**later, "epochs": 2}]}})
    )
    prov = read_provenance(tmp_path)
    assert prov["resumed"] == 1 and prov["resumed_stacks"] == "EPYC / AVX2 / torch 2.14.1"
    (tmp_path / "run.json").write_text(json.dumps({"provenance": first}))  # an older run
    assert read_provenance(tmp_path)["resumed"] == 0
