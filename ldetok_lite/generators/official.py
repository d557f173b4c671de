"""Official generator checkpoints ↔ our generators: MAR, ARDiff (raster and random order), DiT, SiT,
LightningDiT as written by the official code (``models/mar.py``, ``ardiff.py``, ``dit.py``, ``sit.py``,
``lightningdit.py``; ``utils/misc.py``, ``save_checkpoint``).

The twin of :func:`ldetok_lite.convert.load_official_checkpoint` (tokenizers). Our parameters carry
the official names except for a few renames and two merges, listed in :data:`RENAMES`:

- the official ``class_emb`` table (``num_classes`` rows) plus ``fake_latent`` (the unconditional
  embedding, MAR and ARDiff) are our ``y_embedder`` table, whose last row is the null class;
- LightningDiT's fused SwiGLU ``w12`` (rows ``[0, H)`` gated by SiLU, ``[H, 2H)`` the value) is timm's
  ``fc1_g`` and ``fc1_x``; its ``w3`` is ``fc2``;
- DiT/SiT's frozen sin-cos ``pos_embed`` is a buffer here (recomputed; the file's copy is loaded);
  LightningDiT's RoPE tables are ours alone (the official model recomputes them, and so do we).

Sizes and shapes (width, depth, channels, grid, classes, the diffusion head's depth and width, the
MAR buffer, qk-norm, DiT's learned variance) are read from the file, so ``name`` only picks the
family, the size and, for ARDiff, the order (which the weights do not record).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from ..checkpoint import read_official_state_dict, state_dict_mismatch
from .ar import AR_SIZES
from .base import GENERATORS, Generator, resolve_name
from .dit import SIZES as DIT_SIZES
from .mar import MAR_SIZES

__all__ = ["load_official_checkpoint", "official_to_ours", "ours_to_official", "FAMILY_OF_NAME"]

#: our family prefix → the official model class it mirrors
FAMILY_OF_NAME = {"MAR": "MAR", "RasterAR": "ARDiff", "RandomAR": "ARDiff", "DiT": "DiT", "SiT": "SiT",
                  "LightningDiT": "LightningDiT"}

#: per official family: (official key prefix, our key prefix) renames, applied in order
RENAMES = {
    "MAR": [("encoder_pos_embed_learned", "encoder_pos_embed"), ("decoder_pos_embed_learned", "decoder_pos_embed"),
            ("diffusion_pos_embed_learned", "diffusion_pos_embed")],
    "ARDiff": [("transformer.blocks.", "blocks."), ("final_layer.adaLN_modulation.", "final_adaLN.")],
    "DiT": [("transformer.blocks.", "blocks."), ("x_embedder.proj.", "x_embedder."),
            ("final_layer.norm.", "final_layer.norm_final.")],
}
RENAMES["SiT"] = RENAMES["LightningDiT"] = RENAMES["DiT"]

#: a key that every official file of the family has (how a foreign file is recognised)
MARKERS = {"MAR": "z_proj.weight", "ARDiff": "target_pos_embed", "DiT": "x_embedder.proj.weight",
           "SiT": "x_embedder.proj.weight", "LightningDiT": "x_embedder.proj.weight"}

_SWIGLU = re.compile(r"^(blocks\.\d+\.mlp\.)(w12|w3|fc1_g|fc1_x|fc2)\.(weight|bias)$")


def _official_family(name: str) -> str:
    return FAMILY_OF_NAME[name.split("_")[0]]


def _rename(key: str, pairs, reverse: bool = False) -> str:
    for official, ours in pairs:
        a, b = (ours, official) if reverse else (official, ours)
        if key.startswith(a):
            return b + key[len(a):]
    return key


def official_to_ours(sd: Mapping[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """An official state dict of ``family`` (MAR, ARDiff, DiT, SiT, LightningDiT) in our key layout."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key in ("class_emb.weight", "fake_latent"):
            continue
        key = _rename(key, RENAMES[family])
        m = _SWIGLU.match(key)
        if family == "LightningDiT" and m and m.group(2) == "w12":
            gate, value_half = value.chunk(2, dim=0)
            out[f"{m.group(1)}fc1_g.{m.group(3)}"] = gate
            out[f"{m.group(1)}fc1_x.{m.group(3)}"] = value_half
            continue
        if family == "LightningDiT" and m and m.group(2) == "w3":
            key = f"{m.group(1)}fc2.{m.group(3)}"
        out[key] = value
    if family in ("MAR", "ARDiff") and "class_emb.weight" in sd and "fake_latent" in sd:
        out["y_embedder.embedding_table.weight"] = torch.cat([sd["class_emb.weight"], sd["fake_latent"]], dim=0)
    return out


