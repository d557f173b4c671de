"""Generators on tokenizer latents: a registry and one interface for every family (official ``models/``).

    model = create_generator("SiT_tiny", in_channels=8, input_size=8, num_classes=10)
    loss = model(latents, labels)                       # training: a scalar
    z = model.generate(labels, cfg_scale=2.0, num_steps=20)   # normalized latents (B, C, h, w)
    images = decode_latents(tokenizer, z)               # [0, 1]

Families, one file each: DiT (Gaussian diffusion, ``dit.py``), SiT and LightningDiT (flow
matching, ``sit.py``, ``lightningdit.py``), MAR (``mar.py``) and the raster/random-order AR models
(``ar.py``), the last two with the per-token diffusion head of ``diffloss.py``. Each registers
its sizes in ``GENERATORS`` when imported. Weights written by the official code load with
:func:`load_official_checkpoint` (``official.py``).
"""

from __future__ import annotations

import difflib
import inspect
import re

import torch

from ..config import check_num_params
from . import ar, dit, lightningdit, mar, sit  # noqa: F401  (each registers its sizes)
from .base import GENERATORS, Generator, register, resolve_name
from .official import load_official_checkpoint, ours_to_official

__all__ = ["GENERATORS", "Generator", "register", "create_generator", "list_generators", "decode_latents",
           "load_official_checkpoint", "ours_to_official"]

#: options that change the number of parameters: given explicitly, the model is sized on the meta device first
SIZE_OPTIONS = ("in_channels", "input_size", "num_classes", "hidden_size", "depth", "num_heads", "mlp_ratio",
                "patch_size", "out_channels", "buffer_size", "head_width", "head_depth")
#: options that size Python loops or CPU tables even on the meta device: capped before anything is built
OPTION_CAPS = {"depth": 1000, "head_depth": 1000, "num_timesteps": 100_000}


def create_generator(name: str, **overrides) -> Generator:
    """Build the registered generator ``name`` (e.g. ``DiT_tiny``, ``SiT_base``) with ``overrides``
    (in_channels, input_size, num_classes, label_drop, and family-specific keys).

    An unknown name raises ``ValueError`` listing the known names. Explicit sizes are checked on the
    meta device first (more than ``config.MAX_PARAMS`` parameters raise ``ValueError``). The model carries
    ``model.spec = {"kind": "generator", "name": name, "kwargs": overrides}`` for checkpoints.
    """
    key = resolve_name(name)
    for k, cap in OPTION_CAPS.items():
        v = overrides.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v > cap:
            raise ValueError(f"create_generator({key!r}): {k}={v!r} is out of range; allowed an int <= {cap}")
    try:
        check_num_params(lambda: GENERATORS[key](**overrides), f"create_generator({key!r})",
                         {k: overrides[k] for k in SIZE_OPTIONS if k in overrides})
        model = GENERATORS[key](**overrides)
    except TypeError as e:
        m = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        allowed = _constructor_options(GENERATORS[key])
        if m and allowed:
            close = difflib.get_close_matches(m.group(1), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"create_generator({key!r}): unknown option {m.group(1)!r}{hint}; allowed: "
                            f"{', '.join(allowed)}") from None
        raise TypeError(f"create_generator({key!r}): {e}") from e
    model.spec = {"kind": "generator", "name": key, "kwargs": dict(overrides)}
    return model


def _constructor_options(factory) -> list[str]:
    """Keyword options of a registered constructor: the named ``__init__`` arguments along the
    generator class's MRO (the class is the ``cls`` a family's ``_factory`` closes over)."""
    cls = factory if isinstance(factory, type) else inspect.getclosurevars(factory).nonlocals.get("cls")
    if not isinstance(cls, type):
        return []
    names: list[str] = []
    for klass in cls.__mro__:
        if klass is torch.nn.Module:
            break
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names:
                names.append(p.name)
    return names


def list_generators(family: str | None = None) -> list[str]:
    """Registered names, optionally only those starting with ``family`` (e.g. ``"DiT"``)."""
    names = sorted(GENERATORS)
    if family:
        names = [n for n in names if n.lower().startswith(family.lower() + "_")]
    return names


@torch.no_grad()
def decode_latents(tokenizer, latents: torch.Tensor) -> torch.Tensor:
    """Normalized latents (B, C, h, w) → images (B, 3, H, W) in [0, 1].

    ``tokenizer.detokenize`` denormalizes with the tokenizer's latent statistics and decodes.
    """
    if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
        raise ValueError(f"latents must be a (B, C, h, w) tensor, got "
                         f"{tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__}")
    c = getattr(tokenizer, "token_channels", None)
    if c is not None and latents.shape[1] != c:
        raise ValueError(f"latents have {latents.shape[1]} channels but the tokenizer expects {c}")
    g = getattr(tokenizer, "grid_size", None)
    if g is not None and tuple(latents.shape[2:]) != (g, g):
        raise ValueError(f"latents grid {tuple(latents.shape[2:])} does not match the tokenizer grid ({g}, {g})")
    was_training = tokenizer.training
    tokenizer.eval()
    try:
        dev = next(tokenizer.parameters()).device
        images = tokenizer.detokenize(latents.to(dev, torch.float32))
    finally:
        tokenizer.train(was_training)
    return images.clamp(0, 1)
