"""The images a metric is computed on ("sources"), checked and converted to uint8 once.

A source is a float tensor in [0, 1] of shape (N, 3, H, W) (uint8 tensors pass as they are), a
folder of PNG/JPEG files, a dataset yielding images or ``(image, label)``, or images made on the
fly: a callable ``fn(n) -> (n, 3, H, W)`` with ``num_images=``, or an :class:`ImageStream`
(:func:`generator_source`, :func:`reconstruction_source`), so 50k samples never sit in memory.

uint8 conversion rounds, ``round(x * 255)``; the official code truncates (``(x * 255).to(uint8)``,
``utils/train_utils.py``), which darkens every image by half a level on average:
``quantize="truncate"`` reproduces it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import Dataset
from torch_fidelity import GenerativeModelBase

from .. import _compat
from ..device import autocast
from ..generators import decode_latents
from ..io import atomic_write

__all__ = ["QUANTIZE", "IMAGE_EXTENSIONS", "to_uint8", "ImageStream", "check_count", "prepare", "save_png_folder",
           "reconstruction_source", "class_balanced_labels", "generator_source"]

QUANTIZE = ("round", "truncate")
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg")


def to_uint8(images: torch.Tensor, name: str = "images", quantize: str = "round") -> torch.Tensor:
    """Float images in [0, 1], shape (N, 3, H, W) -> uint8 on the same device.

    Rounds (``round(x * 255)``); the official code truncates (``(x * 255).to(uint8)``), which
    ``quantize="truncate"`` reproduces. Values within half a level outside [0, 1] are clamped;
    anything further out, NaN/Inf, a wrong shape or an integer dtype other than uint8 raises.
    """
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize={quantize!r} is not known; allowed: {', '.join(QUANTIZE)}")
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N, 3, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] < 1 or min(images.shape[2:]) < 1:
        raise ValueError(f"{name} must have shape (N, 3, H, W) with N >= 1, got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise TypeError(f"{name} must be float in [0, 1] or uint8, got dtype {images.dtype}")
    x = images.detach().float()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or Inf values")
    lo, hi = float(x.min()), float(x.max())
    tol = 0.5 / 255
    if lo < -tol or hi > 1 + tol:
        raise ValueError(f"{name} values span [{lo:.4g}, {hi:.4g}], out of range; allowed [0, 1] "
                         "(clamp decoder outputs with .clamp(0, 1); uint8 images pass as they are)")
    x = x * 255
    x = x.round() if quantize == "round" else x.floor()
    return x.clamp_(0, 255).to(torch.uint8)


class ImageStream:
    """Images produced on the fly, ``fn(n) -> (n, 3, H, W)`` in [0, 1], ``num_images`` in all.

    Each metric call consumes the stream from the start (``reset()`` is called first; ``fn`` may
    define ``reset`` itself). ``labels`` (optional, (num_images,)) are the classes the images were
    asked for, used for the class accuracy of a conditional generator.
    """

    def __init__(self, fn: Callable[[int], torch.Tensor], num_images: int, labels: torch.Tensor | None = None,
                 name: str = "stream"):
        if not callable(fn):
            raise TypeError(f"fn must be callable (n) -> images, got {type(fn).__name__}")
        check_count(num_images, "num_images")
        if labels is not None and len(labels) != num_images:
            raise ValueError(f"labels has {len(labels)} entries, expected num_images={num_images}")
        self.fn, self.num_images, self.labels, self.name = fn, num_images, labels, name
        self.produced = 0

    def reset(self) -> None:
        self.produced = 0
        if hasattr(self.fn, "reset"):
            self.fn.reset()

    def next(self, n: int) -> torch.Tensor:
        images = self.fn(n)
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] != n:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"{self.name}: fn({n}) must return {n} images (n, 3, H, W), got {shape}")
        self.produced += n
        return images


def check_count(n, name: str, lo: int = 1) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < lo:
        raise ValueError(f"{name}={n!r} must be an int >= {lo}")


class _UInt8Images(Dataset):
    """A uint8 tensor (N, 3, H, W) as the dataset torch-fidelity expects (items are images)."""

    def __init__(self, images: torch.Tensor):
        self.images = images.cpu()

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i]


class _DatasetImages(Dataset):
    """Any dataset yielding an image or ``(image, label)``; items converted to uint8 one by one."""

    def __init__(self, ds: Dataset, n: int, quantize: str):
        self.ds, self.n, self.quantize = ds, n, quantize

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        item = self.ds[i]
        img = item[0] if isinstance(item, (tuple, list)) else item
        return to_uint8(img[None], name=f"dataset item {i}", quantize=self.quantize)[0].cpu()


class _StreamModel(GenerativeModelBase):
    """Adapts an :class:`ImageStream` to torch-fidelity's generative-model input (noise only sets n)."""

    def __init__(self, stream: ImageStream, quantize: str):
        super().__init__()
        self.stream, self.quantize = stream, quantize

    @property
    def z_size(self):
        return 1

    @property
    def z_type(self):
        return "normal"

    @property
    def num_classes(self):
        return 0  # labels are the stream's business (torch-fidelity's conditional path uses np.int)

    def forward(self, noise):
        images = self.stream.next(noise.shape[0])
        return to_uint8(images, name=self.stream.name, quantize=self.quantize).to(noise.device)