def ours_to_official(model: Generator) -> dict[str, torch.Tensor]:
    """Our generator's weights in the official key layout (the inverse of :func:`official_to_ours`),
    e.g. to sample with the official code: ``official_model.load_state_dict(ours_to_official(m))``."""
    family = _official_family(model.spec["name"])
    buffers = {name for name, _ in model.named_buffers()}  # derived tables (RoPE): the official code recomputes them
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key in buffers:
            continue
        if key == "y_embedder.embedding_table.weight" and family in ("MAR", "ARDiff"):
            out["class_emb.weight"], out["fake_latent"] = value[:-1].clone(), value[-1:].clone()
            continue
        m = _SWIGLU.match(key)
        if family == "LightningDiT" and m and m.group(2) == "fc1_x":
            continue
        if family == "LightningDiT" and m and m.group(2) == "fc1_g":
            other = model.state_dict()[f"{m.group(1)}fc1_x.{m.group(3)}"]
            key, value = f"{m.group(1)}w12.{m.group(3)}", torch.cat([value, other], dim=0)
        elif family == "LightningDiT" and m and m.group(2) == "fc2":
            key = f"{m.group(1)}w3.{m.group(3)}"
        out[_rename(key, RENAMES[family], reverse=True)] = value
    if family in ("DiT", "SiT") and "pos_embed" not in out:
        out["pos_embed"] = model.pos_embed.detach().clone()  # a frozen parameter in the official model
    return out


def _count(sd: Mapping, pattern: str) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def read_architecture(sd: Mapping[str, torch.Tensor], family: str) -> dict:
    """The shape options of ``create_generator`` that an official state dict of ``family`` fixes."""
    arch: dict = {}
    if family in ("MAR", "ARDiff"):
        arch["num_classes"] = sd["class_emb.weight"].shape[0]
        arch["head_width"] = sd["diffloss.net.input_proj.weight"].shape[0]
        arch["head_depth"] = _count(sd, r"diffloss\.net\.res_blocks\.(\d+)\.")
    if family == "MAR":
        width, channels = sd["z_proj.weight"].shape
        seq_len = sd["diffusion_pos_embed_learned"].shape[1]
        arch.update(in_channels=channels, input_size=math.isqrt(seq_len), hidden_size=width,
                    depth=_count(sd, r"encoder_blocks\.(\d+)\."),
                    buffer_size=sd["encoder_pos_embed_learned"].shape[1] - seq_len)
    elif family == "ARDiff":
        width, channels = sd["x_embedder.weight"].shape
        arch.update(in_channels=channels, input_size=math.isqrt(sd["target_pos_embed"].shape[1]), hidden_size=width,
                    depth=_count(sd, r"transformer\.blocks\.(\d+)\."))
    else:
        width, channels, patch, _ = sd["x_embedder.proj.weight"].shape
        out_channels = sd["final_layer.linear.weight"].shape[0] // (patch * patch)
        arch.update(in_channels=channels, input_size=math.isqrt(sd["pos_embed"].shape[1]) * patch, patch_size=patch,
                    hidden_size=width, depth=_count(sd, r"transformer\.blocks\.(\d+)\."),
                    num_classes=sd["y_embedder.embedding_table.weight"].shape[0] - 1,
                    qk_norm=any(".attn.q_norm." in k for k in sd))
        if family == "DiT":
            arch["learn_sigma"] = out_channels == 2 * channels
    return arch


