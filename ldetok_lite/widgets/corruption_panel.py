"""``CorruptionPanel``: sliders for τ, γ and the mask ratio (taught in ``01_latent_corruption``).

Two modes:

- **photo patches** (no tokenizer): each image is cut into ``patch_size`` patches, mapped to
  [-1, 1]; the patch tokens are masked and noised with the library's corruption functions and
  shown as images (masked patches grey);
- **tokenizer latents**: the images are encoded once (posterior mean) and cached; the latents
  of the visible tokens are noised and decoded (DeTok masks at the encoder input, so each mask
  ratio is encoded once and cached too).

The noise ε and the mask order are drawn once from a seeded generator and held fixed across
slider moves (masks are nested as the ratio grows); the "resample noise" button draws new ones.
``render(tau, gamma, mask_ratio, mode)`` is pure for the panel's current noise.
"""

from __future__ import annotations

import ipywidgets as W
import torch

from ..corruption import additive_noise, interpolative_noise, random_mask_indices
from ..viz import labelled_grid
from .base import Panel, check_range

MODES = ("interpolative", "additive")
TAU_MAX, GAMMA_MAX, MASK_MAX = 1.0, 6.0, 0.95  # slider ranges (all from 0)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, 3, H, W) → (B, N, patch·patch·3) row-major patch tokens."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(tokens: torch.Tensor, patch: int, grid: int) -> torch.Tensor:
    """Inverse of :func:`patchify` for a square ``grid``."""
    b = tokens.shape[0]
    x = tokens.reshape(b, grid, grid, patch, patch, 3).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, 3, grid * patch, grid * patch)


