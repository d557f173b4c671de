"""The feature networks behind every FID: the offline shapes network and Inception-v3.

- ``"shapes-cnn"``: a small CNN (:class:`ShapesCNN`) trained once on the embedded dataset's class
  labels and cached (``<cache>/fid/<key>.safetensors``), registered with torch-fidelity as
  ``ldetok-shapes-cnn`` (:class:`ShapesFeatureExtractor`), so rFID / gFID mean something with no
  download. Its logits also give the class accuracy of generated samples. Its FID features pool
  several depths: a single late layer is very sensitive to pixel noise and nearly blind to blur.
- ``"inception"``: torch-fidelity's ``inception-v3-compat`` (the paper's numbers), whose weights
  are found by ``ldetok_lite.assets`` and checked before torch-fidelity reads them.

:func:`get_feature_net` resolves either into a :class:`FeatureNet`. Taught in notebook 10.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_fidelity
from safetensors import safe_open
from safetensors.torch import load_file
from torch_fidelity import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from ..assets import MissingWeightsError, verified_weights
from ..assets import cache_dir as default_cache_dir
from ..config import SHAPES_DATASETS
from ..data import ShapesDataset, random_hflip, shapes_variant
from ..device import pick_device
from ..io import save_tensors_atomic
from .sources import check_count

SHAPES_EXTRACTOR = "ldetok-shapes-cnn"  # the torch-fidelity registry name
FEATURE_NETS = ("shapes-cnn", "inception")
INCEPTION_EXTRACTOR = "inception-v3-compat"


# ============================================================================================
# The offline feature network for the embedded shapes dataset
# ============================================================================================

SHAPES_FEATURES = ("stage1", "stage2", "stage3", "penultimate", "multi", "logits")


class ShapesCNN(nn.Module):
    """Three conv stages (conv-BN-ReLU ×2, stride 2 between stages) and an MLP head over 10 classes.

    FID features (``"multi"``, the default): the global average pool of every stage plus the
    penultimate layer, each block scaled by ``block_scale`` (set after training) to the same total
    variance on training images. A single penultimate layer is very sensitive to pixel noise and
    nearly blind to blur; early stages see texture and sharpness, late ones shape and class, so
    pooling all of them balances the two.
    """

    def __init__(self, work_size: int = 32, widths: tuple[int, ...] = (8, 16, 32), penultimate: int = 32,
                 num_classes: int = 10):
        super().__init__()
        if len(widths) != 3:
            raise ValueError(f"widths={widths!r} must name 3 stage widths")
        self.work_size = work_size
        chans = (3, *widths)
        self.stages = nn.ModuleList()
        for i in range(3):
            self.stages.append(nn.Sequential(
                nn.Conv2d(chans[i], chans[i + 1], 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True),
                nn.Conv2d(chans[i + 1], chans[i + 1], 3, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True),
            ))
        self.fc1 = nn.Linear(widths[-1], penultimate)
        self.fc2 = nn.Linear(penultimate, num_classes)
        self.register_buffer("block_scale", torch.ones(4))

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or [0, 1] float) images -> normalised float at ``work_size`` (antialiased resize)."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[-1] != self.work_size or x.shape[-2] != self.work_size:
            x = F.interpolate(x, size=(self.work_size, self.work_size), mode="bilinear", antialias=True,
                              align_corners=False)
        return (x - 0.5) / 0.5

    def blocks(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for i, stage in enumerate(self.stages):
            x = stage(x)
            out[f"stage{i + 1}"] = x.mean(dim=(2, 3))
        out["penultimate"] = F.relu(self.fc1(out["stage3"]))
        out["logits"] = self.fc2(out["penultimate"])
        return out

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every named feature (SHAPES_FEATURES) of uint8 or [0, 1] images."""
        out = self.blocks(self.preprocess(images))
        parts = [out[k] * self.block_scale[j] for j, k in enumerate(("stage1", "stage2", "stage3", "penultimate"))]
        out["multi"] = torch.cat(parts, dim=1)
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (B, 10)."""
        return self.blocks(self.preprocess(images))["logits"]


@dataclass(frozen=True)
class ExtractorSettings:
    """How the shapes feature network is trained; ``key()`` names its cache file."""

    img_size: int = 32
    seed: int = 0
    dataset: str = "shapes"  # which embedded shapes data it learns: shapes | shapes-large
    widths: tuple[int, ...] = (8, 16, 32)
    penultimate: int = 32
    num_train: int = 10000
    num_val: int = 1000
    steps: int = 400
    batch_size: int = 64
    lr: float = 5e-3
    weight_decay: float = 1e-4

    @property
    def work_size(self) -> int:
        return min(self.img_size, 64)

    def key(self) -> str:
        settings = dataclasses.asdict(self)
        if self.dataset == "shapes":  # the original data keeps the names its cached networks had
            del settings["dataset"]
        blob = json.dumps(settings, sort_keys=True).encode()
        prefix = self.dataset.replace("-", "_") + "_cnn"
        return f"{prefix}_{self.img_size}px_seed{self.seed}_{hashlib.sha256(blob).hexdigest()[:10]}"


EXTRACTOR_PRESETS = {
    "smoke": ExtractorSettings(num_train=600, num_val=200, steps=30, batch_size=32),
    "tiny": ExtractorSettings(),
}
#: how many times a preset's steps each shapes data set's network trains: large shapes are slower to
#: tell apart (cool circles from cool squares: 95.5 % of held-out images right after 400 steps,
#: 99.9 % after 800; the original shapes 99.8 % after 400)
STEP_FACTOR = {"shapes": 1, "shapes-large": 2}


def extractor_settings(preset: str | ExtractorSettings = "tiny", **overrides) -> ExtractorSettings:
    """Settings from a preset name (smoke | tiny) with overrides such as ``img_size=64, seed=1``."""
    if isinstance(preset, ExtractorSettings):
        base = preset
    elif preset in EXTRACTOR_PRESETS:
        base = EXTRACTOR_PRESETS[preset]
    else:
        raise ValueError(f"extractor preset {preset!r} is not known; allowed: {', '.join(EXTRACTOR_PRESETS)}")
    names = {f.name for f in dataclasses.fields(ExtractorSettings)}
    for k in overrides:
        if k not in names:
            raise ValueError(f"unknown extractor setting {k!r}; allowed: {', '.join(sorted(names))}")
    s = dataclasses.replace(base, **overrides)
    if s.img_size not in (16, 32, 64, 128, 256, 512):
        raise ValueError(f"img_size={s.img_size!r} is not supported; allowed 16, 32, 64, 128, 256, 512")
    check_count(s.seed, "seed", lo=0)
    if s.dataset not in SHAPES_DATASETS:
        raise ValueError(f"dataset={s.dataset!r} is not an embedded shapes data set; allowed: "
                         f"{', '.join(SHAPES_DATASETS)}")
    if isinstance(preset, str) and "steps" not in overrides:
        s = dataclasses.replace(s, steps=base.steps * STEP_FACTOR[s.dataset])
    return s


def _shapes_data(s: ExtractorSettings, split: str, num: int):
    # a data seed of its own, so the metric network never saw the exact images it later scores
    return ShapesDataset(num, img_size=s.img_size, seed=10_000 + s.seed, split=split, variant=s.dataset)


@torch.no_grad()
def _accuracy(model: ShapesCNN, images_u8: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    model.eval()
    pred = torch.cat([model(images_u8[i:i + batch_size]).argmax(1) for i in range(0, len(images_u8), batch_size)])
    return float((pred == labels).float().mean())


def train_shapes_extractor(settings: ExtractorSettings | str = "tiny", log: Callable | None = print
                           ) -> tuple[ShapesCNN, dict]:
    """Train the shapes feature network (deterministic from ``settings.seed``; the global RNG is
    left untouched) and set its per-block feature scales. Returns ``(model, info)``."""
    s = extractor_settings(settings)
    t0 = time.time()
    train = _shapes_data(s, "train", s.num_train)
    val = _shapes_data(s, "val", s.num_val)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        model = ShapesCNN(s.work_size, s.widths, s.penultimate)
    g = torch.Generator().manual_seed(s.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    warmup = max(1, s.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(k, s.steps) / s.steps)))
    images, labels = train.images_uint8, train.labels
    order = torch.randperm(len(images), generator=g)
    pos = 0
    model.train()
    for step in range(s.steps):
        if pos + s.batch_size > len(order):
            order, pos = torch.randperm(len(images), generator=g), 0
        idx = order[pos:pos + s.batch_size]
        pos += s.batch_size
        loss = F.cross_entropy(model(random_hflip(images[idx], g)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log and (step + 1) % max(1, s.steps // 4) == 0:
            log(f"[shapes-cnn] step {step + 1}/{s.steps} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
    model.eval()
    with torch.no_grad():  # per-block scales: each block gets the same total variance on training images
        feats = model.blocks(model.preprocess(images[:2000]))
        for j, k in enumerate(("stage1", "stage2", "stage3", "penultimate")):
            total_var = feats[k].var(dim=0).sum().clamp_min(1e-12)
            model.block_scale[j] = torch.sqrt(100.0 / total_var)
    info = {"settings": dataclasses.asdict(s), "val_accuracy": _accuracy(model, val.images_uint8, val.labels),
            "train_accuracy": _accuracy(model, images[:2000], labels[:2000]),
            "train_seconds": round(time.time() - t0, 2), "torch": torch.__version__}
    if log:
        log(f"[shapes-cnn] held-out accuracy {info['val_accuracy']:.4f}, trained in {info['train_seconds']:.0f}s")
    return model, info


def save_shapes_extractor(model: ShapesCNN, info: dict, path: str | Path) -> Path:
    """Write weights + info (safetensors metadata) atomically."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return save_tensors_atomic(path, state, metadata={"ldetok_shapes_cnn": json.dumps(info)})