def _size_for(name: str, arch: dict) -> str | None:
    """The registered name of ``name``'s family whose width and depth are the file's."""
    prefix = name.split("_")[0]
    sizes = {"MAR": MAR_SIZES, "RasterAR": AR_SIZES, "RandomAR": AR_SIZES}.get(prefix, DIT_SIZES)
    for size, dims in sizes.items():
        if f"{prefix}_{size}" in GENERATORS and (dims["hidden_size"], dims["depth"]) == (arch["hidden_size"],
                                                                                          arch["depth"]):
            return f"{prefix}_{size}"
    return None


def load_official_checkpoint(path, name: str, which: str = "model_ema", **overrides) -> Generator:
    """Load generator weights written by the official code into ``create_generator(name, ...)``.

    ``path``: an official ``.pth`` (``save_checkpoint``'s dict with ``model`` / ``model_ema``), a bare
    state dict, or an already-loaded dict; read with ``torch.load(weights_only=True)`` (a file that
    carries code is refused, never run). ``name``: ours, e.g. ``MAR_base``, ``RandomAR_large``,
    ``LightningDiT_xl``; the file fixes every shape (see :func:`read_architecture`), ``overrides``
    set the rest (``num_iter``, ``head_steps``, ...). Returns the model in eval mode.

    The released MAR-B/L weights (``mar_base.pth``, ``mar_large.pth``, linked from the official
    README) load with ``name="MAR_base"`` / ``"MAR_large"``. Errors name the file and say what it holds.
    """
    key = resolve_name(name)
    family = _official_family(key)
    marker = MARKERS[family]

    def looks_like(sd: Mapping) -> str | None:
        if marker in sd:
            return None
        kinds = [f for f, k in MARKERS.items() if k in sd and f != family]
        if any(k.startswith(("encoder.", "decoder.")) for k in sd):
            kinds = ["an l-DeTok tokenizer (use ldetok_lite.convert.load_official_checkpoint)"]
        seen = f"it looks like {kinds[0]}" if kinds else f"first keys: {', '.join(list(sd)[:5])}"
        return f"does not hold official {family} weights (no {marker!r}); {seen}"

    sd, where = read_official_state_dict(path, which, check=looks_like,
                                         hint=f"official {family} checkpoints come from the official code's "
                                              "save_checkpoint (github.com/Jiawei-Yang/DeTok)",
                                         what=f"an official {family} checkpoint")
    arch = read_architecture(sd, family)
    matching = _size_for(key, arch)
    if matching is None:
        raise ValueError(f"{where} holds a {family} of width {arch['hidden_size']} and depth {arch['depth']}, which "
                         f"no registered size of {key.split('_')[0]} has; known: "
                         f"{', '.join(n for n in sorted(GENERATORS) if n.split('_')[0] == key.split('_')[0])}")
    if matching != key:
        raise ValueError(f"{where} holds {matching}-sized weights (width {arch['hidden_size']}, depth "
                         f"{arch['depth']}), not {key}; pass name={matching!r}")
    arch.pop("hidden_size"), arch.pop("depth")
    from_file = {k: v for k, v in arch.items() if k not in overrides}
    model = GENERATORS[key](**from_file, **overrides)
    model.spec = {"kind": "generator", "name": key, "kwargs": {**from_file, **overrides}}
    ours = official_to_ours(sd, family)
    pos = ours.pop("pos_embed", None) if family in ("DiT", "SiT") else None
    for name, buf in model.named_buffers():  # derived tables (RoPE) that the official files do not store
        if name in model.state_dict() and name not in ours:
            ours[name] = buf
    report = state_dict_mismatch(model, ours)
    if report:
        raise ValueError(f"{where} does not match {key} with {from_file} ({report})")
    model.load_state_dict(ours, strict=True)
    if pos is not None:
        if pos.shape != model.pos_embed.shape:
            raise ValueError(f"{where}: pos_embed {tuple(pos.shape)} does not match {tuple(model.pos_embed.shape)}")
        model.pos_embed.copy_(pos)
    return model.eval()
