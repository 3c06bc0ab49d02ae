"""build_loaders: determinism, backend equivalence, normalisation, lengths, bad inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from lowbit import engine
from lowbit.data import DatasetMeta, build_loaders, prepare_dataset
from lowbit.data.store import open_store
from lowbit.errors import ConfigError, DataError
from tests.data.conftest import (
    DIGITS_BATCH,
    DIGITS_TRAIN,
    FFCV_TIMEOUT_S,
    tree_files,
    write_tree,
)

CPU = torch.device("cpu")


def _epoch(loader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True)
    )


def _image_multiset(batches: list) -> list[bytes]:
    """Each image's bytes, sorted: equal for two epochs iff they differ only in order."""
    return sorted(x.numpy().tobytes() for xb, _ in batches for x in xb)


@pytest.mark.ffcv
def test_ffcv_epoch_replays_exactly_and_next_epoch_reshuffles_and_reaugments(digits_ffcv_loaders):
    train, _ = digits_ffcv_loaders
    e2, e2_again, e3 = _epoch(train, 2), _epoch(train, 2), _epoch(train, 3)
    assert _same(e2, e2_again)  # same (seed, epoch): identical batches
    assert not torch.equal(e2[0][1], e3[0][1])  # another epoch: another order ...
    assert _image_multiset(e2) != _image_multiset(e3)  # ... and other crops and flips
    assert x_shape_and_types(e2) == ((DIGITS_BATCH, 3, 16, 16), torch.float32, torch.int64)
    assert not any(x.isnan().any() for x, _ in e2)


def x_shape_and_types(batches: list) -> tuple:
    x, y = batches[0]
    assert x.is_contiguous() and y.shape == (len(x),)
    return tuple(x.shape), x.dtype, y.dtype


@pytest.mark.ffcv
def test_torch_backend_gives_the_ffcv_batches(digits_ffcv_loaders, digits_beton, digits_npz):
    """Same images and labels per index: val (augment none, sequential order) and
    training (shuffle + crop + flip), from the .beton and from the .npz store alike."""
    ffcv_train, ffcv_val = digits_ffcv_loaders
    for data in (digits_beton, digits_npz):
        train, val = build_loaders(data, DIGITS_BATCH, workers=0, seed=3, augment="cifar",
                                   backend="torch")  # fmt: skip
        assert _same(list(val), list(ffcv_val))
        for epoch in (0, 5):
            assert _same(_epoch(train, epoch), _epoch(ffcv_train, epoch))
    _, none_val = build_loaders(digits_npz, 50, workers=0, augment="none", backend="torch")
    for k in (0, 1):  # other batch size, same samples in the same order
        assert torch.equal(torch.cat([b[k] for b in none_val]), torch.cat([b[k] for b in ffcv_val]))


def test_torch_loader_workers_follow_the_epoch(digits_npz):
    """Persistent DataLoader workers augment for the epoch sent with each batch request."""
    train0, _ = build_loaders(digits_npz, DIGITS_BATCH, workers=0, backend="torch")
    train2, _ = build_loaders(digits_npz, DIGITS_BATCH, workers=2, backend="torch")
    for epoch in (1, 4):
        assert _same(_epoch(train0, epoch), _epoch(train2, epoch))
    assert not _same(_epoch(train0, 1), _epoch(train0, 4))
    both = _epoch(train0, 7)
    train0.set_epoch(6)
    list(train0)
    assert _same(list(train0), both)  # without set_epoch the next epoch follows


def test_values_are_the_stored_pixels_normalised_with_meta_stats(digits_npz):
    meta = DatasetMeta.load(digits_npz)
    _, val = build_loaders(digits_npz, 64, workers=0, backend="torch")
    x = torch.cat([xb for xb, _ in val])  # (389, 3, 16, 16)
    mean = torch.tensor(meta.mean).view(1, 3, 1, 1)
    std = torch.tensor(meta.std).view(1, 3, 1, 1)
    store = open_store(digits_npz / "val.npz")
    raw = torch.from_numpy(np.stack([store.image(i) for i in range(len(store))])).permute(
        0, 3, 1, 2
    )
    assert torch.allclose((x * std + mean) * 255, raw.float(), atol=1e-3)
    train, _ = build_loaders(digits_npz, DIGITS_TRAIN, workers=0, augment="none", backend="torch")
    xt = next(iter(train))[0]
    assert torch.allclose(xt.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)  # train stats
    assert torch.allclose(xt.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)