def extractor_info(path: str | Path) -> dict:
    """The training info stored with a shapes feature network (settings, accuracy, seconds)."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"shapes feature network {str(path)!r} does not exist; build it with "
                                  "ldetok_lite.evaluation.get_shapes_extractor(...)")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "ldetok_shapes_cnn" not in meta:
        raise ValueError(f"{str(path)!r} is not a shapes feature network file (no ldetok_shapes_cnn metadata)")
    return json.loads(meta["ldetok_shapes_cnn"])


_MODEL_CACHE: dict = {}


def load_shapes_extractor(path: str | Path) -> ShapesCNN:
    """The shapes feature network stored at ``path`` (eval mode, CPU)."""
    path = Path(path)
    info = extractor_info(path)
    stamp = (str(path.resolve()), path.stat().st_mtime_ns)
    if stamp not in _MODEL_CACHE:
        s = extractor_settings(ExtractorSettings(**{**info["settings"], "widths": tuple(info["settings"]["widths"])}))
        model = ShapesCNN(s.work_size, s.widths, s.penultimate)
        model.load_state_dict(load_file(str(path)))
        _MODEL_CACHE[stamp] = model.eval().requires_grad_(False)
    return _MODEL_CACHE[stamp]


def get_shapes_extractor(img_size: int = 32, seed: int = 0, cache_dir: str | Path | None = None,
                         settings: ExtractorSettings | str = "tiny", train: bool = True,
                         log: Callable | None = print, dataset: str = "shapes") -> Path:
    """Path of the cached shapes feature network for ``img_size``/``seed``/``settings`` and the
    embedded ``dataset`` (shapes | shapes-large); trains and caches it
    (``<cache_dir>/fid/<key>.safetensors``) when missing, unless ``train=False``."""
    s = extractor_settings(settings, img_size=img_size, seed=seed, dataset=dataset)
    path = Path(cache_dir if cache_dir else default_cache_dir()) / "fid" / f"{s.key()}.safetensors"
    if path.is_file():
        return path
    if not train:
        raise MissingWeightsError(f"no shapes feature network at {str(path)!r}; call get_shapes_extractor(..., "
                                  "train=True) once (about a minute on a CPU)")
    if log:
        log(f"[shapes-cnn] training the offline FID network once -> {path}")
    model, info = train_shapes_extractor(s, log=log)
    return save_shapes_extractor(model, info, path)


class ShapesFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity wrapper of :class:`ShapesCNN` (registered as ``ldetok-shapes-cnn``).

    Needs ``feature_extractor_weights_path`` (from :func:`get_shapes_extractor`); input uint8
    (B, 3, H, W). Features: SHAPES_FEATURES; FID/KID/PRC default to ``multi``, IS to ``logits``.
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise MissingWeightsError("the shapes feature network needs feature_extractor_weights_path=; get it with "
                                      "ldetok_lite.evaluation.get_shapes_extractor(img_size, seed, cache_dir)")
        # a private copy: torch-fidelity may move it to CUDA; the loaded original stays cached on the CPU
        self.net = copy.deepcopy(load_shapes_extractor(feature_extractor_weights_path)).eval()

    @staticmethod
    def get_provided_features_list():
        return SHAPES_FEATURES

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "multi", "kid": "multi", "prc": "multi"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise ValueError(f"expected uint8 images (B, 3, H, W), got {getattr(x, 'dtype', type(x))} "
                             f"{tuple(getattr(x, 'shape', ()))}")
        feats = self.net.features(x)
        return tuple(feats[k].float() for k in self.features_list)


if SHAPES_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor(SHAPES_EXTRACTOR, ShapesFeatureExtractor)


# ============================================================================================
# Resolving a feature network
# ============================================================================================

@dataclass(frozen=True)
class FeatureNet:
    """A resolved feature network: torch-fidelity extractor name, weights file and layers.

    ``key`` identifies network and weights; it is stored in statistics files so that FIDs from
    different networks are never compared by mistake.
    """

    name: str
    extractor: str
    weights_path: str
    fid_layer: str
    isc_layer: str
    key: str

    @property
    def has_classifier(self) -> bool:
        """True when ``isc_layer`` are logits over the dataset's own classes (class accuracy)."""
        return self.name == "shapes-cnn"

    def tf_kwargs(self) -> dict:
        return {"feature_extractor": self.extractor, "feature_extractor_weights_path": self.weights_path,
                "feature_layer_fid": self.fid_layer, "feature_layer_kid": self.fid_layer,
                "feature_layer_prc": self.fid_layer, "feature_layer_isc": self.isc_layer}


