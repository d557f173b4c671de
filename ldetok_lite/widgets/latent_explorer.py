"""``LatentExplorer``: one image, two tokenizers, the same corrupted latent decoded by each.

Pick an image (embedded shapes or a scikit-image photo), slide τ, γ and the mask ratio, and
compare how a plain autoencoder and an l-DeTok tokenizer decode ``z' = (1−τ)·z + τ·γ·ε`` of
their own latents (paper eq. 1) with the same ε and the same mask order. PSNR is printed under
each decoding. Encodings are cached per (tokenizer, image, mask ratio) — masking happens at the
encoder input (the official ``Encoder.mae_random_masking``), so each new mask ratio is encoded
once — and a τ or γ move only re-decodes. The noise and the mask order are fixed by ``seed``
("resample noise" draws new ones). The measurements behind it are ``ldetok_lite.analysis``.
Taught in ``notebooks/04_latent_explorer.ipynb``.
"""

from __future__ import annotations

import ipywidgets as W
import torch
from PIL import Image, ImageDraw

from .. import _compat
from ..analysis import corrupt_and_decode
from ..data import PHOTO_NAMES, SHAPES_CLASSES, ShapesDataset, sample_photos
from ..metrics import psnr
from ..viz import to_pil
from .base import Panel, check_range

TAU_MAX, GAMMA_MAX, MASK_MAX = 1.0, 6.0, 0.9  # slider ranges (all from 0)