def test_lengths_drop_last_for_training_and_keep_it_for_val(digits_npz):
    train, val = build_loaders(digits_npz, 100, workers=0, backend="torch")
    assert len(train) == DIGITS_TRAIN // 100 and len(val) == 4
    tb, vb = list(train), list(val)
    assert len(tb) == len(train) and all(len(y) == 100 for _, y in tb)
    assert [len(y) for _, y in vb] == [100, 100, 100, 89]
    labels = open_store(digits_npz / "val.npz").labels
    assert torch.equal(torch.cat([y for _, y in vb]), torch.from_numpy(labels))


@pytest.mark.ffcv
def test_quasi_random_order_is_a_deterministic_permutation(digits_beton):
    train, _ = build_loaders(digits_beton, DIGITS_BATCH, backend="ffcv", augment="none",
                             order="quasi_random")  # fmt: skip
    e0, e0_again, e1 = _epoch(train, 0), _epoch(train, 0), _epoch(train, 1)
    assert _same(e0, e0_again) and not _same(e0, e1)
    everything, _ = build_loaders(digits_beton, DIGITS_TRAIN, workers=0, augment="none",
                                  backend="torch")  # fmt: skip
    assert _image_multiset(e0) == _image_multiset(list(everything))  # every image once
    assert _image_multiset(e1) == _image_multiset(list(everything))


@pytest.mark.ffcv
@pytest.mark.parametrize("backend", ["ffcv", "torch"])
def test_imagenet_augmentation_on_variable_size_jpegs(tmp_path_factory, backend):
    out = tmp_path_factory.getbasetemp() / "jpeg_tree"
    if not (out / "meta.json").is_file():
        root = write_tree(tmp_path_factory.mktemp("tree"), tree_files(sizes=True))
        prepare_dataset("imagefolder", root, out, image_size=40, encoding="jpeg",
                        format="beton", timeout_s=FFCV_TIMEOUT_S)  # fmt: skip
    train, val = build_loaders(out, 4, workers=1, backend=backend, crop_size=16)
    e0, e0_again, e1 = _epoch(train, 0), _epoch(train, 0), _epoch(train, 1)
    assert _same(e0, e0_again) and not _same(e0, e1)
    assert len(train) == 12 // 4 and all(x.shape == (4, 3, 16, 16) for x, _ in e0)
    v = list(val)
    assert [x.shape[0] for x, _ in v] == [4, 1] and v[0][0].shape[2:] == (16, 16)
    assert _same(v, list(val))  # centre crops: no randomness