def _file_digest(path: Path, limit: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(limit))
    h.update(str(path.stat().st_size).encode())
    return h.hexdigest()[:12]


def get_feature_net(name: str | FeatureNet = "shapes-cnn", *, img_size: int = 32, seed: int = 0,
                    cache_dir: str | Path | None = None, extractor: ExtractorSettings | str = "tiny",
                    inception_weights: str | Path | None = None, train: bool = True,
                    log: Callable | None = print, dataset: str = "shapes") -> FeatureNet:
    """Resolve a feature network. ``"shapes-cnn"``: the offline network for ``img_size``/``seed``
    and ``dataset`` (shapes | shapes-large; the ``shapes`` network for any other data), trained and
    cached when missing, settings ``extractor``. ``"inception"``: the paper's Inception-v3 features
    (2048-d pool, IS on logits), weights found and checked by
    ``assets.verified_weights("inception", inception_weights)``."""
    if isinstance(name, FeatureNet):
        return name
    if name == "shapes-cnn":
        path = get_shapes_extractor(img_size, seed, cache_dir, extractor, train=train, log=log,
                                    dataset=shapes_variant(dataset))
        return FeatureNet("shapes-cnn", SHAPES_EXTRACTOR, str(path), "multi", "logits",
                          f"shapes-cnn:{path.stem}:{_file_digest(path)}")
    if name == "inception":
        try:
            path = verified_weights("inception", inception_weights)
        except MissingWeightsError as e:
            raise MissingWeightsError(f"{e} Offline, use feature_net='shapes-cnn' (trained on the embedded data)."
                                      ) from None
        return FeatureNet("inception", INCEPTION_EXTRACTOR, str(path), "2048", "logits_unbiased",
                          f"inception-v3-compat:{_file_digest(path)}")
    raise ValueError(f"feature_net={name!r} is not known; allowed: {', '.join(FEATURE_NETS)}")


def preset_feature_net(preset, cache_dir: str | Path | None = None, log: Callable | None = print) -> FeatureNet:
    """The feature network a preset measures with (``preset.eval.feature_net``): at ``smoke`` the
    shapes network's quick settings, else its ``tiny`` settings (notebooks 05-10, the comparison)."""
    return get_feature_net(preset.eval.feature_net, img_size=preset.data.img_size, seed=0, cache_dir=cache_dir,
                           extractor="smoke" if preset.name == "smoke" else "tiny", log=log,
                           dataset=preset.data.dataset)


def net_for(feature_net, input1) -> FeatureNet:
    if isinstance(feature_net, FeatureNet):
        return feature_net
    size = 32
    if isinstance(input1, torch.Tensor) and input1.dim() == 4:
        size = int(input1.shape[-1])
    return get_feature_net(feature_net, img_size=size if size in (16, 32, 64, 128, 256, 512) else 32)


def device_kwargs(device) -> dict:
    return {"cuda": pick_device(device).type == "cuda"}