def default_images(img_size: int, num_shapes: int = 6, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Held-out embedded shapes plus the scikit-image photos, at ``img_size``, with names."""
    ds = ShapesDataset(max(num_shapes, 1), img_size, seed=seed, split="val")
    names = [f"shape {i}: {SHAPES_CLASSES[int(ds.labels[i])]}" for i in range(num_shapes)]
    photos = sample_photos(size=img_size)
    names += [f"photo: {n}" for n in PHOTO_NAMES[:photos.shape[0]]]
    return torch.cat([ds.images[:num_shapes], photos]), names


def _caption(img: Image.Image, text: str, width: int) -> Image.Image:
    out = Image.new("RGB", (width, img.height + 30), "white")
    out.paste(img, ((width - img.width) // 2, 0))
    d = ImageDraw.Draw(out)
    for i, line in enumerate(text.split("\n")[:2]):
        d.text((4, img.height + 2 + 13 * i), line, fill="black")
    return out


class LatentExplorer(Panel):
    """Side-by-side decoding of the corrupted latents by two (or more) tokenizers.

    ``tokenizers``: {"plain AE": tok_a, "l-DeTok": tok_b} (same ``img_size``). ``images``:
    (B, 3, H, W) in [0, 1] with ``names`` (default: held-out shapes + sample photos).
    ``render(image, tau, gamma, mask_ratio)`` is pure for the panel's fixed noise.
    """

    title = "Latent explorer: decode z' = (1-τ)·z + τ·γ·ε (and masking) with each tokenizer"

    def __init__(self, tokenizers: dict, images: torch.Tensor | None = None, names: list[str] | None = None,
                 tau: float = 0.5, gamma: float = 3.0, mask_ratio: float = 0.0, seed: int = 0, scale: int = 5):
        if not isinstance(tokenizers, dict) or not tokenizers:
            raise TypeError("tokenizers must be a non-empty dict {name: tokenizer}")
        sizes = {getattr(t, "img_size", None) for t in tokenizers.values()}
        if len(sizes) != 1 or None in sizes:
            raise ValueError(f"all tokenizers must share one img_size, got {sorted(map(str, sizes))}")
        self.img_size = sizes.pop()
        ranges = (("tau", tau, TAU_MAX), ("gamma", gamma, GAMMA_MAX), ("mask_ratio", mask_ratio, MASK_MAX))
        for name, value, hi in ranges:
            check_range(name, value, 0.0, hi)  # the sliders' ranges
        if images is None:
            images, names = default_images(self.img_size)
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError("images must be a (B, 3, H, W) tensor in [0, 1]")
        if tuple(images.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f"images are {tuple(images.shape[-2:])} but the tokenizers need "
                             f"{self.img_size}x{self.img_size}")
        self.tokenizers = {k: v.eval() for k, v in tokenizers.items()}
        self.images = images.float().cpu()
        self.names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
        self._init = dict(tau=tau, gamma=gamma, mask_ratio=mask_ratio)
        self.scale = scale
        self.seed = seed
        self.cache: dict = {}
        self.encodes = 0
        self._draw_noise(seed)
        super().__init__()

    def _draw_noise(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        n = max(t.seq_len for t in self.tokenizers.values())
        c = max(t.token_channels for t in self.tokenizers.values())
        self.mask_noise = torch.rand(len(self.images), n, generator=g)
        self.noise = torch.randn(len(self.images), n, c, generator=g)

    def build_controls(self) -> dict:
        style = {"description_width": "80px"}
        return {
            "image": W.Dropdown(options=[(n, i) for i, n in enumerate(self.names)], value=0, description="image",
                                style=style),
            "tau": W.FloatSlider(value=self._init["tau"], min=0.0, max=TAU_MAX, step=0.05, description="τ",
                                 continuous_update=False, style=style),
            "gamma": W.FloatSlider(value=self._init["gamma"], min=0.0, max=GAMMA_MAX, step=0.25, description="γ",
                                   continuous_update=False, style=style),
            "mask_ratio": W.FloatSlider(value=self._init["mask_ratio"], min=0.0, max=MASK_MAX, step=0.05,
                                        description="mask ratio", continuous_update=False, style=style),
        }

    def build_buttons(self) -> list:
        b = W.Button(description="resample noise")

        def on_click(_):
            self.seed += 1
            self._draw_noise(self.seed)
            self.cache.clear()  # the mask order changed
            self._on_change()

        b.on_click(on_click)
        return [b]

    def decode(self, name: str, image: int, tau: float, gamma: float, mask_ratio: float) -> torch.Tensor:
        """The decoded (3, H, W) image of tokenizer ``name`` (cached encodings, fixed noise)."""
        if not isinstance(image, int) or isinstance(image, bool) or not 0 <= image < len(self.images):
            raise ValueError(f"image={image!r} is out of range; allowed 0..{len(self.images) - 1}")
        if name not in self.tokenizers:
            raise ValueError(f"tokenizer {name!r} is not in this panel; allowed: {', '.join(self.tokenizers)}")
        tok = self.tokenizers[name]
        n, c = tok.seq_len, tok.token_channels
        before = len(self.cache)
        out = corrupt_and_decode(tok, self.images[image:image + 1], tau, gamma, mask_ratio,
                                 noise=self.noise[image:image + 1, :n, :c],
                                 mask_noise=self.mask_noise[image:image + 1, :n], cache=self.cache,
                                 key=(name, image))
        self.encodes += len(self.cache) - before
        return out[0].cpu()

    def render(self, image: int = 0, tau: float = 0.5, gamma: float = 3.0, mask_ratio: float = 0.0) -> Image.Image:
        if not isinstance(image, int) or isinstance(image, bool) or not 0 <= image < len(self.images):
            raise ValueError(f"image={image!r} is out of range; allowed 0..{len(self.images) - 1}")
        x = self.images[image]
        size = self.img_size * self.scale
        tiles = [_caption(to_pil(x).resize((size, size), Image.NEAREST), "input", size + 8)]
        self.last_psnr = {}
        for name in self.tokenizers:
            y = self.decode(name, image, tau, gamma, mask_ratio)
            p = float(psnr(y, x))
            self.last_psnr[name] = p
            tiles.append(_caption(to_pil(y).resize((size, size), Image.NEAREST), f"{name}\nPSNR {p:.1f} dB", size + 8))
        out = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), "white")
        x0 = 0
        for t in tiles:
            out.paste(t, (x0, 0))
            x0 += t.width
        return out

    def describe(self, params: dict) -> str:
        ps = " &nbsp; ".join(f"{k}: {v:.1f} dB" for k, v in getattr(self, "last_psnr", {}).items())
        return (f"τ = {params['tau']:.2f}, γ = {params['gamma']:.2f}, mask ratio = {params['mask_ratio']:.2f}"
                f" &nbsp;|&nbsp; {ps} &nbsp;|&nbsp; encodings cached: {len(self.cache)}")


__all__ = ["LatentExplorer", "default_images"]


def __getattr__(name: str):  # names that moved to another module in this release (ldetok_lite._compat)
    return _compat.moved_attribute(__name__, name)
