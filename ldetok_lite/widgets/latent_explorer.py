"""``LatentExplorer``: one image, two tokenizers, the same corrupted latent decoded by each.

Pick an image (embedded shapes or a scikit-image photo), slide τ, γ and the mask ratio, and
compare how a plain autoencoder and an l-DeTok tokenizer decode ``z' = (1−τ)·z + τ·γ·ε`` of
their own latents (paper eq. 1) with the same ε and the same mask order. PSNR is printed under
each decoding. Encodings are cached per (tokenizer, image, mask ratio) — masking happens at the
encoder input (DETOK_SPEC §1.6), so each new mask ratio is encoded once — and a τ or γ move only
re-decodes. The noise and the mask order are fixed by ``seed`` ("resample noise" draws new ones).
Also: :func:`robustness_psnr` / :func:`robustness_curves` (the curves of notebook 04) and
:func:`latent_pca_image` (the latent PCA picture). Taught in ``notebooks/04_latent_explorer.ipynb``.
"""

from __future__ import annotations

import ipywidgets as W
import torch
from PIL import Image, ImageDraw

from ..corruption import additive_noise, interpolative_noise, num_kept
from ..metrics import psnr
from ..viz import to_pil
from .base import Panel


def _device_of(module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def corrupt_and_decode(tokenizer, images: torch.Tensor, tau: float = 0.0, gamma: float = 3.0,
                       mask_ratio: float = 0.0, noise: torch.Tensor | None = None,
                       mask_noise: torch.Tensor | None = None, additive: bool = False,
                       generator: torch.Generator | None = None, cache: dict | None = None, key=None) -> torch.Tensor:
    """Encode (posterior mean, ``mask_ratio`` of the tokens dropped at the encoder input), corrupt
    the visible latents with τ/γ (interpolative unless ``additive``), decode; [0, 1] clamped.

    ``noise`` (B, N, C) and ``mask_noise`` (B, N) fix ε and the mask order (drawn from
    ``generator`` when not given). ``cache``/``key``: reuse encodings across calls.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau={tau!r} is out of range; allowed [0, 1]")
    if not 0.0 <= gamma:
        raise ValueError(f"gamma={gamma!r} is out of range; allowed [0, inf)")
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio={mask_ratio!r} is out of range; allowed [0, 1)")
    tokenizer.eval()
    dev = _device_of(tokenizer)
    x = images.to(dev).float()
    b, n, c = x.shape[0], tokenizer.seq_len, tokenizer.token_channels
    if mask_noise is None:
        mask_noise = torch.rand(b, n, generator=generator)
    if noise is None:
        noise = torch.randn(b, n, c, generator=generator)
    mask_noise, noise = mask_noise.to(dev), noise.to(dev)
    ck = None if cache is None else (key, round(float(mask_ratio), 6))
    if ck is not None and ck in cache:
        z, ids_restore = cache[ck]
    else:
        z, ids_restore, _ = tokenizer.encode(x, mask_ratio=float(mask_ratio), mask_noise=mask_noise)
        if cache is not None:
            cache[ck] = (z, ids_restore)
    if ids_restore is not None:
        keep = num_kept(n, float(mask_ratio))
        ids_keep = torch.argsort(mask_noise, dim=1, stable=True)[:, :keep]
        eps = torch.gather(noise, 1, ids_keep[..., None].expand(-1, -1, c))
    else:
        eps = noise
    if tau > 0:  # (γ = 0 interpolative only shrinks the latent; additive γ = 0 leaves it)
        z = (additive_noise if additive else interpolative_noise)(z, float(tau), float(gamma), noise=eps)
    return tokenizer.decode(z, ids_restore).clamp(0, 1)


@torch.no_grad()
def robustness_psnr(tokenizer, images: torch.Tensor, tau: float = 0.5, gamma: float = 3.0, mask_ratio: float = 0.0,
                    seed: int = 0, batch_size: int = 256, additive: bool = False) -> float:
    """Mean PSNR (dB) of decoding corrupted latents against the clean images (the robustness of
    the decoder, TOY_SCALE_NOTES: "PSNR at τ = 0.5 with γ = 3"). Fixed noise from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    vals = []
    for chunk in images.split(batch_size):
        out = corrupt_and_decode(tokenizer, chunk, tau, gamma, mask_ratio, additive=additive, generator=g)
        vals.append(psnr(out, chunk.to(out.device), reduction="none").cpu())
    return float(torch.cat(vals).mean())


def robustness_curves(tokenizers: dict, images: torch.Tensor, taus=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
                      mask_ratios=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8), gamma: float = 3.0,
                      seed: int = 0) -> dict:
    """{name: {"tau": [(τ, PSNR)...], "mask": [(m, PSNR)...]}} for each tokenizer."""
    out = {}
    for name, tok in tokenizers.items():
        out[name] = {
            "tau": [(float(t), robustness_psnr(tok, images, tau=t, gamma=gamma, seed=seed)) for t in taus],
            "mask": [(float(m), robustness_psnr(tok, images, tau=0.0, mask_ratio=m, seed=seed)) for m in mask_ratios],
        }
    return out


@torch.no_grad()
def latent_pca_image(tokenizers: dict, images: torch.Tensor, scale: int = 4) -> Image.Image:
    """Each tokenizer's latent grid projected on its first 3 principal components, as RGB.

    Rows: input, then one row per tokenizer; the PCA is fitted on all tokens of ``images``.
    Smooth, object-shaped colour fields mean neighbouring tokens carry related codes.
    """
    from ..viz import labelled_grid

    rows, labels = [images.cpu().float()], ["input"]
    h = images.shape[-1]
    for name, tok in tokenizers.items():
        tok.eval()
        z, _, _ = tok.encode(images.to(_device_of(tok)).float())
        z = z.float().cpu()  # (B, N, C)
        flat = z.reshape(-1, z.shape[-1])
        flat = flat - flat.mean(0)
        _, _, v = torch.linalg.svd(flat, full_matrices=False)
        proj = (flat @ v[:3].T).reshape(z.shape[0], z.shape[1], 3)
        lo, hi = proj.amin((0, 1)), proj.amax((0, 1))
        proj = (proj - lo) / (hi - lo).clamp_min(1e-8)
        g = tok.grid_size
        pic = proj.transpose(1, 2).reshape(-1, 3, g, g)
        rows.append(torch.nn.functional.interpolate(pic, size=(h, h), mode="nearest"))
        labels.append(f"{name} PCA")
    return labelled_grid(rows, row_labels=labels, scale=scale // 2 or 1)


def default_images(img_size: int, num_shapes: int = 6, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Held-out embedded shapes plus the scikit-image photos, at ``img_size``, with names."""
    from ..data import PHOTO_NAMES, SHAPES_CLASSES, ShapesDataset, sample_photos

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
            "tau": W.FloatSlider(value=self._init["tau"], min=0.0, max=1.0, step=0.05, description="τ",
                                 continuous_update=False, style=style),
            "gamma": W.FloatSlider(value=self._init["gamma"], min=0.0, max=6.0, step=0.25, description="γ",
                                   continuous_update=False, style=style),
            "mask_ratio": W.FloatSlider(value=self._init["mask_ratio"], min=0.0, max=0.9, step=0.05,
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


__all__ = ["LatentExplorer", "corrupt_and_decode", "robustness_psnr", "robustness_curves", "latent_pca_image",
           "default_images"]
