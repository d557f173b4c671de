"""The interface every generator family implements, and the registry behind ``create_generator``.

A generator models the tokenizer's **normalized** latents ``(B, C, h, w)`` (official
``main_diffusion.py``, ``collect_tokenizer_stats``):

- ``model(latents, labels) -> scalar loss`` (training; label dropout is active in ``train()``);
- ``model.generate(labels, cfg_scale=1.0, num_steps=None, temperature=1.0, rng=None,
  return_trajectory=False, **sampler_kwargs) -> latents (B, C, h, w)`` or
  ``(latents, [intermediate latents (B, C, h, w), …])`` from noise to the sample.

Subclasses implement :meth:`Generator.loss` and :meth:`Generator.sample`; argument checks happen
here, once, at the boundary, with messages that name the parameter, its value and what is allowed.
"""

from __future__ import annotations

import difflib
import inspect
import math
from typing import Callable

import torch
import torch.nn as nn

from .. import _compat
from .diffusion import randn_like_on

#: the most classes a generator's label table may have (one row of ``hidden_size`` floats each)
MAX_CLASSES = 10**6

# name -> constructor(**kwargs) -> Generator. Filled by the family modules via ``register``.
GENERATORS: dict[str, Callable[..., "Generator"]] = {}


def register(name_or_fn=None):
    """Register a generator constructor under its function name (or an explicit name).

    Use as ``@register`` or ``@register("DiT_tiny")``. Registering a name twice is an error.
    """

    def wrap(fn, name=None):
        key = name or fn.__name__
        if key in GENERATORS and GENERATORS[key] is not fn:
            raise ValueError(f"generator {key!r} is already registered")
        GENERATORS[key] = fn
        return fn

    if callable(name_or_fn):
        return wrap(name_or_fn)
    return lambda fn: wrap(fn, name_or_fn)


