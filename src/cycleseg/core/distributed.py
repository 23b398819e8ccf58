"""Data-parallel training with torch.distributed, started by `torchrun` (NCCL on GPUs, gloo on CPU).

Every process holds full copies of G, F and D_X, trains on its own shard of each batch order, and averages
gradients with all_reduce before each optimizer step, so parameters stay identical on all ranks.

Why not DistributedDataParallel's wrapper: in the generator step G runs twice (forward and backward cycle)
and D_X is frozen for part of the iteration; DDP's per-parameter hooks require `static_graph` tricks for
both and rename every state_dict key. An explicit all_reduce of the flattened gradients is what DDP does
underneath (minus overlapping communication with the backward pass) and keeps the loop as in Table 1.

Outside torchrun (no WORLD_SIZE in the environment) every function here is a no-op for one process.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

__all__ = ["all_reduce_sum", "any_rank", "average_gradients", "broadcast_buffers", "broadcast_parameters",
           "check_in_sync", "init_from_env", "is_distributed", "is_main", "local_rank", "rank", "world_size"]


def init_from_env(device_type: str) -> bool:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR ...); False when alone."""
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0 logs, shows progress and writes checkpoints."""
    return rank() == 0


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Replace every gradient by its mean over the ranks: one all_reduce of all gradients flattened."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world_size()
    for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
        g.copy_(synced)


def broadcast_parameters(module: nn.Module) -> None:
    """Rank 0's parameters and buffers to every rank (after initialisation or loading a checkpoint)."""
    if is_distributed():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def broadcast_buffers(module: nn.Module) -> None:
    """Rank 0's BatchNorm running statistics to every rank, as DDP does, so evaluation agrees everywhere."""
    if is_distributed():
        for b in module.buffers():
            dist.broadcast(b.data, src=0)


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum a tensor over the ranks (in place; returned for convenience)."""
    if is_distributed():
        dist.all_reduce(t)
    return t


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if `flag` is True on any (e.g. one rank got SIGTERM: all stop at the same step)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def check_in_sync(module: nn.Module) -> list[str]:
    """SHA-256 of this rank's parameters, gathered from all ranks (one entry when alone)."""
    digest = hashlib.sha256()
    for p in module.parameters():
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    mine = digest.hexdigest()
    if not is_distributed():
        return [mine]
    out: list[str | None] = [None] * world_size()
    dist.all_gather_object(out, mine)
    return [str(h) for h in out]
