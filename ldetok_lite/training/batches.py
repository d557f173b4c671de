"""Batches that a run can reproduce and resume exactly: the data order, the flips, the RNG state.

The data order is a permutation drawn from ``(seed, epoch)`` (:class:`IndexStream`), flips come
from ``(seed, step)`` (:func:`step_rng`), and :func:`rng_state` captures torch, NumPy and Python
RNGs in a form ``torch.load(weights_only=True)`` reads back, so a run killed and resumed on the
CPU ends with bit-identical weights. Under torchrun every rank takes its slice of each global
batch (``batch_size`` is global). :class:`ImageSource` serves images by index from memory or,
for file datasets, from background workers (``streaming.py``).
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from .streaming import StreamLoader

__all__ = ["IndexStream", "step_rng", "rng_state", "set_rng_state", "isolated_rng", "ImageSource", "flip_mask",
           "flip_images"]

class IndexStream:
    """Batches of dataset indices: epoch ``e`` is ``randperm(n)`` from seed ``(seed, e)``, cut in
    ``batch_size`` pieces (drop_last), rank ``r`` of ``world_size`` takes every ``world_size``-th
    batch. ``state()``/``load_state()`` give the exact position."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if n < batch_size * world_size:
            raise ValueError(f"batch_size={batch_size} (x{world_size} ranks) is larger than the dataset "
                             f"({n} items); lower batch_size or use more data")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.per_epoch = n // (batch_size * world_size)
        self.epoch, self.pos = 0, 0
        self._perm: torch.Tensor | None = None

    def _permutation(self) -> torch.Tensor:
        if self._perm is None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm = torch.randperm(self.n, generator=g)
        return self._perm

    def next(self) -> torch.Tensor:
        if self.pos >= self.per_epoch:
            self.epoch, self.pos, self._perm = self.epoch + 1, 0, None
        b = self.pos * self.world_size + self.rank
        idx = self._permutation()[b * self.batch_size:(b + 1) * self.batch_size]
        self.pos += 1
        return idx

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state(self, s: dict) -> None:
        self.epoch, self.pos, self._perm = int(s["epoch"]), int(s["pos"]), None


def step_rng(seed: int, step: int, salt: int = 0) -> torch.Generator:
    """The RNG of one (step, micro-batch): independent of every other random stream."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7919 + salt) % (2**62))


def rng_state() -> dict:
    """torch (CPU and CUDA), numpy and python RNG states as weights_only-loadable objects."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # the current device only: under torchrun each process owns one GPU, and touching the
        # others would create a context on every GPU of the node
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        c = state["cuda"]
        if isinstance(c, (list, tuple)):  # older checkpoints: one state per visible device
            c = c[torch.cuda.current_device()] if torch.cuda.current_device() < len(c) else c[0]
        torch.cuda.set_rng_state(c)


@contextlib.contextmanager
def isolated_rng():
    """Run a block (evaluation, sample figures) without disturbing the training RNG streams."""
    s = rng_state()
    try:
        yield
    finally:
        set_rng_state(s)


def _tensor_images(ds) -> torch.Tensor | None:
    """The whole dataset as a uint8 or float tensor when it is held in memory (fast path)."""
    for attr in ("images_uint8", "images"):
        t = getattr(ds, attr, None)
        if isinstance(t, torch.Tensor) and t.ndim == 4:
            return t
    return None


class ImageSource:
    """Images and labels by index, from an in-memory tensor or any ``(img, label)`` Dataset.

    Flips are drawn from ``(seed, step)``, never from the global RNG (DataLoader workers or
    resumption cannot change them). For file datasets, a DataLoader with workers reads each
    batch of indices (``num_workers`` from the data config).
    """

    def __init__(self, ds, num_workers: int = 0):
        self.ds = ds
        self.tensor = _tensor_images(ds)
        self.labels = getattr(ds, "labels", None)
        self.num_workers = num_workers
        self.num_classes = int(getattr(ds, "num_classes", 0) or 0) or None
        self.prefetch = None

    def __len__(self):
        return len(self.ds)

    def start_prefetch(self, stream: "IndexStream") -> None:
        """File datasets with workers: read ``stream``'s coming batches in persistent background
        workers (``streaming.StreamLoader``); in-memory data needs none."""
        if self.tensor is None and self.num_workers > 0 and self.prefetch is None:
            self.prefetch = StreamLoader(self.ds, stream, self.num_workers)

    def stop_prefetch(self) -> None:
        if self.prefetch is not None:
            self.prefetch.close()
            self.prefetch = None

    def get(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prefetch is not None:
            got = self.prefetch.get(idx)
            if got is not None:
                return got
        if self.tensor is not None:
            x = self.tensor[idx]
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            y = torch.as_tensor(self.labels)[idx].long() if self.labels is not None else torch.zeros(len(idx),
                                                                                                     dtype=torch.long)
            return x, y
        items = [self.ds[int(i)] for i in idx] if self.num_workers == 0 else self._load_parallel(idx)
        x = torch.stack([torch.as_tensor(a) for a, _ in items]).float()
        y = torch.as_tensor([int(b) for _, b in items], dtype=torch.long)
        return x, y

    def _load_parallel(self, idx):
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(self.ds, idx.tolist()), batch_size=len(idx),
                                             num_workers=self.num_workers, collate_fn=list)
        return next(iter(loader))


def flip_mask(n: int, g: torch.Generator, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Which of this rank's ``n`` images to mirror: the draws of the whole global batch
    (``n·world_size``), sliced for ``rank``, so the flips do not depend on the number of ranks."""
    return (torch.rand(n * world_size, generator=g) < 0.5)[rank * n:(rank + 1) * n]


def flip_images(x: torch.Tensor, g: torch.Generator, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    mask = flip_mask(x.shape[0], g, rank, world_size)
    return torch.where(mask.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
