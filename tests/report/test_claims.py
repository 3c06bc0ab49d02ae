"""The paper's claims get verdicts from the seeds of our runs: paired by seed where the runs
share each seed's FP start, Welch where not, one-sided against fixed margins, Holm-adjusted
over the whole report -- each rule pinned on synthetic runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from scipy import stats

from lowbit.report import build_report
from lowbit.report.claims import claims_of
from lowbit.report.collect import collect
from lowbit.report.pairing import fp_roots
from lowbit.report.stats import FAILS, HOLDS, NEEDS_SEEDS, NOISE, PAIRED, WELCH
from tests.report.synth import seeded_runs, write_run

FP = [70.0, 72.0, 71.0]
DIRECT = [50.0, 55.0, 52.0]


def _plus(base: list[float], gains: list[float]) -> list[float]:
    return [b + g for b, g in zip(base, gains, strict=True)]


def _lines(runs: Path, out: Path) -> dict[str, str]:
    """The report's verdict lines by claim."""
    build_report(runs, out, reference_dir=None)
    lines = [ln for ln in (out / "README.md").read_text().splitlines() if ln.startswith("- **")]
    return {ln.split("** — ")[1].split(": ")[0]: ln for ln in lines}


def _p(line: str, which: str) -> float:
    """A printed p value; "< 0.001" reads as 0 (the tests compare to within 1e-3)."""
    found = re.search(rf"{which} (= [0-9.]+|< 0.001)", line).group(1)
    return 0.0 if found.startswith("<") else float(found[2:])


def test_the_fp_start_is_where_the_init_chain_ends(tmp_path: Path) -> None:
    seeded_runs(tmp_path / "results", {("fp", 32): FP[:2], ("ts", 2): [55.0, 56.0]})
    live = tmp_path / "runs"  # the workspace: no seed folder
    write_run(live, "pretrain", stage="pretrain", method="fp", w_bits=32, a_bits=32, seed=5,
              init="scratch", history=False)  # fmt: skip
    write_run(live, "quantize-weights/w2a2", stage="quantize-weights", a_bits=32, seed=5,
              init="runs/pretrain/model.pt", history=False)  # fmt: skip
    write_run(live, "quantize-activations/w2a2", seed=5,
              init="runs/quantize-weights/w2a2/model.pt", history=False)  # fmt: skip
    write_run(live, "other", stage="direct", seed=5, init="../elsewhere/model.pt", history=False)
    write_run(live, "old", stage="bit-decay", seed=5, history=False)  # no init recorded
    nets = collect([live, tmp_path / "results"]).nets
    roots = dict(zip(nets["run"], fp_roots(nets), strict=True))
    res = tmp_path / "results"
    assert roots["seed1/quantize-activations/w2a2"] == str(res / "seed1" / "pretrain")
    assert roots["seed1/quantize-weights/w2a2"] == str(res / "seed1" / "pretrain")
    assert roots["seed0/pretrain"] == str(res / "seed0" / "pretrain")
    assert roots["quantize-activations/w2a2"] == str(live / "pretrain")
    assert roots["other"] == "../elsewhere/model.pt"  # no run of it here: the path
    assert roots["old"] is None


def test_the_fp_start_is_looked_up_in_the_run_s_own_folder(tmp_path: Path) -> None:
    # two folders hold seed 0 of one pipeline, each with its own FP network (say a plain
    # and a clipped one): the same init path names a different network in each
    seeded_runs(tmp_path / "plain", {("fp", 32): FP[:1], ("direct", 2): DIRECT[:1]})
    seeded_runs(tmp_path / "clip", {("sp", 2): DIRECT[:1]})
    write_run(tmp_path / "clip", "seed0/pretrain", stage="pretrain", method="fp", fp_start="clip",
              w_bits=32, a_bits=32, seed=0, init="scratch", history=False)  # fmt: skip
    nets = collect([tmp_path / "plain", tmp_path / "clip"]).nets
    roots = dict(zip(nets["run_path"], fp_roots(nets), strict=True))
    for where, stage in (("plain", "direct"), ("clip", "stochastic-precision")):
        run = tmp_path / where / "seed0" / stage / "w2a2"
        assert roots[str(run)] == str(tmp_path / where / "seed0" / "pretrain")