def _folder_images(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)


def prepare(source, name: str, num_images: int | None, quantize: str):
    """A source -> (torch-fidelity input, extra kwargs for it, number of images); checks it first."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_dir():
            raise FileNotFoundError(f"{name}: image folder {str(path)!r} does not exist")
        n = len(_folder_images(path))
        if n == 0:
            raise ValueError(f"{name}: folder {str(path)!r} has no images ({', '.join(IMAGE_EXTENSIONS)}; "
                             "sub-folders are not searched)")
        if num_images is not None and num_images != n:
            raise ValueError(f"{name}: num_images={num_images} but folder {str(path)!r} holds {n} images")
        return str(path), {}, n
    if isinstance(source, torch.Tensor):
        images = to_uint8(source, name=name, quantize=quantize)
        if num_images is not None:
            if num_images > images.shape[0]:
                raise ValueError(f"{name}: num_images={num_images} but only {images.shape[0]} images were given")
            images = images[:num_images]
        return _UInt8Images(images), {}, images.shape[0]
    if isinstance(source, ImageStream) or (callable(source) and not isinstance(source, Dataset)):
        if not isinstance(source, ImageStream):
            if num_images is None:
                raise ValueError(f"{name} is a callable (n) -> images; pass num_images= to say how many to draw")
            source = ImageStream(source, num_images, name=name)
        n = source.num_images if num_images is None else num_images
        check_count(n, "num_images")
        if n > source.num_images:
            raise ValueError(f"{name}: num_images={n} but the stream makes only {source.num_images}")
        source.reset()
        return _StreamModel(source, quantize), {"model_num_samples": n}, n
    if isinstance(source, Dataset):
        total = len(source)
        n = total if num_images is None else num_images
        if n > total:
            raise ValueError(f"{name}: num_images={n} but the dataset holds {total} images")
        if hasattr(source, "images_uint8"):  # the embedded datasets: one fast path, no per-item flips
            return _UInt8Images(source.images_uint8[:n]), {}, n
        return _DatasetImages(source, n, quantize), {}, n
    raise TypeError(f"{name} must be a tensor (N, 3, H, W), an image folder, a Dataset, an ImageStream or a "
                    f"callable (n) -> images; got {type(source).__name__}")


def save_png_folder(images: torch.Tensor, folder: str | Path, start: int = 0, quantize: str = "round") -> list[Path]:
    """Write images ((N, 3, H, W) in [0, 1]) as ``folder/{start+i:06d}.png`` (lossless), as the
    official evaluation does before computing metrics on the folder."""
    u8 = to_uint8(images, quantize=quantize).cpu().permute(0, 2, 3, 1).numpy()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, arr in enumerate(u8):
        p = folder / f"{start + i:06d}.png"
        atomic_write(p, lambda f, arr=arr: Image.fromarray(arr).save(f, format="PNG"))  # never through a link
        paths.append(p)
    return paths


def _images_of(images) -> torch.Tensor | Dataset:
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
        return images
    if isinstance(images, Dataset):
        return images
    raise TypeError(f"images must be a tensor (N, 3, H, W) or a Dataset, got {type(images).__name__}")


def reconstruction_source(tokenizer: nn.Module, images, num_images: int | None = None,
                          on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> ImageStream:
    """Reconstructions ``tokenizer.reconstruct(x)`` of ``images`` (a tensor or dataset, in order),
    made batch by batch; ``on_batch(originals, reconstructions)`` sees each batch (PSNR/SSIM)."""
    images = _images_of(images)
    total = len(images)
    n = total if num_images is None else num_images
    check_count(n, "num_images")
    if n > total:
        raise ValueError(f"num_images={n} but only {total} images were given")
    device = next(tokenizer.parameters()).device

    class _Recon:
        pos = 0

        def reset(self):
            self.pos = 0

        @torch.no_grad()
        def __call__(self, k):
            if isinstance(images, torch.Tensor):
                x = images[self.pos:self.pos + k]
            else:
                items = [images[i] for i in range(self.pos, self.pos + k)]
                x = torch.stack([it[0] if isinstance(it, (tuple, list)) else it for it in items])
            if x.dtype == torch.uint8:
                x = x.float() / 255.0
            self.pos += k
            x = x.to(device)
            with autocast(device):  # bf16 on CUDA (as the official rFID), fp32 elsewhere
                recon = tokenizer.reconstruct(x).float().clamp(0, 1)
            if on_batch is not None:
                on_batch(x, recon)
            return recon

    return ImageStream(_Recon(), n, name="reconstructions")


def class_balanced_labels(num_images: int, num_classes: int) -> torch.Tensor:
    """``num_images`` labels cycling through the classes, ``0, 1, …, C−1, 0, 1, …`` (the official
    order, ``utils/train_utils.py``, ``evaluate_generator``: 50 per class for 50 000 images; with a
    remainder the first classes get one more)."""
    check_count(num_images, "num_images")
    check_count(num_classes, "num_classes")
    return torch.arange(num_images) % num_classes


@_compat.renamed_keywords(cfg="cfg_scale")
def generator_source(generator: nn.Module, tokenizer: nn.Module, num_images: int, *, cfg_scale: float = 1.0,
                     num_steps: int | None = None, temperature: float = 1.0, num_classes: int | None = None,
                     seed: int = 0) -> ImageStream:
    """Class-balanced samples of a latent generator decoded by ``tokenizer``, made batch by batch
    (``generator.generate(labels, cfg_scale, num_steps, temperature, rng=g)`` then
    ``generators.decode_latents``). Deterministic from ``seed``; ``.labels`` gives the classes."""
    if not (isinstance(cfg_scale, (int, float)) and cfg_scale >= 1.0):
        raise ValueError(f"cfg_scale={cfg_scale!r} is out of range; allowed >= 1 (1 = no guidance)")
    if num_steps is not None:
        check_count(num_steps, "num_steps")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"temperature={temperature!r} must be > 0")
    if num_classes is None:
        num_classes = int(getattr(generator, "num_classes", None) or
                          (getattr(generator, "spec", None) or {}).get("kwargs", {}).get("num_classes", 10))
    labels = class_balanced_labels(num_images, num_classes)
    device = next(generator.parameters()).device

    class _Samples:
        pos = 0

        def reset(self):
            self.pos = 0

        @torch.no_grad()
        def __call__(self, k):
            y = labels[self.pos:self.pos + k].to(device)
            g = torch.Generator(device=device).manual_seed(seed * 1_000_003 + self.pos)
            self.pos += k
            with autocast(device):  # generation and decoding both in bf16 on CUDA, as the official generate_images
                z = generator.generate(y, cfg_scale=float(cfg_scale), num_steps=num_steps,
                                       temperature=float(temperature), rng=g)
                images = decode_latents(tokenizer, z.float())
            return images.float().clamp(0, 1)

    return ImageStream(_Samples(), num_images, labels=labels, name="samples")
