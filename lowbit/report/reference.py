"""Published reference numbers (reports/reference/*.csv): read, validate, match to our runs.

These are numbers copied from papers (see each row's `citation`), never measured by lowbit;
every place the report shows them says "published, not measured". Rows with no top-1 are
qualitative claims: listed in the report's reference section, never put in a table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lowbit.errors import LowbitError
from lowbit.report import DEFAULT_REFERENCE_DIR

COLUMNS = [
    "source",
    "citation",
    "model",
    "dataset",
    "method",
    "w_bits",
    "a_bits",
    "top1",
    "top5",
    "note",
]
PUBLISHED = "published, not measured"


def norm(name: object) -> str:
    """Loose name for matching: "ResNet-18" == "resnet18", "ImageNet" == "imagenet"."""
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def _read_one(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise LowbitError(f"{path}: cannot read reference table: {e}") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise LowbitError(f"{path}: reference table lacks columns {missing}")
    df = df[COLUMNS].copy()
    for col in ("w_bits", "a_bits", "top1", "top5"):
        num = pd.to_numeric(df[col].replace("", None), errors="coerce")
        bad = df[col].ne("") & num.isna()
        if bad.any():
            i = bad.idxmax()
            line = int(i) + 2  # +1 for the header line, +1 for 1-based line numbers
            raise LowbitError(f"{path}: line {line}: '{col}' is not a number: {df[col][i]!r}")
        df[col] = num.astype(float)
    df["file"] = path.name
    return df


def load_reference(reference_dir: Path | None) -> pd.DataFrame:
    """All *.csv under reference_dir (sorted); empty when None or the default dir is absent."""
    if reference_dir is None:
        return pd.DataFrame(columns=[*COLUMNS, "file"])
    reference_dir = Path(reference_dir)
    if not reference_dir.is_dir():
        # The default folder is absent when lowbit is installed without its repo: no references.
        if reference_dir.resolve() == DEFAULT_REFERENCE_DIR:
            return pd.DataFrame(columns=[*COLUMNS, "file"])
        raise LowbitError(f"reference folder not found: {reference_dir}")
    frames = [_read_one(p) for p in sorted(reference_dir.glob("*.csv"))]
    if not frames:
        return pd.DataFrame(columns=[*COLUMNS, "file"])
    return pd.concat(frames, ignore_index=True)


def matching(ref: pd.DataFrame, model: str, dataset: str) -> pd.DataFrame:
    """Numeric reference rows for this model and dataset (the rows a table may show)."""
    if ref.empty:
        return ref
    keep = (
        ref["model"].map(norm).eq(norm(model))
        & ref["dataset"].map(norm).eq(norm(dataset))
        & ref["top1"].notna()
        & ref["w_bits"].notna()
        & ref["a_bits"].notna()
    )
    out = ref[keep].copy()
    out["w_bits"] = out["w_bits"].astype(int)
    out["a_bits"] = out["a_bits"].astype(int)
    return out