def test_paired_where_seeds_and_fp_start_are_shared_welch_where_not(tmp_path: Path) -> None:
    table = {
        ("fp", 32): FP,
        ("direct", 2): DIRECT,
        ("ts", 2): _plus(DIRECT, [1.0, 1.2, 0.8]),  # same seeds, same FP start
        ("pq", 2): [None, 56.0, 53.0, 54.0],  # seeds 1, 2, 3
        ("kd", 2): _plus(DIRECT, [1.0, 1.2, 0.8]),  # from another FP network
    }
    inits = {("kd", 2): "runs/pretrain-clip/model.pt", ("sp", 2): None}  # None: not recorded
    seeded_runs(tmp_path, {**table, ("sp", 2): table[("ts", 2)]}, inits=inits)
    nets = collect(tmp_path).nets
    found = {c.text.split(" at ")[0]: c.test for c in claims_of(nets, "resnet20", "digits")}
    assert (found["ts beats direct"].kind, found["ts beats direct"].n) == (PAIRED, (3,))
    ref = stats.ttest_rel(table[("ts", 2)], DIRECT, alternative="greater")
    assert found["ts beats direct"].p == pytest.approx(ref.pvalue)
    # pq ran seeds 1-3, direct 0-2: paired on the two they share
    pq = found["pq beats direct"]
    assert (pq.kind, pq.n) == (PAIRED, (2,))
    assert pq.why == "seeds every arm ran; not used: pq W2A2 seed 3, direct W2A2 seed 0"
    ref = stats.ttest_rel([56.0, 53.0], DIRECT[1:], alternative="greater")
    assert pq.p == pytest.approx(ref.pvalue)
    assert found["kd beats direct"].why == "different FP starts"
    assert found["sp beats direct"].why == "FP start unknown"
    ref = stats.ttest_ind(table[("kd", 2)], DIRECT, equal_var=False, alternative="greater")
    assert found["kd beats direct"].p == pytest.approx(ref.pvalue)
    # the same gains as ts, unpaired: the seeds' spread swamps them
    assert found["ts beats direct"].p < 0.01 < 0.3 < found["kd beats direct"].p


def test_three_method_contrast_is_paired_on_per_seed_values(tmp_path: Path) -> None:
    ts, sp = _plus(DIRECT, [4.0, 5.0, 4.5]), _plus(DIRECT, [3.0, 2.0, 2.6])
    seeded_runs(tmp_path, {("direct", 2): DIRECT, ("ts", 2): ts, ("sp", 2): sp})
    c = next(c for c in claims_of(collect(tmp_path).nets, "resnet20", "digits") if "SP" in c.text)
    per_seed = [s - (d + t) / 2 for s, d, t in zip(sp, DIRECT, ts, strict=True)]
    assert c.test.kind == PAIRED and c.test.estimate == pytest.approx(sum(per_seed) / 3)
    ref = stats.ttest_1samp(per_seed, 0.0, alternative="greater")
    assert c.test.p == pytest.approx(ref.pvalue)


def test_verdicts_are_holm_adjusted_over_the_whole_report(tmp_path: Path) -> None:
    gains = {
        "ts": [5.0, 5.2, 4.9],  # holds
        "pq": [1.0, 1.6, 0.5],  # raw p ≈ 0.04 < 0.05, but not after Holm
        "sp": [-2.0, -2.5, -1.8],  # does not hold: the opposite test is significant
        "kd": [0.5, -0.5, 1.0],  # inconclusive
    }
    table = {("fp", 32): FP, ("direct", 2): DIRECT}
    table |= {(m, 2): _plus(DIRECT, g) for m, g in gains.items()}
    lines = _lines(seeded_runs(tmp_path / "runs", table), tmp_path / "out")
    sp_ts = zip(table[("sp", 2)], DIRECT, table[("ts", 2)], strict=True)
    per_seed = {**gains, "mid": [s - (d + t) / 2 for s, d, t in sp_ts]}
    raw = {m: stats.ttest_1samp(v, 0.0, alternative="greater").pvalue for m, v in per_seed.items()}
    opp = {m: stats.ttest_1samp(v, 0.0, alternative="less").pvalue for m, v in per_seed.items()}
    # 5 hypotheses: "kd beats direct" and "joint KD improves direct" are one
    adj, adj_opp = _holm_by_hand(raw), _holm_by_hand(opp)
    assert raw["pq"] < 0.05 <= adj["pq"]
    for m, v in (("ts", HOLDS), ("pq", NOISE), ("sp", FAILS), ("kd", NOISE)):
        line = lines[f"{m} beats direct at W2A2 (top-1 gain)"]
        assert line.startswith(f"- **{v}** — ") and "paired t (n = 3 seeds)" in line
        assert _p(line, "; p") == pytest.approx(raw[m], abs=1e-3)
        assert _p(line, "Holm-adjusted p") == pytest.approx(adj[m], abs=1e-3), m
    assert "detectable at power 0.8: " in lines["pq beats direct at W2A2 (top-1 gain)"]
    kd = lines["joint KD improves direct at W2A2 (kd against direct)"]
    assert _p(kd, "Holm-adjusted p") == pytest.approx(adj["kd"], abs=1e-3)
    sp = lines["sp beats direct at W2A2 (top-1 gain)"]
    assert adj_opp["sp"] == pytest.approx(4 * opp["sp"])  # second smallest of 5
    assert sp.endswith(f"does not hold (opposite H1: Δ < 0, Holm-adjusted p = {adj_opp['sp']:.3f})")


