"""Fast image loading at scale: persistent DataLoader workers that read the training order ahead.

``train.py`` draws its batches of dataset indices from a reproducible ``IndexStream`` (resumable
to the exact batch, sharded over ranks). For file datasets (ImageFolder/ImageNet) a
:class:`StreamLoader` runs a *persistent* ``DataLoader`` (``num_workers`` processes, pinned
memory, ``prefetch_factor`` batches per worker in flight) over a copy of that stream, so JPEG
decoding and the paper's center crop happen in the background while the GPU trains. The loop
still asks for its batches by index: :meth:`StreamLoader.get` hands over the prefetched batch
when the indices match (they always do in training) and loads directly otherwise (evaluation).
"""

from __future__ import annotations

import copy

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class _Indexed(Dataset):
    """``(image, label, index)`` so that a batch can be checked against the requested indices."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        img, label = self.ds[i]
        return torch.as_tensor(img), int(label), int(i)


class _StreamSampler(Sampler):
    """The batches of an ``IndexStream`` copy, forever (the loop decides when to stop)."""

    def __init__(self, stream):
        self.stream = copy.deepcopy(stream)

    def __iter__(self):
        s = copy.deepcopy(self.stream)
        while True:
            yield s.next().tolist()

    def __len__(self):  # only used for display by some tools
        return 1 << 30


class StreamLoader:
    """Prefetch the batches that ``stream`` will produce, from its current position on.

    ``get(idx)`` returns ``(images float (B,3,H,W), labels int64 (B,))`` for the next batch when
    ``idx`` equals its indices, else ``None`` (the caller loads directly).
    """

    def __init__(self, ds, stream, num_workers: int, pin_memory: bool | None = None, prefetch_factor: int = 4):
        if num_workers < 1:
            raise ValueError(f"num_workers={num_workers} must be >= 1 for a StreamLoader")
        pin = torch.cuda.is_available() if pin_memory is None else pin_memory
        # its own generator: starting the workers must not draw from the global RNG (the training
        # noise would shift and a resumed run would differ)
        self.loader = DataLoader(_Indexed(ds), batch_sampler=_StreamSampler(stream), num_workers=num_workers,
                                 pin_memory=pin, persistent_workers=True, prefetch_factor=prefetch_factor,
                                 generator=torch.Generator().manual_seed(0))
        self._it = None
        self._pending = None
        self.hits = 0
        self.misses = 0

    def _peek(self):
        if self._pending is None:
            if self._it is None:
                self._it = iter(self.loader)
            self._pending = next(self._it)
        return self._pending

    def get(self, idx: torch.Tensor):
        x, y, got = self._peek()
        if got.shape != idx.shape or not torch.equal(got, idx.to(got.dtype)):
            self.misses += 1
            return None
        self._pending = None
        self.hits += 1
        return x.float(), y.long()

    def close(self) -> None:
        self._pending = None
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()


__all__ = ["StreamLoader"]
