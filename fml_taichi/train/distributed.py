"""Data-parallel training over processes with torch.distributed (DDP, launched by ``torchrun``).

Each process runs its own Taichi runtime (kernels are per process; nothing Taichi-side is shared)
and its own slice of every global batch; DDP averages the gradients of the encoder and of Theta
after each backward, so every rank applies the same update and the weights stay identical.

Launch::

    torchrun --standalone --nproc_per_node=4 examples/train_fml.py --config configs/gpu_long.yaml

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; without them
(a plain ``python`` launch) everything here is a no-op for a single process. Backend: NCCL when
CUDA is in use, gloo on the CPU. On GPUs each rank uses ``cuda:LOCAL_RANK``; Taichi is pointed at the
same device through ``TI_VISIBLE_DEVICE`` before it starts.
"""
from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job. ``world == 1`` means not distributed."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); a single process without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise ValueError(f"malformed torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {e}") from e
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"torchrun environment: RANK={rank} must lie in [0, WORLD_SIZE={world})")
    return DistInfo(rank, world, local)


def setup(timeout_s: float = 600.0) -> DistInfo:
    """Join the process group when launched by torchrun (call before ``runtime.init()``).

    Pins this rank's GPU for torch and Taichi when CUDA is available. Returns the :class:`DistInfo`.
    """
    info = env_info()
    if not info.enabled:
        return info
    use_cuda = torch.cuda.is_available() and os.environ.get("FML_TAICHI_ARCH", "auto") != "cpu"
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
        os.environ.setdefault("TI_VISIBLE_DEVICE", str(info.local_rank))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return info


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_over_ranks(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average a dict of scalars over ranks (for logging: every rank sees a different slice)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / info.world for k, v in zip(keys, t.tolist())}


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, shapes, bytes): equal iff bitwise equal."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        a = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{a.dtype}:{tuple(a.shape)}".encode())
        h.update(a.view(torch.uint8).numpy().tobytes() if a.numel() else b"")
    return h.hexdigest()


def gather_digests(module: torch.nn.Module, info: DistInfo) -> list[str]:
    """Every rank's :func:`state_digest`, in rank order (a single-element list when not distributed)."""
    mine = state_digest(module)
    if not info.enabled:
        return [mine]
    out: list = [None] * info.world
    dist.all_gather_object(out, mine)
    return out


def broadcast_buffers(module: torch.nn.Module, info: DistInfo, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last forward of a stage each
    rank still holds statistics of its own slice; call this before saving or comparing weights.
    """
    if not info.enabled:
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=src)


def broadcast_tensor(t: torch.Tensor, info: DistInfo, src: int = 0) -> None:
    """In-place broadcast of ``t`` from rank ``src``."""
    if info.enabled:
        dist.broadcast(t, src=src)


def broadcast_object(obj, info: DistInfo, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
