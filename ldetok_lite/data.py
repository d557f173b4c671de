"""Datasets and one ``make_loader`` for all of them (taught in notebooks/00_welcome).

- ``shapes``: the embedded default. A procedurally generated, class-conditional dataset of
  10 classes (5 shapes x 2 colour families) with random position, size, rotation, colour and a
  textured background. Deterministic from a seed, 32 px by default (64/128/256 on request),
  generated at thousands of images per second, no download.
- ``shapes-large``: the same classes and backgrounds with the shapes drawn larger (radius 0.55-0.80
  of the half-width instead of 0.32-0.60), so that their outline spans more latent tokens.
- ``photos``: random crops of the photographs that ship inside scikit-image (astronaut,
  coffee, chelsea, rocket, ...): real images with no download.
- ``cifar10`` / ``mnist``: torchvision datasets; they must already be under ``data_dir``
  (a clear error says how to download them when the internet is available).
- ``imagefolder``: an ImageNet-layout folder (``data/imagenet/train/<class>/*.JPEG``) with the
  paper's ADM center crop (official ``utils/loader.py``) and a random horizontal flip in training.

All datasets yield ``(image, label)`` with the image a float tensor in [0, 1], shape (3, H, W).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from .config import SHAPES_DATASETS, DataConfig, check_dataset_size
from .io import repo_root

SHAPES = ("circle", "square", "triangle", "ring", "cross")
COLOUR_FAMILIES = ("warm", "cool")
SHAPES_CLASSES = tuple(f"{c} {s}" for c in COLOUR_FAMILIES for s in SHAPES)
PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry",
               "hubble_deep_field", "colorwheel")
#: each embedded shapes data set's range of shape radii, in units of the image's half-width
SHAPE_RADII = {"shapes": (0.32, 0.60), "shapes-large": (0.55, 0.80)}
assert tuple(SHAPE_RADII) == SHAPES_DATASETS
_VAL_SEED_OFFSET = 1_000_003
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """A dataset cannot be built: names the dataset, the path and how to fix it."""


# --------------------------------------------------------------------------------------------
# The embedded shapes dataset
# --------------------------------------------------------------------------------------------

def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Vectorised HSV -> RGB for tensors of shape (N,); returns (N, 3)."""
    h = (h % 1.0) * 6.0
    i = torch.floor(h)
    f = h - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    r = torch.stack([v, q, p, p, t, v], 1).gather(1, i[:, None])
    g = torch.stack([t, v, v, q, p, p], 1).gather(1, i[:, None])
    b = torch.stack([p, p, t, v, v, q], 1).gather(1, i[:, None])
    return torch.cat([r, g, b], 1)