def resolve_name(name: str) -> str:
    """The registered spelling of ``name`` (exact, else case-insensitive); a clear error otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"generator name must be a str, got {type(name).__name__}")
    if name in GENERATORS:
        return name
    lower = {k.lower(): k for k in GENERATORS}
    if name.lower() in lower:
        return lower[name.lower()]
    close = difflib.get_close_matches(name, list(GENERATORS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown generator {name!r}{hint}; known: {', '.join(sorted(GENERATORS))}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class Generator(nn.Module):
    """Base class fixing the generator interface (see the module docstring).

    Args (every family accepts these):
        in_channels: latent channels C.
        input_size: latent grid size h = w.
        num_classes: number of real classes; id ``num_classes`` is the null class (CFG).
        label_drop: probability of replacing a label by the null class in training.
    """

    family: str = "generator"
    default_num_steps: int = 50
    max_num_steps: int | None = None

    def __init__(self, in_channels: int = 16, input_size: int = 16, num_classes: int = 1000,
                 label_drop: float = 0.1):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("input_size", input_size), ("num_classes", num_classes)):
            if not _is_int(v) or v < 1:
                raise ValueError(f"{name}={v!r} is invalid; allowed: an int >= 1")
        if num_classes > MAX_CLASSES:
            raise ValueError(f"num_classes={num_classes!r} is out of range; allowed an int in [1, {MAX_CLASSES}]")
        if not isinstance(label_drop, (int, float)) or isinstance(label_drop, bool) or not 0 <= label_drop < 1:
            raise ValueError(f"label_drop={label_drop!r} is out of range; allowed [0, 1)")
        self.in_channels = in_channels
        self.input_size = input_size
        self.num_classes = num_classes
        self.label_drop = float(label_drop)
        self.spec = {"kind": "generator", "name": type(self).__name__, "kwargs": {}}

    # -- properties ----------------------------------------------------------------------------

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.input_size, self.input_size)

    @property
    def null_class(self) -> int:
        return self.num_classes

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def num_params(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # -- validation ----------------------------------------------------------------------------

    def check_device(self, t: torch.Tensor, name: str) -> None:
        """``ValueError`` unless ``t`` is on the model's device (a meta tensor has no values to use)."""
        dev = self.device
        if t.device != dev:
            what = "the meta device (a tensor without values)" if t.is_meta else str(t.device)
            raise ValueError(f"{name} is on {what} but the model is on {dev}; allowed a tensor on {dev}")

    def check_latents(self, latents) -> torch.Tensor:
        """Latents (B >= 1, C, h, w), finite, on the model's device; cast to the parameter dtype
        unless autocast (which casts itself) is on."""
        if not isinstance(latents, torch.Tensor):
            raise TypeError(f"latents must be a torch.Tensor (B, C, h, w), got {type(latents).__name__}")
        if latents.ndim != 4 or tuple(latents.shape[1:]) != self.latent_shape:
            raise ValueError(f"latents shape {tuple(latents.shape)} does not fit this model; "
                             f"expected (B, {', '.join(map(str, self.latent_shape))}) (in_channels, "
                             f"input_size, input_size)")
        if latents.shape[0] == 0:
            raise ValueError(f"latents shape {tuple(latents.shape)} is an empty batch; allowed B >= 1")
        if not latents.is_floating_point():
            raise TypeError(f"latents must be a float tensor, got {latents.dtype}")
        self.check_device(latents, "latents")
        if not bool(torch.isfinite(latents).all()):
            raise ValueError("latents contain NaN or inf values")
        p = next(self.parameters(), None)
        if p is not None and latents.dtype != p.dtype and not torch.is_autocast_enabled(latents.device.type):
            latents = latents.to(p.dtype)
        return latents

    def check_labels(self, labels, batch: int | None = None, allow_null: bool = True) -> torch.Tensor:
        """Labels as int64 (B,) on the model's device; ints and lists are accepted.

        Allowed values: [0, num_classes), plus the null class ``num_classes`` when ``allow_null``
        (unconditional samples).
        """
        if isinstance(labels, int) and not isinstance(labels, bool):
            labels = [labels]
        if isinstance(labels, (list, tuple)):
            labels = torch.tensor(labels, dtype=torch.long)
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a tensor, int or list of ints, got {type(labels).__name__}")
        if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
            raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
        if labels.ndim != 1 or labels.shape[0] == 0:
            raise ValueError(f"labels must have shape (B,) with B >= 1, got {tuple(labels.shape)}")
        if batch is not None and labels.shape[0] != batch:
            raise ValueError(f"labels has {labels.shape[0]} entries but latents have batch {batch}")
        if labels.is_meta:
            raise ValueError(f"labels is on the meta device (a tensor without values); allowed labels on the "
                             f"CPU or on the model's device ({self.device})")
        hi = self.num_classes if allow_null else self.num_classes - 1
        lo_v, hi_v = int(labels.min()), int(labels.max())
        if lo_v < 0 or hi_v > hi:
            bad = lo_v if lo_v < 0 else hi_v
            extra = f" ({self.num_classes} = null/unconditional)" if allow_null else ""
            raise ValueError(f"label {bad} is out of range; allowed [0, {hi}]{extra}")
        return labels.to(device=self.device, dtype=torch.long)

    def check_sampling_args(self, cfg_scale, num_steps, temperature) -> int:
        if (not isinstance(cfg_scale, (int, float)) or isinstance(cfg_scale, bool) or not math.isfinite(cfg_scale)
                or cfg_scale < 1):
            raise ValueError(f"cfg_scale={cfg_scale!r} is out of range; allowed [1, inf) (1 = no guidance)")
        if num_steps is None:
            num_steps = self.default_num_steps
        if not _is_int(num_steps) or num_steps < 1:
            raise ValueError(f"num_steps={num_steps!r} is invalid; allowed: an int >= 1 (or None for "
                             f"the default {self.default_num_steps})")
        if self.max_num_steps is not None and num_steps > self.max_num_steps:
            raise ValueError(f"num_steps={num_steps} is out of range; allowed [1, {self.max_num_steps}]")
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) \
                or not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature={temperature!r} is out of range; allowed (0, inf)")
        return num_steps

    # -- public API ----------------------------------------------------------------------------

    def forward(self, latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training loss (a scalar) on normalized latents (B, C, h, w) and labels (B,)."""
        latents = self.check_latents(latents)
        labels = self.check_labels(labels, batch=latents.shape[0], allow_null=True)
        return self.loss(latents, labels)

    @torch.no_grad()
    @_compat.renamed_keywords(generator="rng", cfg="cfg_scale")
    def generate(self, labels, cfg_scale: float = 1.0, num_steps: int | None = None, temperature: float = 1.0,
                 rng: torch.Generator | None = None, return_trajectory: bool = False, **sampler_kwargs):
        """Sample normalized latents (B, C, h, w) for ``labels`` (eval mode, no grad).

        ``cfg_scale`` ≥ 1 is the classifier-free guidance scale; ``num_steps`` defaults to the family's
        ``default_num_steps``; ``temperature`` scales the sampling noise; ``rng`` (a
        ``torch.Generator``) makes the result reproducible. Extra keyword arguments go to the
        family's sampler (e.g. ``sampler="euler"`` for SiT).
        """
        labels = self.check_labels(labels)
        num_steps = self.check_sampling_args(cfg_scale, num_steps, temperature)
        if rng is not None and not isinstance(rng, torch.Generator):
            raise TypeError(f"rng must be a torch.Generator or None, got {type(rng).__name__}")
        self._check_sampler_kwargs(sampler_kwargs)
        was_training = self.training
        self.eval()
        try:
            out = self.sample(labels, cfg_scale=float(cfg_scale), num_steps=num_steps, temperature=float(temperature),
                              rng=rng, return_trajectory=bool(return_trajectory), **sampler_kwargs)
        finally:
            self.train(was_training)
        return out

    _STANDARD = ("labels", "cfg_scale", "num_steps", "temperature", "rng", "return_trajectory")

    def _check_sampler_kwargs(self, kwargs: dict) -> None:
        params = inspect.signature(self.sample).parameters
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return
        allowed = [k for k in params if k not in self._STANDARD]
        unknown = [k for k in kwargs if k not in allowed]
        if unknown:
            raise ValueError(f"{type(self).__name__}.generate got unknown sampler option(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(allowed) or 'none'}")

    def initial_noise(self, batch: int, rng: torch.Generator | None = None) -> torch.Tensor:
        """x_T ~ N(0, I) of shape (batch, C, h, w) on the model's device (drawn on the generator's)."""
        return randn_like_on((batch, *self.latent_shape), self.device, rng)

    # -- to implement --------------------------------------------------------------------------

    def loss(self, latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def sample(self, labels, cfg_scale, num_steps, temperature, rng, return_trajectory, **kw):  # pragma: no cover
        raise NotImplementedError