class CorruptionPanel(Panel):
    """Interactive τ / γ / mask-ratio panel on photo patches or on a tokenizer's latents.

    ``images``: (B, 3, H, W) or (3, H, W) in [0, 1] (at most ``max_images`` are shown).
    ``tokenizer``: a DeTok (its ``img_size`` must match); ``None`` for the photo-patch mode.
    """

    title = "Latent corruption: z' = (1-τ)·z + τ·γ·ε (interpolative) or z + τ·γ·ε (additive), random masking"

    def __init__(self, images: torch.Tensor, tokenizer=None, tau: float = 0.5, gamma: float = 3.0,
                 mask_ratio: float = 0.0, mode: str = "interpolative", patch_size: int = 8, seed: int = 0,
                 max_images: int = 4, scale: int = 2):
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a tensor (B, 3, H, W) in [0, 1], got {type(images).__name__}")
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images has shape {tuple(images.shape)}; allowed (B, 3, H, W) or (3, H, W)")
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not known; allowed: {', '.join(MODES)}")
        ranges = (("tau", tau, TAU_MAX), ("gamma", gamma, GAMMA_MAX), ("mask_ratio", mask_ratio, MASK_MAX))
        for name, value, hi in ranges:
            check_range(name, value, 0.0, hi)  # the sliders' ranges
        images = images[:max_images].float()
        self.tokenizer = tokenizer
        if tokenizer is not None:
            tokenizer.eval()
            device = next(tokenizer.parameters()).device
            self.images = tokenizer._check_images(images.to(device), "images")
            self.patch_size = tokenizer.patch_size
        else:
            h, w = images.shape[-2:]
            if h != w or h % patch_size:
                raise ValueError(f"images of size {h}x{w} cannot be cut into {patch_size}px patches; "
                                 "use square images whose size is divisible by patch_size")
            self.images = images
            self.patch_size = patch_size
        self.grid = self.images.shape[-1] // self.patch_size
        self.num_tokens = self.grid**2
        self.scale = scale
        self.seed = seed
        self._defaults = dict(tau=tau, gamma=gamma, mask_ratio=mask_ratio, mode=mode)
        self._generator = torch.Generator().manual_seed(seed)
        self._encoded: dict[float, tuple] = {}  # mask ratio -> (z, ids_keep, ids_restore)
        if tokenizer is not None:
            with torch.inference_mode():
                self._latent_shape = tokenizer.encode(self.images[:1])[0].shape[1:]
        else:
            self._latent_shape = (self.num_tokens, self.patch_size**2 * 3)
        self.resample_noise(refresh=False)
        super().__init__()

    # ---------------------------------------------------------------- controls

    def build_controls(self) -> dict:
        d = self._defaults
        slider = dict(continuous_update=False, readout_format=".2f", style={"description_width": "initial"})
        self.tau = W.FloatSlider(value=d["tau"], min=0.0, max=TAU_MAX, step=0.05, description="τ (noise level)",
                                 **slider)
        self.gamma = W.FloatSlider(value=d["gamma"], min=0.0, max=GAMMA_MAX, step=0.25, description="γ (noise scale)",
                                   **slider)
        self.mask_ratio = W.FloatSlider(value=d["mask_ratio"], min=0.0, max=MASK_MAX, step=0.05,
                                        description="mask ratio", **slider)
        self.mode = W.ToggleButtons(options=MODES, value=d["mode"], description="noise")
        return {"tau": self.tau, "gamma": self.gamma, "mask_ratio": self.mask_ratio, "mode": self.mode}

    def build_buttons(self) -> list:
        self.resample_button = W.Button(description="resample noise", icon="refresh")
        self.resample_button.on_click(lambda _b: self.resample_noise())
        return [self.resample_button]

    def resample_noise(self, refresh: bool = True) -> None:
        """Draw a new ε (per token position) and a new mask order from the panel's generator."""
        b = self.images.shape[0]
        self.eps = torch.randn((b, *self._latent_shape), generator=self._generator)
        self.mask_noise = torch.rand((b, self.num_tokens), generator=self._generator)
        self._encoded.clear()
        if refresh and getattr(self, "params", None) is not None:
            self._on_change()

    # ---------------------------------------------------------------- rendering

    def _encode(self, mask_ratio: float):
        """Cached encode (posterior mean) for one mask ratio: ``(z, ids_keep or None, ids_restore)``."""
        key = round(float(mask_ratio), 6)
        if key not in self._encoded:
            tok = self.tokenizer
            dev = self.images.device
            with torch.inference_mode():
                z, ids_restore, _ = tok.encode(self.images, mask_ratio=key, mask_noise=self.mask_noise.to(dev))
            ids_keep = None
            if ids_restore is not None:
                ids_keep = torch.argsort(ids_restore, dim=1)[:, : z.shape[1]]
            self._encoded[key] = (z, ids_keep, ids_restore)
        return self._encoded[key]

    def _mask_image(self, ids_keep) -> torch.Tensor:
        """The input images with the dropped patches painted grey."""
        if ids_keep is None:
            return self.images.cpu()
        keep = torch.zeros(self.images.shape[0], self.num_tokens, device=ids_keep.device)
        keep.scatter_(1, ids_keep, 1.0)
        keep = keep.view(-1, 1, self.grid, self.grid).float().cpu()
        keep = keep.repeat_interleave(self.patch_size, 2).repeat_interleave(self.patch_size, 3)
        return self.images.cpu() * keep + 0.5 * (1 - keep)

    def corrupt(self, tau: float, gamma: float, mask_ratio: float, mode: str = "interpolative"):
        """The corrupted tensors: ``(masked_input (B,3,H,W), output (B,3,H,W))`` in [0, 1]."""
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not known; allowed: {', '.join(MODES)}")
        noise_fn = interpolative_noise if mode == "interpolative" else additive_noise
        if self.tokenizer is None:
            tokens = patchify(self.images * 2 - 1, self.patch_size)
            noisy = noise_fn(tokens, tau, gamma, noise=self.eps)
            ids_keep = None
            if mask_ratio > 0:
                ids_keep, mask, _ = random_mask_indices(tokens.shape[0], self.num_tokens, mask_ratio,
                                                        noise=self.mask_noise)
                noisy = torch.where(mask[..., None].bool(), torch.zeros_like(noisy), noisy)  # grey = 0
            out = (unpatchify(noisy, self.patch_size, self.grid) * 0.5 + 0.5).clamp(0, 1)
            return self._mask_image(ids_keep), out
        z, ids_keep, ids_restore = self._encode(mask_ratio)
        eps = self.eps.to(z.device)
        if ids_keep is not None:  # ε is fixed per token position, so gather it for the kept tokens
            eps = torch.gather(eps, 1, ids_keep[..., None].expand(-1, -1, eps.shape[-1]))
        with torch.inference_mode():
            noisy = noise_fn(z, tau, gamma, noise=eps)
            out = self.tokenizer.decode(noisy, ids_restore).clamp(0, 1)
        return self._mask_image(ids_keep), out.cpu()

    def render(self, tau: float = 0.5, gamma: float = 3.0, mask_ratio: float = 0.0, mode: str = "interpolative"):
        """Pure: a labelled grid (rows: original, masked input, corrupted output)."""
        masked, out = self.corrupt(tau, gamma, mask_ratio, mode)
        last = "noised patches" if self.tokenizer is None else "decoded from noisy z"
        rows = [self.images.cpu(), masked, out]
        labels = ["original", f"mask {mask_ratio:.2f}", last]
        return labelled_grid(rows, row_labels=labels, scale=self.scale)

    def describe(self, params: dict) -> str:
        tau, gamma = params["tau"], params["gamma"]
        sig = 1 - tau if params["mode"] == "interpolative" else 1.0
        return (f"τ = {tau:.2f}, γ = {gamma:.2f}, mask ratio = {params['mask_ratio']:.2f}, {params['mode']}: "
                f"signal weight {sig:.2f}, noise std τ·γ = {tau * gamma:.2f}")