def _shape_distance(kind: torch.Tensor, u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed distance (negative inside) of each image's shape; u, v are rotated coordinates (N,H,W)."""
    r = r[:, None, None]
    rad = torch.sqrt(u * u + v * v)
    d_circle = rad - r
    d_square = torch.maximum(u.abs(), v.abs()) - 0.8 * r
    # equilateral triangle: intersection of three half-planes
    k = math.sqrt(3.0)
    d_tri = torch.maximum(torch.maximum(-v - 0.5 * r, (k * u + v) / 2 - 0.5 * r), (-k * u + v) / 2 - 0.5 * r)
    d_tri = d_tri * 1.15
    d_ring = (rad - 0.72 * r).abs() - 0.24 * r
    w = 0.3 * r
    d_cross = torch.minimum(torch.maximum(u.abs() - r, v.abs() - w), torch.maximum(u.abs() - w, v.abs() - r))
    stacked = torch.stack([d_circle, d_square, d_tri, d_ring, d_cross], 1)
    return stacked.gather(1, kind[:, None, None, None].expand(-1, 1, *u.shape[1:])).squeeze(1)


def random_hflip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image of a batch (B, C, H, W) mirrored left-right with probability 1/2: the augmentation of
    the kit's small classifiers (the FID network, the distillation teacher)."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(flip[:, None, None, None].to(images.device), images.flip(-1), images)


def generate_shapes(labels: torch.Tensor, img_size: int = 32, generator: torch.Generator | None = None,
                    radius: tuple[float, float] = SHAPE_RADII["shapes"]) -> torch.Tensor:
    """Render one image per label as uint8 (N, 3, H, W). Class = colour_family * 5 + shape; each
    shape's radius is drawn uniformly from ``radius`` (low, high), in half-widths of the image."""
    n = labels.shape[0]
    g = generator
    rand = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    coords = (torch.arange(img_size, dtype=torch.float32) + 0.5) / img_size * 2 - 1
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    xx, yy = xx.expand(n, -1, -1), yy.expand(n, -1, -1)

    # background: a two-colour gradient along a random direction, low-frequency noise, faint stripes
    bg_h = rand(n)
    c0 = _hsv_to_rgb(bg_h, 0.15 + 0.35 * rand(n), 0.2 + 0.5 * rand(n))
    c1 = _hsv_to_rgb(bg_h + 0.25 * (rand(n) - 0.5), 0.1 + 0.3 * rand(n), 0.3 + 0.5 * rand(n))
    ang = rand(n) * 2 * math.pi
    ramp = ((xx * torch.cos(ang)[:, None, None] + yy * torch.sin(ang)[:, None, None]) + 1.5) / 3.0
    bg = c0[:, :, None, None] + (c1 - c0)[:, :, None, None] * ramp[:, None]
    low = torch.nn.functional.interpolate(rand(n, 1, 4, 4) - 0.5, size=(img_size, img_size), mode="bicubic",
                                          align_corners=False)
    bg = bg + 0.12 * low
    s_freq = 2 + 6 * rand(n)
    s_ang = rand(n) * math.pi
    s_amp = 0.05 * (rand(n) < 0.5).float() * rand(n)
    stripes = torch.sin(math.pi * s_freq[:, None, None] * (xx * torch.cos(s_ang)[:, None, None]
                                                           + yy * torch.sin(s_ang)[:, None, None]))
    bg = bg + (s_amp[:, None, None] * stripes)[:, None]

    # the shape: class -> (colour family, shape kind); random centre, size, rotation, colour
    family = labels // len(SHAPES)
    kind = labels % len(SHAPES)
    r_low, r_high = radius
    radius = r_low + (r_high - r_low) * rand(n)
    cx = (rand(n) * 2 - 1) * (0.95 - radius) * 0.8
    cy = (rand(n) * 2 - 1) * (0.95 - radius) * 0.8
    rot = rand(n) * 2 * math.pi
    dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
    cos, sin = torch.cos(rot)[:, None, None], torch.sin(rot)[:, None, None]
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    dist = _shape_distance(kind, u, v, radius)
    alpha = (0.5 - dist * img_size / 2).clamp(0, 1)[:, None]  # ~1 pixel anti-aliased edge
    warm_h = -0.06 + 0.2 * rand(n)  # red .. orange .. yellow
    cool_h = 0.45 + 0.25 * rand(n)  # cyan .. blue
    hue = torch.where(family == 0, warm_h, cool_h)
    fg = _hsv_to_rgb(hue, 0.65 + 0.35 * rand(n), 0.75 + 0.25 * rand(n))
    shade = 1.0 - 0.18 * (dy / radius[:, None, None]).clamp(-1, 1)  # soft top light
    fg = fg[:, :, None, None] * shade[:, None]
    img = alpha * fg + (1 - alpha) * bg
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


class ShapesDataset(Dataset):
    """The embedded class-conditional dataset (10 classes, balanced, deterministic from ``seed``).

    ``split="val"`` draws from a different seed stream, so held-out images never repeat training
    images. ``variant`` picks the shape sizes (``SHAPE_RADII``: ``"shapes"`` or ``"shapes-large"``).
    The whole set is generated at construction (thousands of images per second).
    """

    num_classes = len(SHAPES_CLASSES)
    classes = SHAPES_CLASSES

    def __init__(self, num: int = 20000, img_size: int = 32, seed: int = 0, split: str = "train",
                 hflip: bool = False, chunk: int = 2048, variant: str = "shapes"):
        if not isinstance(num, int) or num < 1:
            raise DataError(f"num={num!r} must be a positive int")
        if img_size not in (16, 32, 64, 128, 256, 512):
            raise DataError(f"img_size={img_size!r} is not supported; allowed 16, 32, 64, 128, 256, 512")
        if split not in ("train", "val"):
            raise DataError(f"split={split!r} is not known; allowed 'train', 'val'")
        if variant not in SHAPE_RADII:
            raise DataError(f"variant={variant!r} is not known; allowed {', '.join(map(repr, SHAPE_RADII))}")
        check_dataset_size(variant, num, img_size, "num", DataError)
        self.img_size, self.seed, self.split, self.hflip, self.variant = img_size, seed, split, hflip, variant
        g = torch.Generator().manual_seed(seed + (_VAL_SEED_OFFSET if split == "val" else 0))
        labels = torch.arange(num) % self.num_classes
        labels = labels[torch.randperm(num, generator=g)]
        chunks = [generate_shapes(labels[i:i + chunk], img_size, g, SHAPE_RADII[variant])
                  for i in range(0, num, chunk)]
        self.images_uint8 = torch.cat(chunks)
        self.labels = labels.long()

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def images(self) -> torch.Tensor:
        """All images as float in [0, 1], shape (N, 3, H, W)."""
        return self.images_uint8.float() / 255.0

    def __getitem__(self, i):
        img = self.images_uint8[i].float() / 255.0
        if self.hflip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, int(self.labels[i])


def shapes_variant(dataset: str) -> str:
    """The embedded shapes data set that stands for ``dataset``: itself when it is one, else ``shapes``."""
    return dataset if dataset in SHAPE_RADII else "shapes"


def shapes_like(data_cfg: DataConfig, num: int, split: str = "val") -> ShapesDataset:
    """``num`` embedded shapes of ``data_cfg``'s size, seed and shapes variant (:func:`shapes_variant`):
    the examples the notebooks show and measure."""
    return ShapesDataset(num, data_cfg.img_size, seed=data_cfg.seed, split=split,
                         variant=shapes_variant(data_cfg.dataset))


# --------------------------------------------------------------------------------------------
# Real photographs shipped with scikit-image
# --------------------------------------------------------------------------------------------

def _load_photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return img[..., :3]


def sample_photos(size: int = 64, names=PHOTO_NAMES) -> torch.Tensor:
    """The scikit-image sample photos, center-cropped and resized: (N, 3, size, size) in [0, 1]."""
    if not isinstance(size, int) or size < 8:
        raise DataError(f"size={size!r} must be an int >= 8")
    out = []
    for name in names:
        if name not in PHOTO_NAMES:
            raise DataError(f"unknown photo {name!r}; allowed: {', '.join(PHOTO_NAMES)}")
        out.append(_to_tensor(center_crop_arr(Image.fromarray(_load_photo(name)), size)))
    return torch.stack(out)


class PhotoCropDataset(Dataset):
    """Random square crops (random scale and position) of the sample photos; label = photo index."""

    def __init__(self, num: int = 2000, img_size: int = 32, seed: int = 0, split: str = "train",
                 hflip: bool = False):
        if not isinstance(num, int) or isinstance(num, bool) or num < 1:
            raise DataError(f"num={num!r} must be a positive int")
        if split not in ("train", "val"):
            raise DataError(f"split={split!r} is not known; allowed 'train', 'val'")
        check_dataset_size("photos", num, img_size, "num", DataError)
        self.photos = [torch.from_numpy(_load_photo(n)).permute(2, 0, 1).float() / 255.0 for n in PHOTO_NAMES]
        self.num_classes = len(self.photos)
        self.classes = PHOTO_NAMES
        g = torch.Generator().manual_seed(seed + (_VAL_SEED_OFFSET if split == "val" else 0))
        self.num, self.img_size, self.hflip = num, img_size, hflip
        self.labels = torch.randint(0, len(self.photos), (num,), generator=g)
        self.boxes = torch.rand(num, 3, generator=g)  # scale, x, y

    def __len__(self):
        return self.num

    def __getitem__(self, i):
        label = int(self.labels[i])
        photo = self.photos[label]
        h, w = photo.shape[1:]
        scale, fx, fy = self.boxes[i].tolist()
        side = int(min(h, w) * (0.15 + 0.6 * scale))
        y0, x0 = int(fy * (h - side)), int(fx * (w - side))
        crop = photo[:, y0:y0 + side, x0:x0 + side][None]
        img = torch.nn.functional.interpolate(crop, size=(self.img_size,) * 2, mode="bilinear",
                                              antialias=True, align_corners=False)[0].clamp(0, 1)
        if self.hflip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, label


# --------------------------------------------------------------------------------------------
# torchvision datasets and ImageFolder (ImageNet layout)
# --------------------------------------------------------------------------------------------

def center_crop_arr(pil_image: Image.Image, image_size: int) -> np.ndarray:
    """The ADM/paper center crop (official ``utils/loader.py``, ``center_crop_arr``): BOX halving
    while the short side is at least twice the target, BICUBIC resize of the short side to
    ``image_size``, then a center crop."""
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image.convert("RGB"))
    cy, cx = (arr.shape[0] - image_size) // 2, (arr.shape[1] - image_size) // 2
    return arr[cy:cy + image_size, cx:cx + image_size]


