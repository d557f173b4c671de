"""Frozen run configurations and the named presets (smoke, tiny, small, full).

Every model and run is described by a frozen dataclass. ``cfg.replace(**overrides)`` returns a
new config and rejects unknown keys and wrong types with a one-line message, so a typo in a
notebook parameter or a CLI flag never passes silently. Configs round-trip through JSON and are
saved next to every checkpoint.

Presets (see README, "Presets"):

- ``smoke``: for the test suite; seconds per notebook on a CPU.
- ``tiny``: a 2-core laptop with no GPU and no internet; minutes per notebook.
- ``tiny-long``: tiny's data and models trained longer (about 20 minutes per model on 2 cores):
  the recipe of the reference models shipped with the kit.
- ``small``: one GPU, about an hour (ImageNet at 128 px or a subset).
- ``full``: the paper's ImageNet-256 setting (DETOK_SPEC §3, §4).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

PRESET_NAMES = ("smoke", "tiny", "tiny-long", "small", "full")


class ConfigError(ValueError):
    """A configuration value or key is not allowed. The message names it and what is allowed."""


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
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
    """Base class: strict ``replace``, validation, and JSON round trips."""

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
                    f"unknown {type(self).__name__} key {key!r}{_suggest(key, names)}; "
                    f"allowed: {', '.join(names)}"
                )
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        names = cls.field_names()
        unknown = [k for k in data if k not in names]
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} key {unknown[0]!r}; allowed: {', '.join(names)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps({"__class__": type(self).__name__, **self.to_dict()}, indent=2, sort_keys=False)

    def save_json(self, path: str | Path) -> Path:
        """Write the config as JSON atomically (temporary name, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> "Config":
        data = json.loads(Path(path).read_text())
        name = data.pop("__class__", cls.__name__)
        target = CONFIG_CLASSES.get(name, cls)
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
            f"{type(obj).__name__}.{name}={v!r} is not known{_suggest(str(v), choices)}; "
            f"allowed: {', '.join(map(str, choices))}"
        )


DATASETS = ("shapes", "photos", "cifar10", "mnist", "imagefolder")


@dataclass(frozen=True)
class DataConfig(Config):
    """Which images to train on (see ``ldetok_lite.data``)."""

    dataset: str = "shapes"  # shapes | photos | cifar10 | mnist | imagefolder
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
        _check_range(self, "num_workers", lo=0)
        _check_range(self, "seed", lo=0)


@dataclass(frozen=True)
class TokenizerConfig(Config):
    """The tokenizer and its training-time corruption and losses (DETOK_SPEC §1-§3)."""

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
    gan_weight: float = 0.0  # the effective paper value is 0.1 (DETOK_SPEC §2)
    gan_start_step: int = 0
    decoder_only: bool = False  # decoder fine-tune (DETOK_SPEC §3.2)
    # none | plain: the corrupted variants continue from the preset's trained plain AE instead of
    # starting from scratch (small CPU budgets; TOY_SCALE_NOTES "Lessons"). The paper: none.
    warm_start: str = "none"

    def as_plain(self) -> "TokenizerConfig":
        """This tokenizer without corruption or warm start: the plain AE the variants start from."""
        return self.replace(gamma=0.0, mask_ratio=0.0, use_additive_noise=False, warm_start="none")

    def validate(self):
        _check_choice(self, "warm_start", ("none", "plain"))
        _check_range(self, "patch_size", lo=1)
        _check_range(self, "token_channels", lo=1)
        _check_range(self, "gamma", lo=0.0)
        _check_range(self, "mask_ratio", lo=0.0, hi=1.0, hi_open=True)
        _check_choice(self, "recon_loss", ("mse", "l1", "l2+l1"))
        _check_choice(self, "perceptual_net", ("lpips-vgg", "lpips-convnext", "lpips-random"))
        for name in ("perceptual_weight", "kl_weight", "gan_weight"):
            _check_range(self, name, lo=0.0)
        _check_range(self, "gan_start_step", lo=0)