def _holm_by_hand(raw: dict[str, float]) -> dict[str, float]:
    """Smallest p times m, the next times m − 1, ..., each at least the one before."""
    adj, running = {}, 0.0
    for rank, m in enumerate(sorted(raw, key=raw.get)):
        running = max(running, min(1.0, (len(raw) - rank) * raw[m]))
        adj[m] = running
    return adj


def test_w4a4_claim_tests_the_paper_s_full_method(tmp_path: Path) -> None:
    # direct has the higher mean at W4A4; the claim is about ts+pq+kd all the same
    table = {
        ("fp", 32): FP,
        ("direct", 4): _plus(FP, [-0.2, -0.3, -0.1]),
        ("ts+pq+kd", 4): _plus(FP, [-0.5, -0.6, -0.45]),
    }
    lines = _lines(seeded_runs(tmp_path / "a", table), tmp_path / "out-a")
    claim = "W4A4 within 1 point of FP (ts+pq+kd at W4A4 minus FP, non-inferiority)"
    assert lines[claim].startswith("- **holds** — ")  # 0.5 below FP: within 1 point
    assert "one-sided H1: Δ > −1.0" in lines[claim]
    ref = stats.ttest_1samp([-0.5, -0.6, -0.45], -1.0, alternative="greater").pvalue
    assert _p(lines[claim], "; p") == pytest.approx(ref, abs=1e-3)


def test_w4a4_claim_without_the_full_method_corrects_for_the_choice(tmp_path: Path) -> None:
    table = {
        ("fp", 32): FP,
        ("direct", 4): _plus(FP, [-3.0, -2.0, -2.6]),
        ("sp", 4): _plus(FP, [-0.7, -0.9, -0.6]),
    }
    lines = _lines(seeded_runs(tmp_path / "runs", table), tmp_path / "out")
    claim = next(k for k in lines if k.startswith("W4A4 within"))
    assert claim == (
        "W4A4 within 1 point of FP (sp at W4A4 minus FP, non-inferiority; the smallest p of "
        "2 W4A4 methods, times 2)"
    )
    raw = stats.ttest_1samp([-0.7, -0.9, -0.6], -1.0, alternative="greater").pvalue
    assert _p(lines[claim], "; p") == pytest.approx(2 * raw, abs=1e-3)


