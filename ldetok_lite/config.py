"""Frozen dataclasses: the schema of every model and run (the values live in ``presets.py``).

Every model and run is described by a frozen dataclass. ``config.replace(**overrides)`` returns a
new config and rejects unknown keys and wrong types with a one-line message, so a typo in a
notebook parameter or a CLI flag never passes silently. Configs round-trip through JSON and are
saved next to every checkpoint. Taught in notebooks/00_welcome and 03_train_tokenizer.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

from . import _compat
from .io import write_text_atomic


class ConfigError(ValueError):
    """A configuration value or key is not allowed. The message names it and what is allowed."""


def suggest(name: str, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        return isinstance(value, (tuple, list))
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(tp, type) and issubclass(tp, Config):
        return isinstance(value, (tp, dict))
    return isinstance(value, tp) if isinstance(tp, type) else True


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


@dataclass(frozen=True)
class Config:
    """Base class: strict ``replace``, validation, and JSON round trips.

    ``RENAMED`` maps field names of earlier releases to today's, so configs saved by them load.
    """

    RENAMED: ClassVar[dict[str, str]] = {}

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            tp = hints[f.name]
            if isinstance(tp, type) and issubclass(tp, Config) and isinstance(value, dict):
                object.__setattr__(self, f.name, tp.from_dict(value))
                continue
            if not _type_ok(value, tp):
                raise ConfigError(
                    f"{type(self).__name__}.{f.name} must be {_type_name(tp)}, got {value!r} "
                    f"({type(value).__name__})"
                )
            if tp is float and isinstance(value, int):
                object.__setattr__(self, f.name, float(value))
            if typing.get_origin(tp) is tuple and isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        self.validate()

    def validate(self) -> None:
        """Range checks; subclasses raise ``ConfigError`` naming the field."""

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def replace(self, **overrides) -> "Config":
        """A copy with ``overrides`` applied. Unknown keys and wrong types raise ``ConfigError``."""
        names = self.field_names()
        for key in overrides:
            if key not in names:
                raise ConfigError(
                    f"unknown {type(self).__name__} key {key!r}{suggest(key, names)}; "
                    f"allowed: {', '.join(names)}"
                )
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        """Build from a dict (e.g. a saved ``config.json``); renamed fields of earlier releases are
        accepted, missing fields take their defaults, unknown ones raise ``ConfigError``."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__} must be built from a JSON object, got {type(data).__name__}")
        data = {cls.RENAMED.get(k, k): v for k, v in data.items()}
        names = cls.field_names()
        unknown = [k for k in data if k not in names]
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} key {unknown[0]!r}{suggest(unknown[0], names)}; "
                              f"allowed: {', '.join(names)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps({"__class__": type(self).__name__, **self.to_dict()}, indent=2, sort_keys=False)

    def save_json(self, path: str | Path) -> Path:
        """Write the config as JSON atomically."""
        return write_text_atomic(path, self.to_json())

    @classmethod
    def load_json(cls, path: str | Path) -> "Config":
        """Read a config written by :meth:`save_json`; a file of another shape raises ``ConfigError``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read the config {str(path)!r}: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{str(path)!r} holds a JSON {type(data).__name__}, not a {cls.__name__} object")
        name = data.pop("__class__", cls.__name__)
        target = CONFIG_CLASSES.get(name)
        if target is None or not issubclass(target, cls):
            raise ConfigError(f"{str(path)!r} holds a {name!r}, not a {cls.__name__}")
        return target.from_dict(data)


def _check_range(obj, name, lo=None, hi=None, lo_open=False, hi_open=False):
    v = getattr(obj, name)
    bad = (lo is not None and (v <= lo if lo_open else v < lo)) or (
        hi is not None and (v >= hi if hi_open else v > hi)
    )
    lb = "(" if lo_open else "["
    rb = ")" if hi_open else "]"
    lo_s = "-inf" if lo is None else lo
    hi_s = "inf" if hi is None else hi
    if isinstance(v, float) and not math.isfinite(v):  # NaN passes every comparison above
        raise ConfigError(f"{type(obj).__name__}.{name}={v!r} is not a finite number; allowed {lb}{lo_s}, {hi_s}{rb}")
    if bad:
        raise ConfigError(f"{type(obj).__name__}.{name}={v!r} is out of range; allowed {lb}{lo_s}, {hi_s}{rb}")


def _check_choice(obj, name, choices):
    v = getattr(obj, name)
    if v not in choices:
        raise ConfigError(
            f"{type(obj).__name__}.{name}={v!r} is not known{suggest(str(v), choices)}; "
            f"allowed: {', '.join(map(str, choices))}"
        )


#: the embedded shapes data: ``shapes`` (shapes of every size) and ``shapes-large`` (the same
#: classes drawn larger, so that a small generator's shapes come out recognisable sooner)
SHAPES_DATASETS = ("shapes", "shapes-large")
DATASETS = (*SHAPES_DATASETS, "photos", "cifar10", "mnist", "imagefolder")

#: the most memory an in-memory dataset may take (``shapes`` keeps every image as uint8)
MAX_DATASET_BYTES = 8 * 2**30
#: the most optimisation steps a run may ask for
MAX_STEPS = 10**9
#: the most parameters a tokenizer or generator may have (80 GB in float32)
MAX_PARAMS = 20_000_000_000


def check_num_params(build, call: str, sized: dict) -> None:
    """When size options were given (``sized``: name -> value), build the model with ``build()`` on
    the meta device (nothing is allocated) and raise ``ConfigError`` past :data:`MAX_PARAMS`
    parameters and buffers, naming ``call`` and the options. Skipped inside ``with torch.device("meta"):``."""
    if not sized or torch.get_default_device().type == "meta":
        return
    with torch.device("meta"):
        model = build()
    n = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    if n > MAX_PARAMS:
        given = ", ".join(f"{k}={v!r}" for k, v in sized.items())
        raise ConfigError(f"{call} with {given} would have {n:,} parameters and buffers ({n * 4 / 2**30:,.0f} GiB "
                          f"in float32); allowed at most {MAX_PARAMS:,}: lower {', '.join(sized)}")


def dataset_bytes(dataset: str, num: int, img_size: int) -> int:
    """Bytes an embedded dataset of ``num`` images holds in memory: ``shapes`` stores every image
    (``num·3·img_size²`` uint8), ``photos`` a label and a crop box per image (20 bytes), the
    others read files on demand (0)."""
    if dataset in SHAPES_DATASETS:
        return num * 3 * img_size * img_size
    if dataset == "photos":
        return num * 20
    return 0


def check_dataset_size(dataset: str, num: int, img_size: int, name: str = "num", error=None) -> None:
    """Raise ``error`` (a ``ValueError`` class; default ``ConfigError``) when ``num`` images of
    ``dataset`` would need more than :data:`MAX_DATASET_BYTES`, before anything is allocated."""
    need = dataset_bytes(dataset, num, img_size)
    if need > MAX_DATASET_BYTES:
        most = MAX_DATASET_BYTES // max(1, dataset_bytes(dataset, 1, img_size))
        raise (error or ConfigError)(
            f"{name}={num} is too large: {num} {dataset} images of {img_size}x{img_size} would need "
            f"{need / 2**30:.1f} GiB of memory; allowed at most {most} images at this size "
            f"({MAX_DATASET_BYTES // 2**30} GiB)")


@dataclass(frozen=True)
class DataConfig(Config):
    """Which images to train on (see ``ldetok_lite.data``; notebooks/00_welcome)."""

    dataset: str = "shapes"  # shapes | shapes-large | photos | cifar10 | mnist | imagefolder
    img_size: int = 32
    num_train: int = 20000  # embedded datasets: how many training images to generate
    num_val: int = 1000  # embedded datasets: held-out images (a different seed stream)
    data_dir: str = ""  # root for torchvision / ImageFolder data ("" = ./data)
    num_workers: int = 0
    hflip: bool = True  # random horizontal flip in training (the paper's augmentation)
    seed: int = 0

    def validate(self):
        _check_choice(self, "dataset", DATASETS)
        _check_choice(self, "img_size", (16, 32, 64, 128, 256, 512))
        _check_range(self, "num_train", lo=1)
        _check_range(self, "num_val", lo=0)
        for name in ("num_train", "num_val"):
            check_dataset_size(self.dataset, getattr(self, name), self.img_size, f"DataConfig.{name}")
        _check_range(self, "num_workers", lo=0)
        _check_range(self, "seed", lo=0)


@dataclass(frozen=True)
class TokenizerConfig(Config):
    """The tokenizer and its training-time corruption and losses (paper §3; official
    ``models/detok.py`` and ``utils/losses.py``; notebooks 01-03)."""

    model: str = "detok_tiny"
    patch_size: int = 4
    token_channels: int = 8
    gamma: float = 3.0  # noise strength γ: x' = (1-τ)x + τγε (paper eq. 1)
    mask_ratio: float = 0.7  # M: the mask ratio is m = max(0, U(-0.1, M))
    use_additive_noise: bool = False  # x' = x + τγε instead of interpolation
    recon_loss: str = "mse"  # mse | l1 | l2+l1, in [0, 1] pixel space
    perceptual_weight: float = 0.0  # LPIPS-VGG (+ 0.1 ConvNeXt logits); needs weights
    perceptual_net: str = "lpips-vgg"  # lpips-vgg | lpips-convnext | lpips-random (offline tests)
    kl_weight: float = 1e-6
    gan_weight: float = 0.0  # the value in effect in the official code is 0.1 (utils/builders.py)
    gan_start_step: int = 0
    decoder_only: bool = False  # the decoder fine-tune (official README, --train_decoder_only)
    # none | plain: continue from a plain AE instead of starting from scratch (small CPU budgets;
    # notebook 10 says why). The paper: none. The plain AE is this tokenizer without corruption,
    # trained for warm_start_steps (0: the same steps) with seed warm_start_seed (-1: the same seed).
    warm_start: str = "none"
    warm_start_steps: int = 0
    warm_start_seed: int = -1
    # semantic distillation, VA-VAE style (distill.py, teacher.py; notebook 12): the weight of the
    # alignment loss (0: off), the frozen teacher (shapes-teacher: trained once on the data; or a timm
    # model name such as vit_large_patch14_dinov2.lvd142m with its weights file) and, for
    # shapes-teacher, its training steps
    distill_weight: float = 0.0
    distill_teacher: str = "shapes-teacher"
    distill_teacher_path: str = ""
    distill_teacher_steps: int = 400

    @property
    def is_plain(self) -> bool:
        """No latent noise, no masking and no distillation: a plain autoencoder."""
        return self.gamma == 0 and self.mask_ratio == 0 and self.distill_weight == 0

    def as_plain(self) -> "TokenizerConfig":
        """This tokenizer without corruption, distillation or warm start: the plain AE the variants
        start from."""
        return self.replace(gamma=0.0, mask_ratio=0.0, use_additive_noise=False, warm_start="none",
                            warm_start_steps=0, warm_start_seed=-1, distill_weight=0.0)

    def validate(self):
        _check_choice(self, "warm_start", ("none", "plain"))
        _check_range(self, "warm_start_steps", lo=0)
        _check_range(self, "warm_start_seed", lo=-1)
        _check_range(self, "patch_size", lo=1)
        _check_range(self, "token_channels", lo=1)
        _check_range(self, "gamma", lo=0.0)
        _check_range(self, "mask_ratio", lo=0.0, hi=1.0, hi_open=True)
        _check_choice(self, "recon_loss", ("mse", "l1", "l2+l1"))
        _check_choice(self, "perceptual_net", ("lpips-vgg", "lpips-convnext", "lpips-random"))
        for name in ("perceptual_weight", "kl_weight", "gan_weight", "distill_weight"):
            _check_range(self, name, lo=0.0)
        _check_range(self, "gan_start_step", lo=0)
        _check_range(self, "distill_teacher_steps", lo=1)
        if not self.distill_teacher:
            raise ConfigError("tokenizer.distill_teacher is empty; allowed: shapes-teacher or a timm model name")


@dataclass(frozen=True)
class TrainConfig(Config):
    """Optimisation settings shared by tokenizer and generator training (official
    ``main_reconstruction.py``, ``main_diffusion.py``; notebook 03)."""

    steps: int = 500
    batch_size: int = 64
    blr: float = 1e-4  # base lr; lr = blr * batch_size * grad_accum / 256 unless lr > 0
    lr: float = 0.0  # absolute lr (the generators' aligned schedule uses 2e-4)
    lr_schedule: str = "cosine"  # cosine | constant
    warmup_frac: float = 0.25  # fraction of steps with linear warmup
    min_lr: float = 0.0
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 3.0  # 0 disables clipping
    ema_decay: float = 0.999
    grad_accum: int = 1
    log_every: int = 50
    eval_every: int = 0  # 0 = only at the end
    ckpt_every: int = 0  # 0 = only at the end
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    compile: bool = False
    seed: int = 0

    def validate(self):
        _check_range(self, "steps", lo=1, hi=MAX_STEPS)
        _check_range(self, "batch_size", lo=1)
        _check_range(self, "blr", lo=0.0)
        _check_range(self, "lr", lo=0.0)
        _check_choice(self, "lr_schedule", ("cosine", "constant"))
        _check_range(self, "warmup_frac", lo=0.0, hi=1.0)
        _check_range(self, "min_lr", lo=0.0)
        _check_range(self, "weight_decay", lo=0.0)
        _check_range(self, "beta1", lo=0.0, hi=1.0, hi_open=True)
        _check_range(self, "beta2", lo=0.0, hi=1.0, hi_open=True)
        _check_range(self, "grad_clip", lo=0.0)
        _check_range(self, "ema_decay", lo=0.0, hi=1.0, hi_open=True)  # 1 would keep the EMA at its init
        _check_range(self, "grad_accum", lo=1)
        for name in ("log_every", "eval_every", "ckpt_every"):
            _check_range(self, name, lo=0)
        _check_choice(self, "precision", ("auto", "bf16", "fp32"))
        _check_range(self, "seed", lo=0)

    @property
    def effective_lr(self) -> float:
        return self.lr if self.lr > 0 else self.blr * self.batch_size * self.grad_accum / 256


@dataclass(frozen=True)
class GeneratorConfig(Config):
    """Generator size and sampling settings shared by the six families (notebooks 05-09)."""

    RENAMED = {"cfg": "cfg_scale"}

    size: str = "tiny"  # tiny | base | large | xl: combined with a family, e.g. SiT_tiny
    label_drop: float = 0.1
    cfg_scale: float = 1.0  # classifier-free guidance scale of the sample figures (1 = off)
    num_sampling_steps: int = 0  # 0 = the family's default
    temperature: float = 1.0
    cache_latents: bool = True  # precompute tokenizer latents once (a large CPU speed-up)
    # per-channel normalisation: "mean" = statistics of the posterior means (the official
    # collect_tokenizer_stats); "sample" = of the posterior samples the generator trains on (Var μ + E σ²),
    # which keeps collapsed channels (σ >> spread of μ, common in small plain AEs) at unit scale
    latent_stats: str = "sample"

    def validate(self):
        _check_choice(self, "size", ("tiny", "base", "large", "xl", "huge"))
        _check_choice(self, "latent_stats", ("mean", "sample"))
        _check_range(self, "label_drop", lo=0.0, hi=1.0, hi_open=True)
        _check_range(self, "cfg_scale", lo=1.0)
        _check_range(self, "num_sampling_steps", lo=0)
        _check_range(self, "temperature", lo=0.0, lo_open=True)


@dataclass(frozen=True)
class EvalConfig(Config):
    """How many images and which feature network the metrics use (notebook 10; official
    ``utils/train_utils.py``, ``evaluate_generator``)."""

    RENAMED = {"cfg_list": "cfg_scales"}

    num_images: int = 1000
    batch_size: int = 100
    feature_net: str = "shapes-cnn"  # shapes-cnn (offline, trained on the embedded data) | inception
    # guidance scales to measure (a search picks the best); () = the family's grid (presets.eval_protocol)
    cfg_scales: tuple[float, ...] = (1.0,)
    quantize: str = "round"  # float -> uint8: round | truncate (the official to_uint8_numpy)
    reference: str = "train"  # gFID reference: train (the training images' statistics) | adm (ADM's ImageNet-256)

    def validate(self):
        bad = [c for c in self.cfg_scales if not (isinstance(c, (int, float)) and math.isfinite(c) and c >= 1)]
        if bad:
            raise ConfigError(f"EvalConfig.cfg_scales has {bad}; allowed: scales >= 1 (1 = no guidance), "
                              "or () for the family's grid")
        _check_range(self, "num_images", lo=1)
        _check_range(self, "batch_size", lo=1)
        _check_choice(self, "feature_net", ("shapes-cnn", "inception"))
        _check_choice(self, "quantize", ("round", "truncate"))
        _check_choice(self, "reference", ("train", "adm"))


@dataclass(frozen=True)
class Preset(Config):
    """A named bundle of everything a notebook or CLI run needs."""

    name: str = "tiny"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    tokenizer_train: TrainConfig = field(default_factory=TrainConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    generator_train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self):
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", self.name):
            raise ConfigError(f"Preset.name={self.name!r} must be a short lower-case name such as 'tiny'")

    def override(self, **flat) -> "Preset":
        """Apply dotted overrides such as ``{"tokenizer.gamma": 0.0, "data.img_size": 64}``."""
        groups: dict[str, dict] = {}
        for key, value in flat.items():
            if "." not in key:
                raise ConfigError(
                    f"override {key!r} must be 'group.key' with group one of: "
                    "data, tokenizer, tokenizer_train, generator, generator_train, eval"
                )
            group, sub = key.split(".", 1)
            if group not in self.field_names() or group == "name":
                raise ConfigError(f"unknown config group {group!r}{suggest(group, self.field_names())}")
            groups.setdefault(group, {})[sub] = value
        new = {g: getattr(self, g).replace(**kv) for g, kv in groups.items()}
        return self.replace(**new)


CONFIG_CLASSES = {
    c.__name__: c for c in (DataConfig, TokenizerConfig, TrainConfig, GeneratorConfig, EvalConfig, Preset)
}


def diff_configs(stored: dict, current: dict, ignore=frozenset()) -> list[str]:
    """``group.key: old -> new`` for every setting of ``current`` ({"tokenizer": TokenizerConfig, ...}
    or plain dicts) that differs from ``stored`` (a saved ``configs`` payload), keys in ``ignore``
    excepted. Stored groups are read through their config class, so a field added since they were
    saved counts as its default and a renamed one under its new name."""
    out = []
    for group, config in current.items():
        prev = stored.get(group)
        if not isinstance(prev, dict):
            continue
        values = config.to_dict() if isinstance(config, Config) else config
        if not isinstance(values, dict):
            continue
        klass = type(config) if isinstance(config, Config) else None
        if klass is not None:
            try:
                prev = klass.from_dict(prev).to_dict()
            except (ConfigError, TypeError):
                pass  # compare the raw values: the difference is reported below
        values = json.loads(json.dumps(values, default=list))
        prev = json.loads(json.dumps(prev, default=list))
        for k, v in values.items():
            if k not in ignore and prev.get(k) != v:
                out.append(f"{group}.{k}: {prev.get(k)!r} -> {v!r}")
    return out


def __getattr__(name: str):  # names that moved to another module in this release (ldetok_lite._compat)
    return _compat.moved_attribute(__name__, name)
