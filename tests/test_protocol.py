"""The paper's training protocol, end to end through real stages on digits:

- every epoch of a run's init chain draws fresh data (no round or stage replays another's
  batches);
- every round runs its own learning-rate schedule and ends annealed (a constant-lr stage
  warns and is recorded as such);
- the final-precision network trains with direct's recipe; earlier rounds and the KD
  teacher are reported as extra cost beside the result.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from lowbit.checkpoint import weights_digest
from lowbit.config import load_config
from lowbit.stages import stage_function
from lowbit.training import chain as training_stage

PARAMS = {
    "common": {
        "seed": 0, "dataset": "digits", "batch_size": 64, "workers": 0, "loader": "torch",
        "progress": False, "runs_dir": "runs", "data_dir": "data",
    },
    "prepare": {"image_size": 8},
    "pretrain": {"epochs": 2, "optim": {"lr": 0.1}},
    "direct": {"epochs": 4, "optim": {"lr": 0.02, "milestones": [0.5]}},
    "quantize_weights": {"epochs": 2, "optim": {"lr": 0.02, "milestones": [0.5]}},
    "quantize_activations": {"epochs": 4, "optim": {"lr": 0.02, "milestones": [0.5]}},
    "bit_decay": {"epochs": 4, "step_epochs": 2, "schedule": [4, 2],
                  "optim": {"lr": 0.02, "schedule": "cosine"}},
    "distill": {"epochs": 4, "optim": {"lr": 0.02, "milestones": [0.5]}},
}  # fmt: skip


class _Recorder:
    """Wraps a train loader: keeps the first batch of every epoch it yields."""

    def __init__(self, loader, firsts: list) -> None:
        self.loader, self.firsts = loader, firsts

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for i, (x, y) in enumerate(self.loader):
            if i == 0:
                self.firsts.append((x.clone(), y.clone()))
            yield x, y


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("protocol")
    (repo / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    run(repo, "prepare")
    run(repo, "pretrain")
    return repo


def run(repo: Path, stage: str, *sets: str, bits: int | None = None) -> dict:
    cfg = load_config(stage, repo / "params.yaml", list(sets), w_bits=bits, a_bits=bits)
    return stage_function(stage)(cfg)


def _recording(monkeypatch) -> list:
    firsts: list = []
    real = training_stage.load_data

    def load(cfg, device):
        train, val, test, meta = real(cfg, device)
        return _Recorder(train, firsts), val, test, meta

    monkeypatch.setattr(training_stage, "load_data", load)
    return firsts


def _distinct(batches: list) -> bool:
    return all(not torch.equal(a[0], b[0]) for i, a in enumerate(batches) for b in batches[i + 1 :])


def test_every_epoch_of_a_bit_decay_run_draws_fresh_batches(repo, monkeypatch):
    firsts = _recording(monkeypatch)
    m = run(repo, "bit-decay", bits=2)
    assert len(firsts) == 2 + 4  # round W4A4 (2 epochs), round W2A2 (4 epochs)
    assert _distinct(firsts)
    # the stream continues after pretraining's 2 epochs: 2 + 2 + 4 loader epochs drawn
    assert m["data_epochs"] == 8
    hist = (repo / "runs/bit-decay/w2a2/history.csv").read_text().splitlines()
    data_epochs = [int(line.split(",")[4]) for line in hist[1:]]
    assert data_epochs == [2, 3, 4, 5, 6, 7]


def test_two_stage_stage_2_does_not_replay_stage_1_or_pretraining(repo, monkeypatch):
    firsts = _recording(monkeypatch)
    run(repo, "pretrain", "common.runs_dir=runs-replay")  # pretraining's batches again
    run(repo, "quantize-weights", bits=2)
    run(repo, "quantize-activations", bits=2)
    assert len(firsts) == 2 + 2 + 4 and _distinct(firsts)


def test_each_round_anneals_over_its_own_epochs(repo):
    """Cosine: every round starts at the stage lr and ends near 0, in both rounds of PQ."""
    run(repo, "bit-decay", bits=2)
    lines = (repo / "runs/bit-decay/w2a2/history.csv").read_text().splitlines()
    head = lines[0].split(",")
    rows = [dict(zip(head, line.split(","), strict=True)) for line in lines[1:]]
    lr = {int(r["epoch"]): float(r["lr"]) for r in rows}
    # history's lr is the lr of the epoch's last step: cosine at (e + 1 - 1/steps) / E
    assert lr[1] > 0.5 * 0.02 and lr[2] < 0.02 * 0.01  # round 1: 2 epochs, ends near 0
    assert lr[3] > 0.8 * 0.02 and lr[6] < 0.02 * 0.01  # round 2 restarts, ends near 0
    m = json.loads((repo / "runs/bit-decay/w2a2/metrics.json").read_text())
    assert m["annealed"] is True


def test_a_constant_lr_round_warns_and_is_recorded(repo):
    with pytest.warns(RuntimeWarning, match="constant learning rate"):
        m = run(repo, "direct", "optim.milestones=[]", "tag=flat", bits=2)
    assert m["annealed"] is False


def test_round_lr_scale_lowers_later_rounds_only(repo):
    run(repo, "bit-decay", "optim.schedule=step", "optim.milestones=[]",
        "optim.round_lr_scale=0.5", "tag=scaled", bits=2)  # fmt: skip
    lines = (repo / "runs/bit-decay/w2a2-scaled/history.csv").read_text().splitlines()
    head = lines[0].split(",")
    lrs = [float(dict(zip(head, x.split(","), strict=True))["lr"]) for x in lines[1:]]
    assert lrs == pytest.approx([0.02, 0.02, 0.01, 0.01, 0.01, 0.01])


def test_final_network_gets_directs_recipe_and_the_rest_is_extra_cost(repo):
    direct = run(repo, "direct", bits=2)
    pq = run(repo, "bit-decay", bits=2)
    kd = run(repo, "distill", bits=2)
    ts = run(repo, "quantize-activations", bits=2)
    for m in (direct, pq, kd, ts):
        assert m["final_epochs"] == 4  # direct's epochs
    assert (direct["budget_epochs"], direct["extra_epochs"]) == (4, 0)
    assert (pq["budget_epochs"], pq["extra_epochs"]) == (6, 2)  # the W4A4 round: 2 epochs
    assert (kd["budget_epochs"], kd["extra_epochs"]) == (8, 4)  # the teacher's 4 epochs
    assert (ts["budget_epochs"], ts["extra_epochs"]) == (6, 2)  # TS stage 1: 2 epochs
    # training seconds of the whole chain after FP pretraining: stage 1's are included
    stage1 = json.loads((repo / "runs/quantize-weights/w2a2/metrics.json").read_text())
    assert ts["cost_s"] == pytest.approx(ts["wall_s"] + stage1["wall_s"])
    for m in (direct, pq, kd, ts):  # the late gain is measured (quarter point validated)
        assert m["late_gain"] is not None and isinstance(m["converged"], bool)
        assert 0.0 <= m["late_p"] <= 1.0  # the images gained and lost were counted


def test_a_run_records_the_weights_it_started_from_and_ended_with(repo):
    fp = json.loads((repo / "runs/pretrain/fp/metrics.json").read_text())
    assert "init_weights_digest" not in fp  # from scratch
    net = torch.load(repo / "runs/pretrain/fp/model.pt", weights_only=True)
    assert fp["weights_digest"] == weights_digest(net["nets"][net["main"]]["model"])
    ts1 = run(repo, "quantize-weights", bits=2)
    ts2 = run(repo, "quantize-activations", bits=2)
    # the TS chain by its weights: FP -> stage 1 -> stage 2, whatever the paths say
    assert ts1["init_weights_digest"] == fp["weights_digest"]
    assert ts2["init_weights_digest"] == ts1["weights_digest"] != fp["weights_digest"]
