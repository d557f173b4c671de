"""Multi-GPU and multi-node training with ``torchrun`` (DDP): the pieces ``train.py`` calls.

The same training code runs in one process or in ``N`` processes started by ``torchrun``::

    torchrun --nproc_per_node=8 -m ldetok_lite.cli train tokenizer --preset full --out runs/tok

- **Init** (:func:`init`): reads torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``
  environment; backend NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on the CPU.
  Without torchrun it is a no-op (rank 0 of 1).
- **Global batch.** ``TrainConfig.batch_size`` is the *global* batch: each of ``N`` ranks takes a
  disjoint slice of ``batch_size / N`` of every global batch (``train.IndexStream``), and DDP
  averages the gradients, so ``N`` processes with ``B/N`` equal one process with ``B`` up to float
  round-off (``tests/test_distributed.py``). The lr and the data order do not depend on ``N``.
- **Seeds.** Each rank seeds with ``seed + rank`` (masks, τ, posterior and diffusion noise differ
  per rank, as in the official code); model initialisation is broadcast from rank 0 by DDP.
- **Rank 0** writes checkpoints, ``metrics.jsonl``, figures and logs; the RNG states of all ranks
  are gathered into each checkpoint so that a resumed run continues every rank's stream.
- **Metrics** logged by rank 0 are means over all ranks (:func:`all_reduce_mean`).

Used by ``notebooks/20_full_tokenizer.ipynb``; README section "Multi-GPU and multi-node".
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ..device import pick_device

TIMEOUT_ENV = "LDETOK_DIST_TIMEOUT_MIN"  # collective timeout in minutes (default 60: long rank-0 evals)
FIND_UNUSED_ENV = "LDETOK_DDP_FIND_UNUSED"  # "0": DDP(find_unused_parameters=False); default on, as official


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, its ``local_rank`` on the node and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) set ``RANK`` and ``WORLD_SIZE``."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def env_ranks() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the environment; (0, 1, 0) without a launcher."""
    if not launched_by_torchrun():
        return 0, 1, 0
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    return rank, world, local


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def init(device: str | torch.device = "auto") -> DistInfo:
    """Join the process group torchrun set up (no-op outside torchrun) and pick this rank's device.

    ``device="auto"``: ``cuda:LOCAL_RANK`` when CUDA is available (backend NCCL), else the CPU
    (backend gloo). ``device="cpu"`` forces gloo on the CPU even on a GPU node.
    """
    rank, world, local = env_ranks()
    want = str(device) if device is not None else "auto"
    if not launched_by_torchrun():
        return DistInfo(0, 1, 0, pick_device(want), None)
    use_cuda = torch.cuda.is_available() and want.split(":")[0] in ("auto", "cuda")
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={want!r} was asked for but CUDA is not available here; use 'auto' or 'cpu'")
    if use_cuda:
        n = torch.cuda.device_count()
        if local >= n:
            raise RuntimeError(f"LOCAL_RANK={local} but only {n} GPU(s) are visible: use --nproc_per_node <= {n}")
        torch.cuda.set_device(local)
        dev, backend = torch.device("cuda", local), "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not is_initialized():
        minutes = float(os.environ.get(TIMEOUT_ENV, "60"))
        kw = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=minutes), **kw)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, dev, backend)


def cleanup() -> None:
    """Leave the process group (after a final barrier)."""
    if is_initialized():
        with contextlib.suppress(Exception):
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """``global_batch / world_size``; a global batch that does not split evenly is an error."""
    if world_size < 1:
        raise ValueError(f"world_size={world_size} must be >= 1")
    if global_batch % world_size:
        raise ValueError(f"batch_size={global_batch} (the global batch) does not split over {world_size} "
                         f"processes; use a multiple of {world_size}")
    return global_batch // world_size


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------


def wrap_ddp(model: nn.Module, device: torch.device, find_unused_parameters: bool | None = None) -> nn.Module:
    """``DistributedDataParallel(model)``: broadcasts rank 0's weights now, averages gradients in backward.

    ``find_unused_parameters`` defaults to True, the official setting and a necessity for the
    tokenizer: a batch drawn with mask ratio 0 on one rank leaves ``mask_token`` unused there
    while it is used on the others. ``LDETOK_DDP_FIND_UNUSED=0`` turns it off (a little faster
    for models that use every parameter in every step). Buffers are not re-broadcast each step
    (the kit's buffers are constants: RoPE tables, latent statistics).
    """
    device = torch.device(device)
    if find_unused_parameters is None:
        find_unused_parameters = os.environ.get(FIND_UNUSED_ENV, "1") != "0"
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    kw = {"find_unused_parameters": find_unused_parameters, "gradient_as_bucket_view": True}
    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:  # newer torch
        kw["forward_sync_buffers"] = False
    else:
        kw["broadcast_buffers"] = False
    return DDP(model, device_ids=ids, **kw)


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers to every rank (modules not wrapped in DDP)."""
    if get_world_size() < 2:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src)


def all_reduce_grads(module: nn.Module) -> None:
    """Average the gradients of ``module`` over ranks in one flat all-reduce (modules outside DDP,
    e.g. the discriminator, whose generator-side forward would confuse DDP's hooks)."""
    world = get_world_size()
    if world < 2:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


# ----------------------------------------------------------------------------------------------
# values
# ----------------------------------------------------------------------------------------------


def _collective_device() -> torch.device:
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Mean of each float over ranks (same keys on every rank; sorted so the order agrees)."""
    world = get_world_size()
    if world < 2 or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    t /= world
    return dict(zip(keys, t.cpu().tolist()))


def any_true(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (a collective stop decision)."""
    if get_world_size() < 2:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_object(obj, src: int = 0):
    """``src``'s Python object on every rank."""
    if get_world_size() < 2:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_collective_device())
    return box[0]


def gather_objects(obj) -> list:
    """Every rank's ``obj`` as a list indexed by rank (on every rank)."""
    world = get_world_size()
    if world < 2:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first (e.g. writes a cache), then the other ranks (which find it)."""
    if get_rank() != 0:
        barrier()
    try:
        yield
    finally:
        if get_rank() == 0:
            barrier()


__all__ = [
    "DistInfo", "launched_by_torchrun", "env_ranks", "init", "cleanup", "barrier", "per_rank_batch", "wrap_ddp",
    "broadcast_module", "all_reduce_grads", "all_reduce_mean", "any_true", "broadcast_object", "gather_objects",
    "main_first", "is_initialized", "get_rank", "get_world_size",
]