_EXIF_ORIENTATION = 0x0112


def to_rgb(im: Image.Image) -> Image.Image:
    """A PIL image as the 8-bit RGB picture it shows: EXIF orientation applied, 16-bit grey ("I;16",
    "I") scaled from [0, 65535], transparency composited onto white. Plain RGB/L/CMYK images take the
    same path as ``im.convert("RGB")``."""
    if im.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        im = ImageOps.exif_transpose(im)
    if im.mode.startswith("I;16") or im.mode == "I":  # PNG 16-bit grey: full scale is 65535
        arr = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(np.round(arr * (255.0 / 65535.0)), 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return im.convert("RGB")


def read_image(path: str | Path, img_size: int) -> torch.Tensor:
    """An image file as a (3, img_size, img_size) float tensor in [0, 1]: :func:`to_rgb`, then the
    paper's center crop (:func:`center_crop_arr`)."""
    with Image.open(path) as im:
        return _to_tensor(center_crop_arr(to_rgb(im), img_size))


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 255.0


class ImageFolderDataset(Dataset):
    """ImageNet layout: ``root/<class>/<image>``, with the paper's center crop and optional flip.

    ``on_bad_image="skip"`` replaces an unreadable file by the next readable one and counts it in
    ``skipped`` (a warning names the first ones); ``"error"`` raises naming the file.
    """

    def __init__(self, root: str | Path, img_size: int = 256, hflip: bool = False, on_bad_image: str = "skip"):
        root = Path(root)
        if on_bad_image not in ("skip", "error"):
            raise DataError(f"on_bad_image={on_bad_image!r} is not known; allowed 'skip', 'error'")
        if not root.is_dir():
            raise DataError(f"data directory {str(root)!r} does not exist; put an ImageNet-layout folder there "
                            "(root/<class>/<images>) or pass data_dir=... (see data/README.md)")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        if not classes:
            raise DataError(f"data directory {str(root)!r} has no class sub-folders (expected root/<class>/<images>)")
        self.classes = tuple(classes)
        self.num_classes = len(classes)
        self.samples: list[tuple[str, int]] = []
        for idx, c in enumerate(classes):
            for p in sorted((root / c).rglob("*")):
                if p.suffix.lower() in IMG_EXTENSIONS and p.is_file():
                    self.samples.append((str(p), idx))
        if not self.samples:
            raise DataError(f"data directory {str(root)!r} has class folders but no images "
                            f"(extensions {', '.join(IMG_EXTENSIONS)})")
        self.img_size, self.hflip, self.on_bad_image = img_size, hflip, on_bad_image
        self.skipped = 0
        self.labels = torch.tensor([s[1] for s in self.samples])

    def __len__(self):
        return len(self.samples)

    def _read(self, path: str) -> torch.Tensor:
        return read_image(path, self.img_size)

    def __getitem__(self, i):
        for attempt in range(len(self.samples)):
            path, label = self.samples[(i + attempt) % len(self.samples)]
            try:
                img = self._read(path)
                break
            except Exception as e:  # unreadable or truncated file
                if self.on_bad_image == "error":
                    raise DataError(f"cannot read image {path!r}: {e} (fix or remove the file, or use "
                                    "on_bad_image='skip' to skip unreadable files with a count)") from e
                self.skipped += 1
                if self.skipped <= 3:
                    warnings.warn(f"skipping unreadable image {path!r} ({type(e).__name__}); "
                                  "use on_bad_image='error' to stop instead", stacklevel=2)
        else:
            raise DataError("no readable image in the dataset")
        if self.hflip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, label


class _TorchvisionWrapper(Dataset):
    """Resizes a torchvision dataset to ``img_size`` RGB tensors in [0, 1]."""

    def __init__(self, ds, img_size: int, hflip: bool):
        self.ds, self.img_size, self.hflip = ds, img_size, hflip
        self.classes = tuple(getattr(ds, "classes", ()))
        self.num_classes = len(self.classes) or 10
        self.labels = torch.as_tensor(getattr(ds, "targets", []))

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        img, label = self.ds[i]
        img = img.convert("RGB")
        if img.size != (self.img_size, self.img_size):
            img = img.resize((self.img_size, self.img_size), resample=Image.BICUBIC)
        t = _to_tensor(np.array(img))
        if self.hflip and torch.rand(()) < 0.5:
            t = t.flip(-1)
        return t, int(label)


def _torchvision_dataset(name: str, root: Path, train: bool, img_size: int, hflip: bool):
    import torchvision

    cls = {"cifar10": torchvision.datasets.CIFAR10, "mnist": torchvision.datasets.MNIST}[name]
    try:
        ds = cls(str(root), train=train, download=False)
    except RuntimeError as e:
        raise DataError(
            f"{name} is not under {str(root)!r} and this kit never downloads implicitly. With internet, run: "
            f"python -c \"import torchvision; torchvision.datasets.{cls.__name__}('{root}', download=True)\" "
            f"({e})"
        ) from e
    return _TorchvisionWrapper(ds, img_size, hflip)


def default_data_root() -> Path:
    """``data/`` at the repository root when run from a checkout, else ``./data``."""
    return repo_root() / "data"


def make_dataset(data_cfg: DataConfig, split: str = "train", on_bad_image: str = "skip") -> Dataset:
    """Build the dataset ``data_cfg.dataset`` for ``split`` ("train" or "val").

    ``on_bad_image`` (image folders): ``"skip"`` an unreadable file (counted in ``ds.skipped``,
    the first ones named in a warning) or raise on it (``"error"``).
    """
    if on_bad_image not in ("skip", "error"):
        raise DataError(f"on_bad_image={on_bad_image!r} is not known; allowed 'skip', 'error'")
    if split not in ("train", "val"):
        raise DataError(f"split={split!r} is not known; allowed 'train', 'val'")
    train = split == "train"
    hflip = data_cfg.hflip and train
    if data_cfg.dataset in SHAPES_DATASETS:
        n = data_cfg.num_train if train else max(data_cfg.num_val, 1)
        return ShapesDataset(n, data_cfg.img_size, data_cfg.seed, split, hflip, variant=data_cfg.dataset)
    if data_cfg.dataset == "photos":
        n = data_cfg.num_train if train else max(data_cfg.num_val, 1)
        return PhotoCropDataset(n, data_cfg.img_size, data_cfg.seed, split, hflip)
    root = Path(data_cfg.data_dir) if data_cfg.data_dir else default_data_root() / data_cfg.dataset
    if data_cfg.dataset in ("cifar10", "mnist"):
        return _torchvision_dataset(data_cfg.dataset, root, train, data_cfg.img_size, hflip)
    if data_cfg.dataset == "imagefolder":
        if (root / split).is_dir():
            root = root / split
        elif split == "val" and (root / "train").is_dir():
            raise DataError(f"no validation split: {str(root / 'val')!r} does not exist")
        return ImageFolderDataset(root, data_cfg.img_size, hflip, on_bad_image=on_bad_image)
    raise DataError(f"unknown dataset {data_cfg.dataset!r}")


def make_loader(data_cfg: DataConfig, split: str = "train", batch_size: int = 64, shuffle: bool | None = None,
                drop_last: bool | None = None, distributed: bool = False, seed: int = 0,
                dataset: Dataset | None = None) -> DataLoader:
    """One loader for every dataset: shuffled, drop_last and flipped for ``train``; workers,
    pinned memory and persistent workers when ``data_cfg.num_workers > 0``; a ``DistributedSampler``
    under torchrun (``distributed=True``). Shuffling is seeded, so an epoch's order is reproducible."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size={batch_size!r} must be a positive int")
    ds = dataset if dataset is not None else make_dataset(data_cfg, split)
    train = split == "train"
    shuffle = train if shuffle is None else shuffle
    drop_last = train if drop_last is None else drop_last
    if drop_last and len(ds) < batch_size:
        raise DataError(f"batch_size={batch_size} is larger than the {split} set ({len(ds)} images); "
                        "lower batch_size or use more data")
    sampler = None
    generator = torch.Generator().manual_seed(seed)
    if distributed:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(ds, shuffle=shuffle, seed=seed, drop_last=drop_last)
        shuffle = False
    workers = data_cfg.num_workers
    return DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, sampler=sampler, drop_last=drop_last,
        num_workers=workers, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
        generator=generator,
    )
