"""Every kind of training stage gives the same bytes in every process on one host: three
fresh processes, each training every stage kind through the `lowbit stage` CLI from
identical inputs, with the environment perturbed (hash seed, glibc's fill byte for
allocations, environment size, working directory depth), agree on every tensor of
model.pt, on metrics.json, history.csv and the dvclive log (timings left out). The
harness is lowbit.bench.determinism; scripts/determinism.py runs it at full size, one
process per stage run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from lowbit.bench.determinism import plan, runs
from lowbit.bench.determinism.compare import RunFiles, compare_runs

RUNS = 3
OPTIM = {"lr": 0.02, "schedule": "cosine"}
# 8x8 digits, 13 training images per class (two steps of 64 per epoch), one epoch per
# round; bit decay and TS+PQ+KD take two steps (4 then 2 bits), so they cross rounds,
# and SP trains two epochs, so its precision ramp moves
PARAMS = {
    "common": {"seed": 0, "dataset": "digits", "batch_size": 64, "workers": 0, "loader": "torch",
               "progress": False, "data_dir": "data", "runs_dir": "runs", "live_dir": "dvclive"},
    "prepare": {"image_size": 8, "train_per_class": 13},
    "pretrain": {"epochs": 1, "optim": {"lr": 0.1, "schedule": "cosine"}},
    "direct": {"epochs": 1, "optim": OPTIM},
    "quantize_weights": {"epochs": 1, "optim": OPTIM},
    "quantize_activations": {"epochs": 1, "optim": OPTIM},
    "bit_decay": {"epochs": 1, "step_epochs": 1, "schedule": [4, 2], "optim": OPTIM},
    "stochastic_precision": {"epochs": 2, "optim": OPTIM},
    "distill": {"epochs": 1, "optim": OPTIM},
    "ts_pq_kd": {"epochs": 1, "step_epochs": 1, "schedule": [4, 2], "optim": OPTIM},
}  # fmt: skip
# stage → epochs its history holds (TS+PQ+KD: weights, then activations, per step)
STAGES = {
    "pretrain": 1, "direct": 1, "quantize-weights": 1, "quantize-activations": 1,
    "bit-decay": 2, "stochastic-precision": 2, "distill": 1, "ts-pq-kd": 4,
}  # fmt: skip


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict[str, runs.Measured]:
    """Every stage RUNS times from one prepared base (prepare, pretrain, quantize-weights
    made once): RUNS processes, each training every stage in turn from the base's copies
    (torch's import, ~10 s of CPU, paid once a process, not once a stage), as many at
    once as there are CPUs, one thread each."""
    tmp = tmp_path_factory.mktemp("determinism")
    src = tmp / "src.yaml"
    src.write_text(yaml.safe_dump(PARAMS))
    params = plan.write_params(src, tmp / "base", [])
    targets = [plan.target(params, s, 2) for s in STAGES]
    jobs = min(RUNS, len(os.sched_getaffinity(0)))
    how = runs.Settings(runs.environment(1, {}), timeout=600, jobs=jobs, together=True)
    runs.prepare_base(tmp / "base", targets, how)
    return {m.target.stage: m for m in runs.measure(tmp / "base", tmp, targets, RUNS, how)}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_every_process_trains_the_same_bytes(measured, stage):
    m = measured[stage]
    assert len({str(f) for f in m.folders}) == RUNS
    # the runs wrote what is compared: a trained network, every epoch, a dvclive log
    out = m.folders[0] / m.target.files.out
    state = torch.load(out / "model.pt", weights_only=True)
    assert sum(t.numel() for t in state["nets"]["student"]["model"].values()) > 200_000
    assert len((out / "history.csv").read_text().splitlines()) == 1 + STAGES[stage]
    live = m.folders[0] / m.target.files.live
    top1 = (live / "plots" / "metrics" / "val" / "top1.tsv").read_text().splitlines()
    assert len(top1) == 1 + STAGES[stage]
    # and every run equals run 0, byte for byte (timings aside)
    report = "\n".join(f"run {i + 1}: {d}" for i, ds in enumerate(m.diffs) for d in ds[:5])
    assert m.identical, f"{stage} differs across processes:\n{report}"


def test_a_run_compared_with_itself_is_identical_and_one_flipped_bit_is_found(tmp_path):
    """The comparison finds one changed bit of one tensor, one epoch's loss in history.csv
    and in the dvclive log, and ignores timings; no training (synthetic outputs)."""
    a, b = _fake_run(tmp_path / "a"), _fake_run(tmp_path / "b")
    assert compare_runs(a, b) == []
    w = torch.load(b.out / "model.pt", weights_only=True)
    w["nets"]["student"]["model"]["conv.weight"].view(torch.int32)[3] ^= 1  # one ulp
    torch.save(w, b.out / "model.pt")
    history = (b.out / "history.csv").read_text().replace("2,1,0.5,", "2,1,0.51,")
    (b.out / "history.csv").write_text(history)
    (b.live / "loss.tsv").write_text("step\tloss\n0\t1.0\n1\t0.51\n")
    diffs = compare_runs(a, b)
    assert [(d.file, d.where) for d in diffs] == [
        ("model.pt", "nets.student.model.conv.weight"),
        ("history.csv", "epoch 2 (round 1)"),
        ("dvclive/loss.tsv", "step 1"),
    ]
    assert diffs[0].detail == "1 of 8 elements, max |a-b| 5.96e-08 (1 ulp)"
    assert diffs[1].detail == "train_loss 0.5 vs 0.51" and diffs[1].step == 1


def _fake_run(root: Path) -> RunFiles:
    """A run's outputs as a stage writes them, with a timing that differs per folder."""
    files = RunFiles(root / "out", root / "live", root / "live.json")
    files.out.mkdir(parents=True)
    files.live.mkdir()
    weight = torch.linspace(0.5, 1.0, 8)
    torch.save({"nets": {"student": {"model": {"conv.weight": weight}}},
                "config": {"base_dir": str(root)}}, files.out / "model.pt")  # fmt: skip
    wall = len(str(root)) + root.name.count("b")  # differs between the two folders
    (files.out / "metrics.json").write_text(f'{{"top1": 50.0, "wall_s": {wall}}}')
    rows = f"epoch,round,train_loss,epoch_s\n1,1,1.0,{wall}\n2,1,0.5,{wall}\n"
    (files.out / "history.csv").write_text(rows)
    (files.live / "loss.tsv").write_text("step\tloss\n0\t1.0\n1\t0.5\n")
    files.live_metrics.write_text('{"top1": 50.0, "step": 2}')
    return files


def test_runs_differ_in_every_perturbation_and_no_stage_overwrites_an_input_first(tmp_path):
    perturbed = [runs.Perturbation(i) for i in range(RUNS)]
    for var in ("PYTHONHASHSEED", "MALLOC_PERTURB_", runs.PAD_VAR):
        assert len({p.env()[var] for p in perturbed}) == RUNS
    depths = [len(p.folder(tmp_path).relative_to(tmp_path).parts) for p in perturbed]
    assert depths == [1, 2, 3]
    src = tmp_path / "src.yaml"
    src.write_text(yaml.safe_dump(PARAMS))
    params = plan.write_params(src, tmp_path / "base", ["common.seed=1"])
    targets = [plan.target(params, s, 2) for s in STAGES]
    qa = targets[list(STAGES).index("quantize-activations")]
    qw = ("stage", "quantize-weights", "--w-bits", "2", "--a-bits", "2")
    assert qa.chain == (("stage", "pretrain"), qw)
    assert qa.inputs == (Path("data"), Path("runs/pretrain/fp"), Path("runs/quantize-weights/w2a2"))
    order = [t.stage for t in runs.run_order(targets)]
    assert order.index("quantize-activations") < order.index("quantize-weights")
    assert order[-1] == "pretrain"
