"""Datasets: sources -> FFCV .beton files (or a plain .npz store) -> loaders.

    meta = prepare_dataset("cifar10", root, out_dir)        # train/val files + meta.json
    train, val = build_loaders(out_dir, batch_size=128)    # FFCV if importable, else torch

Modules: sources.py / splits.py (reading digits, CIFAR pickles, image folders and zips),
writer.py / ffcv_writer.py (writing), meta.py (meta.json and integrity checks),
augment.py (hash-based, per-epoch deterministic augmentation), loaders.py (the public
build_loaders), ffcv_loader.py / ffcv_ops.py (FFCV backend), store.py / torch_loader.py
(torch backend). FFCV and numba are imported only inside the FFCV modules, so
`import lowbit.data` stays light and works without them.
"""

from lowbit.data.backend import ffcv_available
from lowbit.data.loaders import build_loaders
from lowbit.data.meta import DatasetMeta
from lowbit.data.prepare import prepare_dataset

__all__ = ["DatasetMeta", "build_loaders", "ffcv_available", "prepare_dataset"]