@pytest.mark.ffcv
def test_distributed_shards_agree_between_backends(digits_beton, digits_ffcv_loaders, tmp_path):
    """distributed=True: DistributedSampler order (seeded, per epoch) on both backends."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ffcv_train, _ = build_loaders(digits_beton, DIGITS_BATCH, backend="ffcv", seed=3,
                                      augment="cifar", distributed=True)  # fmt: skip
        torch_train, _ = build_loaders(digits_beton, DIGITS_BATCH, workers=0, backend="torch",
                                       seed=3, augment="cifar", distributed=True)  # fmt: skip
        e1 = _epoch(ffcv_train, 1)
        assert _same(e1, _epoch(torch_train, 1))
        assert not _same(e1, _epoch(digits_ffcv_loaders[0], 1))  # another order than RANDOM
        assert _image_multiset(e1) == _image_multiset(_epoch(digits_ffcv_loaders[0], 1))
    finally:
        dist.destroy_process_group()


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    "fixture", ["digits_npz", pytest.param("digits_beton", marks=pytest.mark.ffcv)]
)
def test_damaged_datasets_are_refused_naming_the_file(request, tmp_path, fixture):
    data = _copy(request.getfixturevalue(fixture), tmp_path / "d")
    name = next(n for n in json.loads((data / "meta.json").read_text())["files"] if "train" in n)
    path = data / name
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=rf"{name} has \d+ bytes, meta.json says"):
        build_loaders(data, 32)
    path.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])
    with pytest.raises(DataError, match=rf"{name} is corrupt: sha256"):
        build_loaders(data, 32)
    path.write_bytes(bytes(len(good)))  # same size, garbage, only the size checked
    for backend in ["torch"] + (["ffcv"] if name.endswith(".beton") else []):
        with pytest.raises(DataError, match=rf"{name}"):
            build_loaders(data, 32, verify="size", backend=backend)
    path.unlink()
    with pytest.raises(DataError, match=rf"missing data file .*{name}"):
        build_loaders(data, 32)
    (data / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match=r"cannot read .*meta\.json"):
        build_loaders(data, 32)
    (data / "meta.json").unlink()
    with pytest.raises(DataError, match=r"meta\.json not found"):
        build_loaders(data, 32)


def test_bad_loader_arguments(digits_npz):
    with pytest.raises(DataError, match="fewer than one batch"):
        build_loaders(digits_npz, 5000, backend="torch")
    with pytest.raises(DataError, match="needs .beton files"):
        build_loaders(digits_npz, 32, backend="ffcv")
    with pytest.raises(ConfigError, match="augment"):
        build_loaders(digits_npz, 32, augment="autoaugment")
    with pytest.raises(ConfigError, match="distributed"):
        build_loaders(digits_npz, 32, distributed=True)


@pytest.mark.ffcv
def test_engine_resume_equals_uninterrupted_with_ffcv_loaders(digits_ffcv_loaders, tmp_path):
    """The 3-epoch run learns (chance: 10 %). 8 channels at a constant lr ended at 28-50 %
    (seeds 0-7), below the floor on some: 32 channels with the last epoch at lr / 10 end
    at 45-55 % (seeds 0-7 x {AVX2, ATen's default kernels}). The 2-epoch part is not held
    to the floor; the resumed run equals the full one, which is."""
    train, val = digits_ffcv_loaders

    def run(epochs: int, ckpt: Path) -> tuple[nn.Module, float]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Flatten(),
                              nn.Linear(32 * 8 * 8, 10))  # fmt: skip
        t = engine.make_trainee("net", model, engine.OptimSpec(lr=0.05, milestones=(2,)), CPU)
        spec = engine.FitSpec(epochs=epochs, seed=0, device=CPU, checkpoint=ckpt, progress=False)
        hist = engine.fit([t], train, val, spec)
        return model, hist.epochs[-1]["net/val_top1"]

    full, top1 = run(3, tmp_path / "full.pt")
    assert top1 > 30.0  # learns (chance: 10 %)
    run(2, tmp_path / "part.pt")
    resumed, _ = run(3, tmp_path / "part.pt")  # resumes at epoch 3
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_without_ffcv_everything_runs_on_torch_and_never_imports_it(tmp_path):
    """A cluster without FFCV's system libraries: `import ffcv` fails."""
    code = f"""
import sys, warnings
sys.modules["ffcv"] = None  # any import of ffcv now raises ImportError
import lowbit.data as d
assert not d.ffcv_available()
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    meta = d.prepare_dataset("digits", None, {str(tmp_path)!r}, image_size=8)
    train, val = d.build_loaders({str(tmp_path)!r}, 64, workers=0)
    x, y = next(iter(train))
assert meta.format == "npz" and x.shape == (64, 3, 8, 8) and len(w) == 2, w
assert "numba" not in sys.modules and "cv2" not in sys.modules
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


_THREADS = """
import sys, torch
from pathlib import Path
torch.set_num_threads(2)
from lowbit.data import build_loaders, ffcv_available
assert ffcv_available()
train, val = build_loaders(Path(sys.argv[1]), 64, workers=1, augment="cifar", backend="ffcv")
seen = [torch.get_num_threads()]
for x, y in train:
    seen.append(torch.get_num_threads())  # the training step runs here, on these threads
print(min(seen), max(seen))
"""


def test_reading_a_beton_keeps_torch_on_all_its_threads(digits_beton):
    """Importing FFCV sets torch to one thread, and each FFCV epoch to `workers` threads;
    lowbit keeps the count a stage started with, before, while and after iterating an
    FFCV loader with one worker (a fresh process: the count is process state)."""
    out = subprocess.run([sys.executable, "-c", _THREADS, str(digits_beton)],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["2", "2"]
