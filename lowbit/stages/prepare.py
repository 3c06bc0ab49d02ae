"""Stage `prepare`: a data source → FFCV .beton files + meta.json under common.data_dir."""

from __future__ import annotations

from lowbit.config import StageConfig
from lowbit.errors import ConfigError


def run(cfg: StageConfig) -> dict[str, float]:
    from lowbit.data import prepare_dataset

    c, p = cfg.common, cfg.params
    root = cfg.path(c.data_root) if c.data_root is not None else None
    if c.dataset != "digits" and root is None:
        raise ConfigError(f"common.data_root must be set for dataset {c.dataset!r}")
    meta = prepare_dataset(
        c.dataset,
        root,
        cfg.data_dir,
        image_size=p.image_size,
        seed=c.seed,
        val_fraction=p.val_fraction,
        train_per_class=p.train_per_class,
        holdout_per_class=p.holdout_per_class,
        encoding=p.encoding,
        jpeg_quality=p.jpeg_quality,
        workers=max(c.workers, 1),
    )
    counts = meta.counts
    return {
        "train_images": float(counts["train"]),
        "val_images": float(counts["val"]),
        "test_images": float(counts.get("test", 0)),
        "num_classes": float(meta.num_classes),
    }