@dataclass(frozen=True)
class TrainConfig(Config):
    """Optimisation settings shared by tokenizer and generator training (DETOK_SPEC §3)."""

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
        _check_range(self, "steps", lo=1)
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
        _check_range(self, "ema_decay", lo=0.0, hi=1.0)
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
    """Generator size and sampling settings shared by the six families (DETOK_SPEC §4)."""

    size: str = "tiny"  # tiny | base | large | xl: combined with a family, e.g. SiT_tiny
    label_drop: float = 0.1
    cfg: float = 1.0  # classifier-free guidance scale (1 = off)
    num_sampling_steps: int = 0  # 0 = the family's default
    temperature: float = 1.0
    cache_latents: bool = True  # precompute tokenizer latents once (a large CPU speed-up)
    # per-channel normalisation: "mean" = statistics of the posterior means (the official code,
    # DETOK_SPEC §4.0); "sample" = of the posterior samples the generator trains on (Var μ + E σ²),
    # which keeps collapsed channels (σ >> spread of μ, common in small plain AEs) at unit scale
    latent_stats: str = "sample"

    def validate(self):
        _check_choice(self, "size", ("tiny", "base", "large", "xl", "huge"))
        _check_choice(self, "latent_stats", ("mean", "sample"))
        _check_range(self, "label_drop", lo=0.0, hi=1.0, hi_open=True)
        _check_range(self, "cfg", lo=1.0)
        _check_range(self, "num_sampling_steps", lo=0)
        _check_range(self, "temperature", lo=0.0, lo_open=True)


@dataclass(frozen=True)
class EvalConfig(Config):
    """How many images and which feature network the metrics use (DETOK_SPEC §5)."""

    num_images: int = 1000
    batch_size: int = 100
    feature_net: str = "shapes-cnn"  # shapes-cnn (offline, trained on the embedded data) | inception
    cfg_list: tuple[float, ...] = (1.0,)

    def validate(self):
        _check_range(self, "num_images", lo=1)
        _check_range(self, "batch_size", lo=1)
        _check_choice(self, "feature_net", ("shapes-cnn", "inception"))


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
        _check_choice(self, "name", PRESET_NAMES)

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
                raise ConfigError(f"unknown config group {group!r}{_suggest(group, self.field_names())}")
            groups.setdefault(group, {})[sub] = value
        new = {g: getattr(self, g).replace(**kv) for g, kv in groups.items()}
        return self.replace(**new)


def _smoke() -> Preset:
    return Preset(
        name="smoke",
        data=DataConfig(num_train=256, num_val=64),
        tokenizer=TokenizerConfig(warm_start="plain"),
        tokenizer_train=TrainConfig(steps=6, batch_size=16, blr=1e-3, warmup_frac=0.1, log_every=2),
        generator=GeneratorConfig(num_sampling_steps=4),
        generator_train=TrainConfig(
            steps=6, batch_size=16, lr=2e-4, lr_schedule="constant", warmup_frac=0.0,
            weight_decay=0.0, grad_clip=0.0, ema_decay=0.9999, log_every=2,
        ),
        eval=EvalConfig(num_images=64, batch_size=32),
    )


def _tiny() -> Preset:
    return Preset(
        name="tiny",
        data=DataConfig(num_train=20000, num_val=1000),
        # l-DeTok from scratch needs >= 10x this budget (TOY_SCALE_NOTES); continuing from the plain
        # AE gives recognisable reconstructions in the same 1000 steps (issue 5 note).
        tokenizer=TokenizerConfig(warm_start="plain"),
        # 32k images per tokenizer (~230 CPU-seconds single-threaded). At this compute, 1000 steps of 32
        # beat 500 of 64 (l-DeTok 25.7 vs 24.5 dB) and lr 2e-3 beats 1e-3 and 4e-3 (issue 4 tuning note).
        tokenizer_train=TrainConfig(steps=1000, batch_size=32, blr=1.6e-2, warmup_frac=0.05, ema_decay=0.98,
                                    log_every=50),
        generator=GeneratorConfig(),
        # 3000 steps of 64 gave clearer samples than 1500 of 128 (and as clear as 3000 of 128) at
        # this compute (issue 5 note)
        generator_train=TrainConfig(
            steps=3000, batch_size=64, lr=1e-3, lr_schedule="constant", warmup_frac=0.0,
            weight_decay=0.0, grad_clip=0.0, ema_decay=0.995, log_every=200,
        ),
        eval=EvalConfig(num_images=1000, batch_size=200),
    )


