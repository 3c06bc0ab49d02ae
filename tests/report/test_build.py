"""build_report end to end on synthetic runs: files, images, README links, summary."""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from lowbit.errors import LowbitError
from lowbit.report import build_report
from tests.report.synth import paper_runs, write_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Built:
    runs: Path
    out: Path
    summary: dict[str, float]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("report")
    runs = paper_runs(root / "runs")
    out = root / "out"
    return Built(runs, out, build_report(runs, out, title="test report"))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def test_images_are_valid_pngs_and_svgs(built: Built) -> None:
    pngs = sorted((built.out / "plots").glob("*.png"))
    names = {p.stem for p in pngs}
    assert {
        "top1_vs_bits_resnet20_digits",
        "cost_resnet20_digits",
        "top1_vs_bits_resnet18_imagenet",
        "curves_resnet20_digits_distill",
    } <= names
    assert "curves_resnet18_imagenet_pretrain" not in names  # those runs have no history.csv
    for png in pngs:
        width, height = png_size(png)
        assert width >= 300 and height >= 200, (png, width, height)
        svg = png.with_suffix(".svg")
        assert svg.stat().st_size > 1000 and b"<svg" in svg.read_bytes()[:2000]


def test_readme_has_tables_and_links_to_existing_files(built: Built) -> None:
    readme = (built.out / "README.md").read_text()
    assert readme.startswith("# test report\n")
    for md in (built.out / "tables").glob("*.md"):
        table = md.read_text().split("\n\n", 1)[1]  # the file is caption, blank line, table
        assert table in readme, md.name
    links = re.findall(r"\]\(<?([^)>]+)>?\)", readme)
    assert any(link.endswith(".png") for link in links)
    assert any(link.endswith("run.json") for link in links)
    for link in links:
        assert (built.out / link).is_file(), link
    for needle in (
        "abc1234",
        "lowbit 0.1.0, torch 2.14.1",
        "`cpu`",
        "## Decisions",
        "[lowbit]",
        "Stochastic precision (SP)",
        "published, not measured",
        "Best-epoch",
    ):
        assert needle in readme, needle


def test_results_csv_is_tidy(built: Built) -> None:
    results = pd.read_csv(built.out / "results.csv")
    need = {
        "run",
        "stage",
        "method",
        "model",
        "dataset",
        "w_bits",
        "a_bits",
        "seed",
        "metric",
        "value",
        "wall_s",
        "images_per_s",
        "device",
        "commit",
    }
    assert need <= set(results.columns)
    assert not results.duplicated(["run", "metric"]).any()
    ts0 = results[(results["run"] == "ts/w2a2/s0") & (results["metric"] == "best_top1")]
    assert ts0["value"].tolist() == [90.0]
    plots = pd.read_csv(built.out / "plots.csv")
    assert {"bits", "method", "top1"} <= set(plots.columns)


def test_summary_is_numbers_and_written(built: Built) -> None:
    on_disk = json.loads((built.out / "metrics.json").read_text())
    assert on_disk == {k: v for k, v in built.summary.items() if k != "runs"}
    cells = [v for c in on_disk.values() for v in (c.values() if isinstance(c, dict) else [c])]
    assert cells and all(isinstance(v, int | float) for v in cells)
    assert on_disk["w2a2"]["ts"] == 91.0 and on_disk["fp"] == 95.0
    assert built.summary["runs"] == 13  # returned, not a column of `dvc metrics show`


def test_published_rows_only_in_matching_tables(built: Built) -> None:
    tables = built.out / "tables"
    assert "LSQ" in (tables / "resnet18_imagenet_best.md").read_text()
    assert "published, not measured" in (tables / "resnet18_imagenet_best.csv").read_text()
    assert "LSQ" not in (tables / "resnet18_imagenet_final.md").read_text()  # best-epoch only
    for name in ("resnet20_digits_best.md", "resnet20_digits_final.csv"):
        text = (tables / name).read_text()
        assert "LSQ" not in text and "published" not in text, name


def test_rebuild_is_identical_and_prunes_stale_files(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "fp", stage="pretrain", method="fp", w_bits=32, a_bits=32, history=False)
    write_run(runs, "ts", history=False)
    out = runs / "report"  # inside runs_dir: its own metrics.json must not be read as a run
    build_report(runs, out, reference_dir=None)
    (out / "plots" / "stale_old.png").write_bytes(b"old")
    first = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "stale" not in p.name}
    build_report(runs, out, reference_dir=None)
    assert not (out / "plots" / "stale_old.png").exists()
    second = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert second == first


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(LowbitError, match="no runs found under"):
        build_report(tmp_path, tmp_path / "out")
    bad = write_run(tmp_path / "runs", "bad") / "metrics.json"
    bad.write_text('{"stage": "x"')
    with pytest.raises(LowbitError, match=re.escape(str(bad))):
        build_report(tmp_path / "runs", tmp_path / "out")


def test_dataset_label_names_imagefolder_runs(tmp_path: Path) -> None:
    """An ImageNet pipeline reads an `imagefolder` source: `report.dataset: imagenet` titles
    its tables by ImageNet and puts the published ImageNet rows beside them."""
    runs = tmp_path / "runs"
    for name, stage, bits in [("fp", "pretrain", 32), ("ts", "quantize-activations", 2)]:
        write_run(runs, name, stage=stage, method=name, w_bits=bits, a_bits=bits,
                  model="resnet18", dataset="imagefolder", history=False)  # fmt: skip
    plain = build_report(runs, tmp_path / "plain")
    assert (tmp_path / "plain" / "tables" / "resnet18_imagefolder_best.md").exists()
    assert plain["w2a2"]["ts"] == 91.0
    out = tmp_path / "labelled"
    summary = build_report(runs, out, dataset="imagenet")
    assert summary["w2a2"]["ts"] == plain["w2a2"]["ts"]
    best = (out / "tables" / "resnet18_imagenet_best.md").read_text()
    assert "LSQ" in best and "LQ-Nets" in best
    assert not list((out / "tables").glob("*imagefolder*"))
    assert "## resnet18 on imagenet" in (out / "README.md").read_text()
