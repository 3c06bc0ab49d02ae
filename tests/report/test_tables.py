"""tables.py: exact cells, seeds, missing runs, row/column order, published rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lowbit.errors import LowbitError
from lowbit.report import DEFAULT_REFERENCE_DIR
from lowbit.report.collect import collect
from lowbit.report.reference import PUBLISHED, load_reference
from lowbit.report.tables import aggregate, paper_table, signed, summary_metrics, vs_direct
from tests.report.synth import paper_runs, write_run

NO_REF = load_reference(None)


def _table(
    root: Path,
    kind: str = "best",
    ref: pd.DataFrame = NO_REF,
    model: str = "resnet20",
    dataset: str = "digits",
) -> pd.DataFrame:
    agg = aggregate(collect(root).nets, kind)
    return paper_table(agg, ref, model, dataset, kind).frame.set_index("method")


def test_cell_is_top1_top5_and_change_against_fp(tmp_path: Path) -> None:
    write_run(tmp_path, "fp", method="fp", w_bits=32, a_bits=32, best_top1=92.5, best_top5=99.8)
    write_run(tmp_path, "ts", best_top1=91.2, best_top5=99.1)
    t = _table(tmp_path)
    assert t.loc["ts", "W2A2"] == "91.2 / 99.1 (−1.3)"
    assert t.loc["fp", "FP"] == "92.5 / 99.8"  # the baseline itself has no change
    assert list(t.columns) == ["numbers", "W2A2", "FP"]


def test_final_epoch_table_uses_final_values(tmp_path: Path) -> None:
    write_run(tmp_path, "fp", method="fp", w_bits=32, a_bits=32, top1=92.0, top5=99.0)
    write_run(tmp_path, "ts", top1=92.4, top5=98.0)
    assert _table(tmp_path, "final").loc["ts", "W2A2"] == "92.4 / 98.0 (+0.4)"


def test_mean_and_std_over_three_seeds(tmp_path: Path) -> None:
    write_run(tmp_path, "fp", method="fp", w_bits=32, a_bits=32, best_top1=95.0)
    for seed, (t1, t5) in enumerate([(90.0, 99.0), (91.0, 99.5), (92.0, 100.0)]):
        write_run(tmp_path, f"ts{seed}", seed=seed, best_top1=t1, best_top5=t5)
    assert _table(tmp_path).loc["ts", "W2A2"] == "91.0 ± 1.0 / 99.5 ± 0.5 (−4.0), n=3"


def test_missing_runs_show_a_dash_and_rows_follow_the_paper(tmp_path: Path) -> None:
    t = _table(paper_runs(tmp_path))
    assert list(t.index) == ["fp", "direct", "ts", "pq", "sp", "kd", "ts+pq+kd", "kd-teacher@w2a2"]
    assert list(t.columns) == ["numbers", "W2A2", "W2A32", "W4A4", "FP"]
    assert t.loc["direct", "W4A4"] == "—"
    assert t.loc["fp", "W2A2"] == "—"
    assert t.loc["kd-teacher@w2a2", "FP"] == "95.5 / 99.9 (+0.5)"
    assert t.loc["ts", "W2A32"] == "93.0 / 99.5 (−2.0)"
    assert set(t["numbers"]) == {"measured"}


def test_no_fp_run_means_no_change_column(tmp_path: Path) -> None:
    write_run(tmp_path, "ts", best_top1=91.2, best_top5=99.1)
    agg = aggregate(collect(tmp_path).nets)
    table = paper_table(agg, NO_REF, "resnet20", "digits", "best")
    assert table.frame.set_index("method").loc["ts", "W2A2"] == "91.2 / 99.1"
    assert "No full-precision (fp) run" in table.caption
    assert "best-epoch" in table.caption.lower()


def test_published_rows_only_where_model_and_dataset_match(tmp_path: Path) -> None:
    ref = load_reference(DEFAULT_REFERENCE_DIR)
    root = paper_runs(tmp_path)
    digits = _table(root, ref=ref)
    assert set(digits["numbers"]) == {"measured"}
    imagenet = _table(root, ref=ref, model="resnet18", dataset="imagenet")
    published = imagenet[imagenet["numbers"] == PUBLISHED]
    assert list(published.index) == ["LQ-Nets", "LSQ", "APoT"]
    assert published.loc["LSQ", "W2A2"] == "67.6 / —"
    assert published.loc["LQ-Nets", "W4A4"] == "69.3 / —"
    assert published.loc["APoT", "W4A4"] == "70.7 / —"
    assert imagenet.loc["ts", "W4A4"] == "—"  # a column only the peers have
    assert imagenet.loc["ts", "W2A2"] == "66.0 / 86.5 (−3.9)"


def test_reference_files_hold_the_papers_numbers() -> None:
    ref = load_reference(DEFAULT_REFERENCE_DIR)
    assert set(ref["file"]) == {"paper_claims.csv", "peers_imagenet_resnet18.csv"}
    top1 = ref.dropna(subset=["top1"]).set_index(["source", "w_bits"])["top1"]
    assert top1.to_dict() == {
        ("LQ-Nets", 2.0): 64.9,
        ("LQ-Nets", 4.0): 69.3,
        ("LSQ", 2.0): 67.6,
        ("LSQ", 4.0): 71.1,
        ("APoT", 2.0): 67.3,
        ("APoT", 4.0): 70.7,
    }
    claims = ref[ref["file"] == "paper_claims.csv"]
    assert claims["top1"].isna().all() and (claims["note"] != "").all()


def test_bad_reference_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(LowbitError, match="reference folder not found"):
        load_reference(tmp_path / "nope")
    (tmp_path / "x.csv").write_text("source,model\nA,resnet18\n")
    with pytest.raises(LowbitError, match=r"x\.csv: reference table lacks columns"):
        load_reference(tmp_path)
    cols = "source,citation,model,dataset,method,w_bits,a_bits,top1,top5,note"
    (tmp_path / "x.csv").write_text(f"{cols}\nA,c,m,d,x,2,2,sixty,,n\n")
    with pytest.raises(LowbitError, match=r"x\.csv: line 2: 'top1' is not a number"):
        load_reference(tmp_path)


def test_signed_change() -> None:
    assert signed(-1.26) == "−1.3"
    assert signed(0.44) == "+0.4"
    assert signed(-0.04) == "±0.0"
    assert signed(2.0, 2) == "+2.00"


def test_vs_direct_and_summary(tmp_path: Path) -> None:
    agg = aggregate(collect(paper_runs(tmp_path)).nets)
    assert vs_direct(agg, "resnet20", "digits") == [
        "W2A2: ts +3.0, pq +2.5, sp +1.5, kd +4.5, ts+pq+kd +5.5"
    ]
    summary = summary_metrics(agg)
    assert summary["w2a2"]["ts"] == 91.0 and summary["fp"] == 95.0
    assert not any("teacher" in k for k in [*summary, *summary["w2a2"]])  # main networks only
    assert "w2a32" not in summary  # TS stage 1's W2A32 network stays in the tables
    assert summary["resnet18/imagenet/fp"] == 69.9  # a second model/dataset is keyed
    cells = [v for v in summary.values() if isinstance(v, dict)]
    assert all(isinstance(v, float) for cell in cells for v in cell.values())


def test_caption_names_the_single_run_cells_beside_seeded_ones(tmp_path: Path) -> None:
    write_run(tmp_path, "fp", method="fp", w_bits=32, a_bits=32, best_top1=95.0)
    for seed in (0, 1):
        write_run(tmp_path, f"ts{seed}", seed=seed, best_top1=90.0 + seed)
    agg = aggregate(collect(tmp_path).nets)
    text = paper_table(agg, NO_REF, "resnet20", "digits", "best").caption
    assert text.endswith("One run each, so no ± and no n: fp FP.")
    single = tmp_path / "single"
    write_run(single, "fp", method="fp", w_bits=32, a_bits=32, best_top1=95.0)
    write_run(single, "ts", best_top1=91.0)  # every cell one run: nothing to tell apart
    agg = aggregate(collect(single).nets)
    assert "One run each" not in paper_table(agg, NO_REF, "resnet20", "digits", "best").caption