def _tiny_long() -> Preset:
    # the reference models: tiny's data and models, ~5x the tokenizer and ~7x the generator steps,
    # with a cosine decay of the learning rate (about 20 minutes per model on 2 cores)
    p = _tiny()
    return p.replace(
        name="tiny-long",
        tokenizer_train=p.tokenizer_train.replace(steps=5000, warmup_frac=0.02, ema_decay=0.995, log_every=250,
                                                  ckpt_every=2500),
        generator_train=p.generator_train.replace(steps=20000, lr_schedule="cosine", warmup_frac=0.02, ema_decay=0.999,
                                                  log_every=500, ckpt_every=5000),
    )


def _small() -> Preset:
    return Preset(
        name="small",
        data=DataConfig(dataset="imagefolder", img_size=128, data_dir="data/imagenet", num_workers=8),
        tokenizer=TokenizerConfig(model="detok_SS", patch_size=8, token_channels=16, perceptual_weight=1.0,
                                  gan_weight=0.1, gan_start_step=15000),
        tokenizer_train=TrainConfig(steps=30000, batch_size=128, blr=1e-4, log_every=100, ckpt_every=2000,
                                    eval_every=5000),
        generator=GeneratorConfig(size="base", num_sampling_steps=64, cache_latents=False),  # ImageNet: on the fly
        generator_train=TrainConfig(
            steps=30000, batch_size=256, lr=2e-4, lr_schedule="constant", warmup_frac=0.0,
            weight_decay=0.0, grad_clip=0.0, ema_decay=0.9999, log_every=100, ckpt_every=2000,
        ),
        eval=EvalConfig(num_images=10000, batch_size=250, feature_net="inception", cfg_list=(1.0, 2.0, 3.0)),
    )


def _full() -> Preset:
    # DETOK_SPEC §3.1: detok_BB at 256², global batch 1024, 200 epochs (~1251 steps each),
    # γ=3, M=0.7, GAN from epoch 100, warmup 25%; generators: aligned constant lr 2e-4 (§3.4).
    steps_per_epoch = 1251
    return Preset(
        name="full",
        data=DataConfig(dataset="imagefolder", img_size=256, data_dir="data/imagenet", num_workers=10),
        tokenizer=TokenizerConfig(model="detok_BB", patch_size=16, token_channels=16, perceptual_weight=1.0,
                                  perceptual_net="lpips-convnext", gan_weight=0.1,
                                  gan_start_step=100 * steps_per_epoch),
        tokenizer_train=TrainConfig(steps=200 * steps_per_epoch, batch_size=1024, blr=1e-4, ema_decay=0.999,
                                    log_every=100, ckpt_every=steps_per_epoch, eval_every=10 * steps_per_epoch),
        generator=GeneratorConfig(size="base", num_sampling_steps=0, cache_latents=False, latent_stats="mean"),
        generator_train=TrainConfig(
            steps=100 * steps_per_epoch, batch_size=1024, lr=2e-4, lr_schedule="constant", warmup_frac=0.0,
            weight_decay=0.0, grad_clip=0.0, ema_decay=0.9999, log_every=100, ckpt_every=steps_per_epoch,
            eval_every=40 * steps_per_epoch,
        ),
        eval=EvalConfig(num_images=50000, batch_size=250, feature_net="inception", cfg_list=(1.0, 2.0, 3.0, 3.9)),
    )


_PRESETS = {"smoke": _smoke, "tiny": _tiny, "tiny-long": _tiny_long, "small": _small, "full": _full}


def load_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name raises ``ConfigError`` listing the choices."""
    if not isinstance(name, str) or name not in _PRESETS:
        raise ConfigError(f"unknown preset {name!r}{_suggest(str(name), _PRESETS)}; allowed: {', '.join(PRESET_NAMES)}")
    return _PRESETS[name]()


CONFIG_CLASSES = {
    c.__name__: c for c in (DataConfig, TokenizerConfig, TrainConfig, GeneratorConfig, EvalConfig, Preset)
}
