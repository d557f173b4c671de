"""``OrderViewer``: watch tokens appear in raster-AR, random-AR and MAR order side by side (notebook 09).

One column per model, one row per sample. The ``step`` slider counts tokens generated so far
(0 … L): an AR model shows exactly ``step`` tokens; MAR, which reveals several tokens per
iteration on its cosine schedule, shows the last iteration that fits within ``step`` tokens.

Views:
- ``mask``: the final decoded sample with tokens not generated yet greyed out and those generated
  in the latest step outlined (needs a tokenizer);
- ``partial``: the tokenizer decodes the partial latents (not-yet-generated tokens are 0, the mean
  of the normalized latents) (needs a tokenizer);
- ``order``: the step at which each token appears, as colours (dark = early, bright = late);
  tokens not generated yet are grey. Works without a tokenizer.

Each model samples once per (label, seed) (cached); moving the step slider only re-draws.
"""

from __future__ import annotations

import ipywidgets as W
import numpy as np
import torch
from PIL import ImageDraw

from ..generators import decode_latents
from ..generators.mar import token_steps
from ..viz import labelled_grid
from .base import Panel

VIEWS = ("mask", "partial", "order")


def _viridis(x: np.ndarray) -> np.ndarray:
    """A small viridis-like colour ramp for values in [0, 1] → (..., 3) floats."""
    stops = np.array([[0.267, 0.005, 0.329], [0.230, 0.322, 0.546], [0.128, 0.567, 0.551],
                      [0.369, 0.789, 0.383], [0.993, 0.906, 0.144]])
    pos = np.clip(x, 0, 1) * (len(stops) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    frac = (pos - lo)[..., None]
    return stops[lo] * (1 - frac) + stops[lo + 1] * frac


class OrderViewer(Panel):
    """Step through generation for several token-by-token generators at once.

    Args:
        models: ``{column name: generator}`` (e.g. ``{"raster AR": ..., "random AR": ..., "MAR": ...}``);
            all must share the latent shape. Each needs ``generate(..., return_trajectory=True)``
            whose trajectory starts from an empty canvas (MAR, RasterAR, RandomAR).
        tokenizer: decodes latents for the ``mask`` and ``partial`` views (None: ``order`` only).
        class_names: names for the class dropdown (default ``class i``).
        label, seed, step, view: initial control values (step default: half the tokens).
        num_samples: rows; cfg_scale: guidance scale for every model; generate_kwargs: per-model extra
            ``generate`` keywords, ``{column name: {...}}`` (e.g. ``{"MAR": {"num_steps": 16}}``).
        scale: pixel zoom of each tile.
    """

    title = "Generation order: tokens appearing step by step"

    def __init__(self, models: dict, tokenizer=None, class_names=None, label: int = 0, seed: int = 0,
                 step: int | None = None, view: str | None = None, num_samples: int = 2, cfg_scale: float = 1.0,
                 generate_kwargs: dict | None = None, scale: int = 4):
        if not isinstance(models, dict) or not models:
            raise TypeError("models must be a non-empty dict {column name: generator}")
        shapes = set()
        for name, m in models.items():
            if not hasattr(m, "generate") or not hasattr(m, "latent_shape"):
                raise TypeError(f"models[{name!r}] must be a generator, got {type(m).__name__}")
            shapes.add(tuple(m.latent_shape))
        if len(shapes) != 1:
            raise ValueError(f"all models must share one latent shape, got {sorted(shapes)}")
        self.models = dict(models)
        self.tokenizer = tokenizer
        self.latent_shape = shapes.pop()
        first = next(iter(models.values()))
        self.grid = self.latent_shape[1]
        self.seq_len = self.grid * self.grid
        n = first.num_classes
        names = list(class_names) if class_names is not None else [f"class {i}" for i in range(n)]
        if len(names) != n:
            raise ValueError(f"class_names has {len(names)} names but the models have num_classes={n}")
        self.class_names = names
        if view is None:
            view = "mask" if tokenizer is not None else "order"
        if view not in VIEWS:
            raise ValueError(f"view={view!r} is not known; allowed: {', '.join(VIEWS)}")
        if view != "order" and tokenizer is None:
            raise ValueError(f"view={view!r} needs a tokenizer; pass tokenizer=... or use view='order'")
        step = self.seq_len // 2 if step is None else step
        self._check(label=label, seed=seed, step=step)
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples={num_samples!r} is invalid; allowed: an int >= 1")
        extra = dict(generate_kwargs or {})
        unknown = [k for k in extra if k not in self.models]
        if unknown:
            raise ValueError(f"generate_kwargs has unknown model {unknown[0]!r}; models: {', '.join(self.models)}")
        self.generate_kwargs = extra
        self.num_samples, self.cfg_scale, self.scale = num_samples, float(cfg_scale), int(scale)
        self._init = dict(step=int(step), view=view, label=int(label), seed=int(seed))
        self._cache: dict = {}
        super().__init__()

    def _check(self, label, seed, step, view=None):
        n = len(self.class_names)
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label <= n:
            raise ValueError(f"label={label!r} is out of range; allowed [0, {n}] ({n} = unconditional)")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed={seed!r} is invalid; allowed: an int >= 0")
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= self.seq_len:
            raise ValueError(f"step={step!r} is out of range; allowed [0, {self.seq_len}]")
        if view is not None:
            if view not in VIEWS:
                raise ValueError(f"view={view!r} is not known; allowed: {', '.join(VIEWS)}")
            if view != "order" and self.tokenizer is None:
                raise ValueError(f"view={view!r} needs a tokenizer; use view='order'")

    # -- controls -----------------------------------------------------------------------------

    def build_controls(self) -> dict:
        opts = [(name, i) for i, name in enumerate(self.class_names)] + [("unconditional", len(self.class_names))]
        views = [v for v in VIEWS if self.tokenizer is not None or v == "order"]
        return {
            "step": W.IntSlider(value=self._init["step"], min=0, max=self.seq_len, description="tokens",
                                continuous_update=True),
            "view": W.Dropdown(options=views, value=self._init["view"], description="view"),
            "label": W.Dropdown(options=opts, value=self._init["label"], description="class"),
            "seed": W.IntText(value=self._init["seed"], description="seed"),
        }

    # -- generation (cached) --------------------------------------------------------------------

    @torch.no_grad()
    def generation(self, name: str, label: int, seed: int) -> dict:
        """``{"traj": [latents per step], "steps": (B, h, w) step of appearance, "counts": tokens
        known after each step, "final_img": decoded final sample or None}`` for one model."""
        key = (name, int(label), int(seed))
        if key in self._cache:
            return self._cache[key]
        model = self.models[name]
        labels = torch.full((self.num_samples,), int(label), dtype=torch.long)
        gen = torch.Generator().manual_seed(int(seed))
        _, traj = model.generate(labels, cfg_scale=self.cfg_scale, rng=gen, return_trajectory=True,
                                 **self.generate_kwargs.get(name, {}))
        traj = [t.detach().cpu() for t in traj]
        steps = token_steps(traj)
        counts = [int((steps[0] <= k).sum()) if k else 0 for k in range(len(traj))]
        final_img = decode_latents(self.tokenizer, traj[-1]).cpu() if self.tokenizer is not None else None
        out = {"traj": traj, "steps": steps, "counts": counts, "final_img": final_img, "partial": {}}
        if len(self._cache) > 24:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = out
        return out

    @staticmethod
    def step_index(counts: list[int], tokens: int) -> int:
        """The last trajectory index whose number of known tokens is ≤ ``tokens``."""
        k = 0
        for i, c in enumerate(counts):
            if c <= tokens:
                k = i
        return k

    # -- drawing --------------------------------------------------------------------------------

    def _cells(self, img_hw: int) -> int:
        return max(1, img_hw // self.grid)

    def _tile(self, gen: dict, k: int, view: str) -> torch.Tensor:
        """(B, 3, H, W) for trajectory index ``k``."""
        steps = gen["steps"]  # (B, h, w)
        known = (steps <= k) & (k > 0)
        if view == "partial":
            if k not in gen["partial"]:
                gen["partial"][k] = decode_latents(self.tokenizer, gen["traj"][k]).cpu()
            return gen["partial"][k]
        if view == "order":
            last = max(len(gen["traj"]) - 1, 1)
            col = torch.from_numpy(_viridis(steps.numpy() / last)).float().permute(0, 3, 1, 2)
            grey = torch.full_like(col, 0.5)
            img = torch.where(known.unsqueeze(1), col, grey)
            rep = max(1, 32 // self.grid)
            return img.repeat_interleave(rep, -1).repeat_interleave(rep, -2)
        base = gen["final_img"]
        cell = self._cells(base.shape[-1])
        m = known.unsqueeze(1).float().repeat_interleave(cell, -1).repeat_interleave(cell, -2)
        return base * m + (0.35 + 0.15 * base) * (1 - m) * 0.6

    def _outline(self, pil, gens: list[dict], k_list: list[int], tile_px: int, label_width: int, top: int):
        """Outline the tokens generated in the latest step (red boxes) on the grid image."""
        draw = ImageDraw.Draw(pil)
        pad = 2 * self.scale
        cell = tile_px // self.grid
        for col, (gen, k) in enumerate(zip(gens, k_list)):
            if k == 0:
                continue
            new = gen["steps"] == k
            for row in range(new.shape[0]):
                ys, xs = torch.nonzero(new[row], as_tuple=True)
                x0 = label_width + pad + col * (tile_px + pad)
                y0 = top + row * (tile_px + 2 * pad + 0) + pad
                for y, x in zip(ys.tolist(), xs.tolist()):
                    draw.rectangle([x0 + x * cell, y0 + y * cell, x0 + (x + 1) * cell - 1, y0 + (y + 1) * cell - 1],
                                   outline=(230, 30, 30))
        return pil

    def render(self, step: int, view: str, label: int, seed: int):
        self._check(label=label, seed=seed, step=step, view=view)
        gens, ks, tiles, cols = [], [], [], []
        for name in self.models:
            gen = self.generation(name, label, seed)
            k = self.step_index(gen["counts"], step)
            gens.append(gen)
            ks.append(k)
            tiles.append(self._tile(gen, k, view))
            total = len(gen["traj"]) - 1
            cols.append(f"{name} - step {k}/{total}, {gen['counts'][k]} tok")
        rows = [torch.stack([t[r] for t in tiles]) for r in range(self.num_samples)]
        label_width = 60
        pil = labelled_grid(rows, row_labels=[f"sample {r}" for r in range(self.num_samples)], col_labels=cols,
                            scale=self.scale, label_width=label_width)
        if view == "mask":
            tile_px = tiles[0].shape[-1] * self.scale
            pil = self._outline(pil, gens, ks, tile_px, label_width, top=16)
        return pil

    def describe(self, params: dict) -> str:
        name = ("unconditional" if params["label"] == len(self.class_names)
                else self.class_names[params["label"]])
        return (f"{params['step']}/{self.seq_len} tokens &nbsp; view = {params['view']} &nbsp; class = {name} "
                f"&nbsp; seed = {params['seed']}")
