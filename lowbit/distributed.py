"""torch.distributed for multi-task jobs: one process per GPU (or per CPU task).

A job with several tasks (SLURM tasks, or local submitit tasks) runs the same stage in
every task; each task joins one process group here, the engine wraps its networks in
DistributedDataParallel, metrics are summed across ranks and only rank 0 writes.

launch.py reads the rank layout from submitit's TorchDistributedEnvironment and hands it
over as a plain DistEnv, so this module never imports submitit (only launch.py does).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in its job: ranks, world size, the rendezvous address."""

    rank: int
    local_rank: int  # rank on this node: picks the GPU
    world_size: int
    master_addr: str  # the first node of the job
    master_port: int

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def bind(device: torch.device | None) -> None:
    """Make `device` the calling thread's current CUDA device (nothing for the CPU).

    CUDA's current device belongs to each host thread, and a new thread starts on
    device 0. Whatever uses the current device implicitly (the default stream, events,
    FFCV's loader thread) must run in a thread bound to the device the stage trains
    on: a process on cuda:N, and every rank but rank 0 of a node.
    """
    if device is not None and device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)


def backend(device: str = "auto") -> str:
    """nccl when the stage trains on a GPU, gloo on the CPU (also on a GPU node when
    common.device is cpu: NCCL cannot reduce CPU tensors)."""
    return "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"


def init(env: DistEnv, device: str = "auto", timeout_s: float = 600.0) -> None:
    """Join the job's process group (no-op for a single task).

    Also exports the torch.distributed env:// variables, so code that reads RANK /
    WORLD_SIZE / LOCAL_RANK (data loaders, samplers) sees the same layout.
    """
    if not env.distributed or dist.is_initialized():
        return
    os.environ.update(
        MASTER_ADDR=env.master_addr,
        MASTER_PORT=str(env.master_port),
        RANK=str(env.rank),
        WORLD_SIZE=str(env.world_size),
        LOCAL_RANK=str(env.local_rank),
    )
    if backend(device) == "nccl":
        # One GPU per task. A cluster that binds GPUs to tasks shows each task one
        # device, hence the modulo; otherwise every task sees all of the node's GPUs.
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
    dist.init_process_group(
        backend(device),
        init_method=f"tcp://{env.master_addr}:{env.master_port}",
        rank=env.rank,
        world_size=env.world_size,
        timeout=timedelta(seconds=timeout_s),
    )


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(env: DistEnv, device: str = "auto") -> Iterator[None]:
    """init(env) for the duration of a block; always leaves the group."""
    init(env, device)
    try:
        yield
    finally:
        shutdown()


def rank_world() -> tuple[int, int]:
    """This process's rank and the number of ranks: (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def world_size() -> int:
    return rank_world()[1]


def wrap(model: nn.Module, device: torch.device, leaves_unused: bool = False) -> nn.Module:
    """The model in DistributedDataParallel when this process is one of several ranks.

    DDP averages gradients over ranks, so with per-rank batches of B the update equals
    one process's update on the global batch of B x world (BatchNorm aside: its batch
    statistics stay per rank). find_unused_parameters (an extra graph walk every step) is
    turned on only where a step can leave parameters unused (`may_leave_unused`).
    """
    if world_size() == 1 or isinstance(model, nn.parallel.DistributedDataParallel):
        return model
    unused = may_leave_unused(model, leaves_unused)
    # One wrapper per network and round setting for the life of the process group: a
    # training stage makes new trainees for the same network every round, and a second
    # DDP over the same parameters would register a second set of gradient hooks. The
    # network keeps its wrapper (a plain attribute, not a submodule); a new process
    # group wraps anew, and so does a round that uses other parameters (TS stage 2 after
    # stage 1), once the old wrapper's hooks are removed.
    cached = model.__dict__.get("_lowbit_ddp")
    if cached is not None and cached.process_group is dist.group.WORLD:
        if cached.find_unused_parameters == unused:
            return cached
        cached._remove_autograd_hooks()
    ids = None
    if device.type == "cuda":
        ids = [device.index if device.index is not None else torch.cuda.current_device()]
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)
    object.__setattr__(model, "_lowbit_ddp", ddp)  # not nn.Module's: no submodule
    return ddp


def may_leave_unused(model: nn.Module, leaves_unused: bool = False) -> bool:
    """Whether a step may leave a learned quantizer parameter (PACT's alpha, LSQ's step)
    out of the forward: the method says so (`leaves_unused`: stochastic precision
    switches quantizers off for whole steps), a disabled quantizer (TS stage 1 with
    a_mode relu) is an identity, and at 32 bits LSQ does not round (TS stage 1 with
    a_mode clip). Conservative: PACT's alpha still clips at 32 bits, and is counted as
    possibly unused there too."""
    from lowbit.quant.convert import iter_quantizers
    from lowbit.quant.functional import MAX_BITS

    for _, q in iter_quantizers(model):
        idle = leaves_unused or not q.enabled or q.bits >= MAX_BITS
        if idle and any(p.requires_grad for p in q.parameters()):
            return True
    return False


def all_agree(ok: bool) -> bool:
    """True on every rank iff `ok` on every rank: a decision one rank takes (its lock,
    its checks) becomes every rank's, so no rank waits alone in the next collective."""
    if world_size() == 1:
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank src's buffers (BatchNorm running statistics) to every rank.

    DDP syncs buffers at the start of each training forward, so after the last step
    every rank holds stats updated by its own last batch; evaluating with rank 0's
    makes every rank evaluate the network rank 0 saves.
    """
    if world_size() == 1:
        return
    for b in model.buffers():
        dist.broadcast(b.data, src)
