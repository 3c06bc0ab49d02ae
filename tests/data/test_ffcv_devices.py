"""Which CUDA device the threads that use one are bound to, on a multi-GPU node.

CUDA's current device belongs to each host thread (a new thread starts on device 0).
FFCV's epoch thread records the events that guard its output buffers on the current
device's stream, so a rank on GPU 1 whose loader thread is unbound guards GPU 0; a
single process on cuda:1 that never sets its device does the same in every thread.

There is no GPU here: torch.cuda.set_device and torch.cuda.is_available are replaced by
recorders (a mock for what cannot exist), and the FFCV loader runs its CPU pipeline with
the CUDA device its threads are told to bind to. What is real: FFCV's Loader and its
epoch thread, lowbit's FfcvLoader and the stage's device selection.
"""

from __future__ import annotations

import threading

import pytest
import torch

from lowbit.config import load_config
from lowbit.data import build_loaders
from tests.data.conftest import DIGITS_BATCH


@pytest.fixture
def bound(monkeypatch) -> list[tuple[str, int]]:
    """(thread name, device index) of every torch.cuda.set_device call."""
    calls: list[tuple[str, int]] = []

    def set_device(device: torch.device | int) -> None:
        index = device.index if isinstance(device, torch.device) else int(device)
        calls.append((threading.current_thread().name, index))

    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    return calls


@pytest.mark.ffcv
def test_ffcv_epoch_thread_is_bound_to_the_loaders_device(digits_beton, bound):
    train, _ = build_loaders(digits_beton, DIGITS_BATCH, backend="ffcv", augment="none")
    train.loader.cuda_device = torch.device("cuda", 1)  # what a loader on cuda:1 holds
    main = threading.current_thread().name
    batches = sum(1 for _ in train)
    assert batches == len(train)
    threads = {name for name, index in bound if index == 1}
    assert main in threads  # FFCV's streams and the stream it waits on
    assert threads - {main}, bound  # ... and its epoch thread, before it records events
    assert all(index == 1 for _, index in bound)


def test_a_single_process_on_cuda_n_makes_it_its_current_device(tmp_path, monkeypatch, bound):
    from lowbit.training.chain import device_of

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    params = tmp_path / "params.yaml"
    params.write_text("common: {device: 'cuda:1'}\n")
    cfg = load_config("pretrain", params)
    assert device_of(cfg) == torch.device("cuda", 1)
    assert bound == [(threading.current_thread().name, 1)]
