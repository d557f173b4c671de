"""The frozen teacher of semantic distillation (``distill.py`` is the loss; notebook 12 teaches both).

VA-VAE aligns its latents with the patch features of DINOv2, a ViT trained without labels on
142M images. Two kinds of teacher:

- ``shapes-teacher``, the offline default for the embedded data: a small ConvNet (widths 32, 64,
  96; its last map has a quarter of the image's side) trained once to classify the tokenizer's
  training images (about a minute on a CPU), then cached in ``<cache>/teacher/``. It is the
  semantic encoder a laptop can afford. It is *not* the FID network (``shapes-cnn``: another
  architecture, widths 8, 16, 32, trained on images of its own data seed), which also scores the
  class accuracy of samples, so no metric looks at the samples through the teacher's eyes.
- any timm model name with a weights file (``distill_teacher_path``), for example DINOv2 ViT-L
  (``vit_large_patch14_dinov2.lvd142m``, as VA-VAE). Images are resized to the model's input
  size and normalised with its mean and std; the features are its final patch tokens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from .assets import MissingWeightsError
from .assets import cache_dir as default_cache_dir
from .config import DataConfig
from .data import make_dataset, random_hflip
from .io import load_state_dict_file, load_tensors, save_tensors_atomic

__all__ = ["SHAPES_TEACHER", "Teacher", "TeacherSettings", "train_shapes_teacher", "get_teacher", "load_timm_teacher"]

SHAPES_TEACHER = "shapes-teacher"
_META_KEY = "ldetok_teacher"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Teacher(nn.Module):
    """A frozen vision encoder as a feature map: images ``(B, 3, H, W)`` in [0, 1] → ``(B, dim, h, w)``
    (its patch tokens after the last block and norm). Stays in eval mode and never trains."""

    def __init__(self, net: nn.Module, name: str, input_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 info: dict | None = None):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.name, self.input_size, self.info = name, int(input_size), dict(info or {})
        self.dim = int(net.embed_dim)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # frozen: dropout and the like stay off

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images has shape {tuple(images.shape)}; allowed (B, 3, H, W) in [0, 1]")
        x = images.to(self.mean.dtype)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bicubic", align_corners=False)
        features = self.net.forward_features((x - self.mean) / self.std)
        if features.ndim == 4:  # a convolutional map
            return features.float()
        tokens = features[:, self.net.num_prefix_tokens:]  # a ViT: drop the class / register tokens
        grid = math.isqrt(tokens.shape[1])
        return tokens.transpose(1, 2).unflatten(2, (grid, grid)).float()


# ============================================================================================
# shapes-teacher: the offline teacher, trained once on the embedded data
# ============================================================================================


class ShapesTeacherNet(nn.Module):
    """The offline teacher: five 3×3 conv layers (GroupNorm, SiLU; stride 2 twice) and a linear
    classifier on the pooled map. ``forward_features`` is the last map, ``(B, width, H/4, W/4)``."""

    def __init__(self, widths: tuple[int, ...], num_classes: int):
        super().__init__()
        w1, w2, w3 = widths

        def conv(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())

        self.features = nn.Sequential(conv(3, w1, 1), conv(w1, w2, 2), conv(w2, w2, 1), conv(w2, w3, 2),
                                      conv(w3, w3, 1))
        self.head = nn.Linear(w3, num_classes)
        self.embed_dim = w3

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@dataclasses.dataclass(frozen=True)
class TeacherSettings:
    """How the shapes teacher is trained; with the data settings, ``key()`` names its cache file."""

    widths: tuple[int, ...] = (32, 64, 96)
    steps: int = 400
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 0

    def key(self, data: DataConfig) -> str:
        blob = json.dumps([dataclasses.asdict(self), data.replace(hflip=False, num_workers=0).to_dict()],
                          sort_keys=True).encode()
        return f"{SHAPES_TEACHER}_{data.dataset}_{data.img_size}px_{hashlib.sha256(blob).hexdigest()[:10]}"


def train_shapes_teacher(data: DataConfig, settings: TeacherSettings = TeacherSettings(),
                         log: Callable | None = print) -> Teacher:
    """Train ``shapes-teacher`` to classify ``data``'s training images (random flips; AdamW, one-cycle
    schedule; deterministic from ``settings.seed``, the global RNG untouched). Held-out accuracy in
    ``teacher.info``."""
    t0 = time.time()
    ds, val = make_dataset(data.replace(hflip=False), "train"), None
    if data.num_val:
        val = make_dataset(data.replace(hflip=False), "val")
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    labels = torch.tensor([int(ds[i][1]) for i in range(len(ds))])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        net = ShapesTeacherNet(settings.widths, int(labels.max()) + 1)
    g = torch.Generator().manual_seed(settings.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, settings.lr, total_steps=settings.steps)
    teacher = Teacher(net, SHAPES_TEACHER, data.img_size, mean=(0.5,) * 3, std=(0.5,) * 3)
    net.train().requires_grad_(True)
    for step in range(settings.steps):
        idx = torch.randint(len(images), (settings.batch_size,), generator=g)
        loss = F.cross_entropy(net((random_hflip(images[idx], g) - 0.5) / 0.5), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log and (step + 1) % max(1, settings.steps // 4) == 0:
            log(f"[{SHAPES_TEACHER}] step {step + 1}/{settings.steps} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
    net.eval().requires_grad_(False)
    acc = None
    if val is not None:
        with torch.no_grad():
            vx = torch.stack([val[i][0] for i in range(len(val))])
            vy = torch.tensor([int(val[i][1]) for i in range(len(val))])
            acc = float((torch.cat([net((c - 0.5) / 0.5).argmax(1) for c in vx.split(500)]) == vy).float().mean())
    teacher.info = {"settings": dataclasses.asdict(settings), "data": data.to_dict(), "val_accuracy": acc,
                    "num_classes": int(labels.max()) + 1, "train_seconds": round(time.time() - t0, 1)}
    if log:
        log(f"[{SHAPES_TEACHER}] held-out accuracy {acc if acc is None else round(acc, 4)}, "
            f"trained in {teacher.info['train_seconds']:.0f}s")
    return teacher


def _save(teacher: Teacher, path: Path) -> Path:
    state = {k: v.detach().contiguous().cpu() for k, v in teacher.net.state_dict().items()}
    return save_tensors_atomic(path, state, metadata={_META_KEY: json.dumps(teacher.info)})


def _load(path: Path) -> Teacher:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if _META_KEY not in meta:
        raise ValueError(f"{str(path)!r} is not a {SHAPES_TEACHER} teacher file (no {_META_KEY} metadata)")
    info = json.loads(meta[_META_KEY])
    s = TeacherSettings(**{**info["settings"], "widths": tuple(info["settings"]["widths"])})
    img_size = int(info["data"]["img_size"])
    net = ShapesTeacherNet(s.widths, int(info["num_classes"]))
    net.load_state_dict(load_tensors(path))
    return Teacher(net, SHAPES_TEACHER, img_size, mean=(0.5,) * 3, std=(0.5,) * 3, info=info)


# ============================================================================================
# any timm encoder from a weights file (full scale: DINOv2)
# ============================================================================================


def load_timm_teacher(name: str, path: str | Path) -> Teacher:
    """timm model ``name`` (a ViT with patch tokens, e.g. ``vit_large_patch14_dinov2.lvd142m``) with
    the weights in ``path`` (``.safetensors`` or a tensor-only ``.pth``, loaded safely): a teacher
    at the model's own input size. ``MissingWeightsError`` when the file is missing; ``ValueError``
    when the name is unknown to timm or the weights belong to another model."""
    if not timm.is_model(name):
        raise ValueError(f"distill_teacher={name!r} is not a timm model; allowed: {SHAPES_TEACHER!r} or a timm "
                         "model name such as 'vit_large_patch14_dinov2.lvd142m'")
    if not path:
        raise MissingWeightsError(f"the teacher {name!r} needs its weights: set tokenizer.distill_teacher_path to a "
                                  ".safetensors or .pth file (this kit never downloads weights)")
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"teacher weights {str(path)!r} do not exist (tokenizer.distill_teacher_path)")
    net = timm.create_model(name, pretrained=False, num_classes=0)
    if not hasattr(net, "forward_features") or not hasattr(net, "num_prefix_tokens"):
        raise ValueError(f"timm model {name!r} has no patch tokens; allowed a ViT-style model (e.g. DINOv2)")
    state = load_state_dict_file(path)
    state = state.get("model", state) if isinstance(state, dict) else state
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that differ: another size of model
        first = (str(e).splitlines()[1:] or [str(e)])[0].strip()
        raise ValueError(f"{str(path)!r} does not hold the weights of {name!r}: {first} ...") from None
    missing = [k for k in missing if not k.startswith("head")]
    if missing or unexpected:
        raise ValueError(f"{str(path)!r} does not hold the weights of {name!r}: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    cfg = net.pretrained_cfg or {}
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    return Teacher(net, name, size, mean=cfg.get("mean", IMAGENET_MEAN), std=cfg.get("std", IMAGENET_STD),
                   info={"weights": str(path)})


def get_teacher(name: str, data: DataConfig, path: str | Path = "", steps: int | None = None,
                cache_dir: str | Path | None = None, train: bool = True, log: Callable | None = print) -> Teacher:
    """The teacher ``name``: ``shapes-teacher`` (trained on ``data`` with ``steps`` steps, default
    400, once, then loaded from ``<cache_dir>/teacher/``; ``train=False`` raises
    ``MissingWeightsError`` instead of training) or a timm model with weights ``path``."""
    if name != SHAPES_TEACHER:
        return load_timm_teacher(name, path)
    if data.dataset == "imagefolder":
        raise ValueError(f"distill_teacher={SHAPES_TEACHER!r} is the teacher of the embedded datasets (it trains on "
                         "all images in memory); for an image folder such as ImageNet set tokenizer.distill_teacher "
                         "to a timm model (e.g. vit_large_patch14_dinov2.lvd142m) and distill_teacher_path")
    s = TeacherSettings() if steps is None else TeacherSettings(steps=int(steps))
    file = Path(cache_dir if cache_dir else default_cache_dir()) / "teacher" / f"{s.key(data)}.safetensors"
    if file.is_file():
        return _load(file)
    if not train:
        raise MissingWeightsError(f"no {SHAPES_TEACHER} teacher at {str(file)!r}; get_teacher(..., train=True) "
                                  "trains it once (about a minute on a CPU)")
    if log:
        log(f"[{SHAPES_TEACHER}] training the distillation teacher once -> {file}")
    teacher = train_shapes_teacher(data, s, log=log)
    _save(teacher, file)
    return teacher