def test_a_single_seed_needs_seeds_and_a_flagged_run_is_named(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    table = {("direct", 2): DIRECT, ("ts", 2): _plus(DIRECT, [5.0, 5.2, 4.9]),
             ("kd", 2): [53.0, None, None]}  # fmt: skip
    seeded_runs(runs, table)
    write_run(runs, "seed1/quantize-activations/w2a2", seed=1, best_top1=60.2, converged=False,
              late_gain=2.5, init="runs/quantize-weights/w2a2/model.pt", history=False)  # fmt: skip
    lines = _lines(runs, tmp_path / "out")
    kd = lines["kd beats direct at W2A2 (top-1 gain)"]
    assert kd.startswith(f"- **{NEEDS_SEEDS}** — kd beats direct")
    assert kd.endswith("(top-1 gain): Δ = +0.7 (n = 1, 3: no test)")
    ts = lines["ts beats direct at W2A2 (top-1 gain)"]
    assert ts.endswith("rests on runs flagged ts W2A2 seed 1 not converged")


def _shared_fp_study(root: Path, w4: dict[str, list[float]], init: str) -> Path:
    """Laid out as pipeline/cifar10-resnet20/study.sh archives it: a plain and a clipped FP
    network trained once, in seed0/, and every seed's W4A4 runs started from the clipped
    one, its init `init` with {seed} filled in (study.sh links runs/seed<N>/pretrain to
    seed 0's: "runs/seed{seed}/pretrain/clip/model.pt")."""
    for slug, start, top1 in (("plain", None, 80.0), ("clip", "clip", 79.0)):
        write_run(root, f"seed0/pretrain/{slug}", stage="pretrain", method="fp", w_bits=32,
                  a_bits=32, fp_start=start, best_top1=top1, init="scratch",
                  history=False)  # fmt: skip
    for method, values in w4.items():
        stage = {"direct": "direct", "ts+pq+kd": "ts-pq-kd"}[method]
        for seed, top1 in enumerate(values):
            write_run(root, f"seed{seed}/{stage}/w4a4", stage=stage, method=method, w_bits=4,
                      a_bits=4, seed=seed, fp_start="clip", best_top1=top1,
                      init=init.format(seed=seed), history=False)  # fmt: skip
    return root


@pytest.mark.parametrize("init", ["runs/seed0/pretrain/clip/model.pt",
                                  "runs/seed{seed}/pretrain/clip/model.pt"])  # fmt: skip
def test_every_seed_s_runs_start_at_the_one_fp_network_of_seed0(tmp_path: Path, init: str) -> None:
    runs = _shared_fp_study(tmp_path / "results", {"direct": [78.0, 78.5, 77.9]}, init)
    nets = collect(runs).nets
    roots = dict(zip(nets["run"], fp_roots(nets), strict=True))
    clip = str(runs / "seed0" / "pretrain" / "clip")
    # seed 0's runs found it beside them; seeds 1 and 2 in seed 0's folder, the only one
    assert [roots[f"seed{s}/direct/w4a4"] for s in range(3)] == [clip] * 3
    # a second seed folder with a network of that name: seed 1's link is ambiguous
    write_run(runs, "seed2/pretrain/clip", stage="pretrain", method="fp", w_bits=32, a_bits=32,
              seed=2, fp_start="clip", init="scratch", history=False)  # fmt: skip
    nets = collect(runs).nets
    roots = dict(zip(nets["run"], fp_roots(nets), strict=True))
    named = init.format(seed=1) == "runs/seed0/pretrain/clip/model.pt"
    assert roots["seed1/direct/w4a4"] == (clip if named else init.format(seed=1))
    # seed 2's own network, unless its init names seed 0's
    own = str(runs / "seed2" / "pretrain" / "clip")
    assert roots["seed2/direct/w4a4"] == (clip if named else own)


def test_the_claims_compare_with_the_plain_fp_network_shared_by_every_seed(
    tmp_path: Path,
) -> None:
    w4 = {"direct": [78.0, 78.5, 77.9], "ts+pq+kd": [79.4, 79.5, 79.3]}
    init = "runs/seed{seed}/pretrain/clip/model.pt"
    lines = _lines(_shared_fp_study(tmp_path / "results", w4, init), tmp_path / "out")
    claim = next(k for k in lines if "W4A4 within 1 point of FP" in k)
    line = lines[claim]
    # the plain FP network (80.0) alone: not pooled with the clipped one (79.0); its one run
    # is a constant of a test paired by seed, not a group of one that stops the test
    assert "Δ = −0.6; paired t (n = 3 seeds, one FP network shared by every seed" in line
    ref = stats.ttest_1samp([-0.6, -0.5, -0.7], -1.0, alternative="greater").pvalue
    assert _p(line, "; p") == pytest.approx(ref, abs=1e-3)
    assert line.startswith(f"- **{HOLDS}** — ")


def test_the_fp_start_is_found_by_the_weights_wherever_the_files_moved(tmp_path: Path) -> None:
    res = tmp_path / "results"
    for slug, digest in (("plain", "aaaa"), ("clip", "bbbb")):
        write_run(res, f"seed0/pretrain/{slug}", stage="pretrain", method="fp", w_bits=32,
                  a_bits=32, init="scratch", weights_digest=digest, history=False)  # fmt: skip
    # its init path names a folder that is not here, and even the wrong network: the
    # weights it started from say which one it was
    old = "../old/pretrain/plain/model.pt"
    write_run(res, "seed3/direct/w2a2", stage="direct", method="direct", seed=3, init=old,
              init_weights_digest="bbbb", weights_digest="cccc", history=False)  # fmt: skip
    write_run(res, "seed3/bit-decay/w2a2", stage="bit-decay", method="pq", seed=3, init=old,
              init_weights_digest="ffff", history=False)  # fmt: skip
    nets = collect(res).nets
    roots = dict(zip(nets["run"], fp_roots(nets), strict=True))
    assert roots["seed3/direct/w2a2"] == str(res / "seed0" / "pretrain" / "clip")
    assert roots["seed3/bit-decay/w2a2"] == old  # no such weights here: the path
    # an FP network older than the digests is still found by the path, a digested one never
    write_run(res, "seed3/pretrain/plain", stage="pretrain", method="fp", w_bits=32, a_bits=32,
              seed=3, init="scratch", history=False)  # fmt: skip
    nets = collect(res).nets
    roots = dict(zip(nets["run"], fp_roots(nets), strict=True))
    assert roots["seed3/bit-decay/w2a2"] == str(res / "seed3" / "pretrain" / "plain")


def test_only_the_fp_network_is_a_shared_constant(tmp_path: Path) -> None:
    # a direct run trained from scratch, one seed: its start is itself, as an FP network's
    # is, but a method with one seed stays untested
    runs = _shared_fp_study(tmp_path / "results", {"ts+pq+kd": [79.4, 79.5, 79.3]},
                            "runs/seed{seed}/pretrain/clip/model.pt")  # fmt: skip
    write_run(runs, "seed0/direct/w4a4", stage="direct", method="direct", w_bits=4, a_bits=4,
              fp_start="clip", best_top1=78.0, init="scratch", history=False)  # fmt: skip
    found = {c.text.split(" at ")[0]: c.test for c in
             claims_of(collect(runs).nets, "resnet20", "digits", "clip start")}  # fmt: skip
    assert not found["ts+pq+kd beats direct"].tested  # n = 3, 1: no test
    assert found["W4A4 within 1 point of FP (ts+pq+kd"].why.startswith("one FP network")


def test_seeds_added_to_some_cells_keep_the_other_claims_paired(tmp_path: Path) -> None:
    # seeds 3 and 4 added to direct and ts+pq+kd only (docs/claims.md: add seeds where a
    # verdict is inconclusive): ts stays paired on 0-2, ts+pq+kd is paired on 0-4
    direct = [*DIRECT, 51.0, 54.0]
    table = {("fp", 32): FP, ("direct", 2): direct, ("ts", 2): _plus(DIRECT, [1.0, 1.2, 0.8]),
             ("ts+pq+kd", 2): _plus(direct, [0.5, 0.9, 0.7, 0.6, 0.8]),
             ("sp", 2): [None, None, None, 52.0, 53.0, 55.0],
             ("kd", 2): [None, None, None, None, 55.0, 56.0, 57.0]}  # fmt: skip
    seeded_runs(tmp_path, table)
    nets = collect(tmp_path).nets
    found = {c.text.split(" at ")[0]: c.test for c in claims_of(nets, "resnet20", "digits")}
    ts = found["ts beats direct"]
    assert (ts.kind, ts.n) == (PAIRED, (3,)) and ts.why.endswith(
        "not used: direct W2A2 seed 3, direct W2A2 seed 4"
    )
    assert ts.p == pytest.approx(stats.ttest_rel(table[("ts", 2)], DIRECT,
                                                 alternative="greater").pvalue)  # fmt: skip
    full = found["ts+pq+kd beats direct"]
    assert (full.kind, full.n, full.why) == (PAIRED, (5,), "")
    sp = found["sp beats direct"]  # seeds 3-5 against 0-4 share two: paired on 3 and 4
    assert (sp.kind, sp.n) == (PAIRED, (2,))
    kd = found["kd beats direct"]  # one seed in common: Welch on all of both
    assert (kd.kind, kd.n, kd.why) == (WELCH, (3, 5), "different seeds")


def test_shared_seeds_that_do_not_pair_fall_back_to_welch_on_every_run(tmp_path: Path) -> None:
    # pq from another FP network, with a fourth seed: no pairing, so nothing is left out
    table = {("fp", 32): FP, ("direct", 2): DIRECT, ("pq", 2): [53.0, 56.0, 54.0, 55.0]}
    seeded_runs(tmp_path, table, inits={("pq", 2): "runs/pretrain-clip/model.pt"})
    nets = collect(tmp_path).nets
    found = {c.text.split(" at ")[0]: c.test for c in claims_of(nets, "resnet20", "digits")}
    pq = found["pq beats direct"]
    assert (pq.kind, pq.n, pq.why) == (WELCH, (4, 3), "different FP starts")
    ref = stats.ttest_ind(table[("pq", 2)], DIRECT, equal_var=False, alternative="greater")
    assert pq.p == pytest.approx(ref.pvalue)
