"""``SamplerPanel``: class, guidance scale, steps and seed for any generator, and the trajectory from noise to
image (notebooks 05-07; Generators II reuse it for MAR and the AR models).

Sampling is the expensive step, so moving a control does **not** resample: the readout says the
settings changed and the **Generate** button renders. The first display and ``static()`` render
once with the defaults. ``render(label, cfg_scale, num_steps, seed)`` is pure: the same parameters give
the same image (results are cached per parameter set).

Each row is one sample; columns are evenly spaced points of ``model.generate(...,
return_trajectory=True)``, from the initial noise (left) to the final sample (right), all decoded
by the tokenizer. For DiT the intermediate columns are the noisy x_t; for flows the ODE state;
for MAR and the AR models, which start from an **empty canvas** (no token known), the partly
filled latent grid. Rows are labelled ``seed s #r``: sample ``r`` of the batch drawn with seed ``s``.

The readout under the image always describes the image shown (with its network evaluations,
also for a cached render); pressing Generate with unchanged settings says so instead of
silently re-showing the same figure. Initial values outside the controls' ranges raise a
``ValueError`` (a slider would clamp them).
"""

from __future__ import annotations

import ipywidgets as W
import torch

from ..generators import decode_latents
from ..viz import labelled_grid
from .base import Panel, check_range

EMPTY_CANVAS_FAMILIES = ("MAR", "ARDiff", "RasterAR", "RandomAR")  # trajectories start with no token known


def pick_frames(num_points: int, num_frames: int) -> list[int]:
    """``num_frames`` evenly spaced indices into a trajectory of ``num_points`` (first and last kept)."""
    if num_points <= num_frames:
        return list(range(num_points))
    step = (num_points - 1) / (num_frames - 1)
    return sorted({round(i * step) for i in range(num_frames)})


class SamplerPanel(Panel):
    """Interactive sampler for a generator trained on a tokenizer's normalized latents.

    Args:
        model: a :class:`ldetok_lite.generators.Generator`.
        tokenizer: decodes latents (``detokenize``), with the latent statistics the model was
            trained with already set.
        class_names: names for the class dropdown (default: ``class 0`` …); an extra entry
            "unconditional" uses the null class.
        label, cfg_scale, num_steps, seed: initial control values.
        num_samples: rows (samples) per render; num_frames: trajectory columns.
        max_steps / max_cfg: slider ranges (``cfg_scale`` must lie in [1, max_cfg] and
            ``num_steps`` in [1, max_steps]; the model's default step count is capped at max_steps).
    """

    title = "Sampler: noise → image (press Generate after changing a setting)"

    def __init__(self, model, tokenizer, class_names=None, label: int = 0, cfg_scale: float = 1.0,
                 num_steps: int | None = None, seed: int = 0, num_samples: int = 4, num_frames: int = 8,
                 max_steps: int = 250, max_cfg: float = 8.0, scale: int = 2, sampler_kwargs: dict | None = None):
        if not hasattr(model, "generate") or not hasattr(model, "num_classes"):
            raise TypeError(f"model must be a generator (create_generator), got {type(model).__name__}")
        if not hasattr(tokenizer, "detokenize"):
            raise TypeError(f"tokenizer must have detokenize(), got {type(tokenizer).__name__}")
        n = model.num_classes
        names = list(class_names) if class_names is not None else [f"class {i}" for i in range(n)]
        if len(names) != n:
            raise ValueError(f"class_names has {len(names)} names but the model has num_classes={n}")
        if not isinstance(label, int) or not 0 <= label <= n:
            raise ValueError(f"label={label!r} is out of range; allowed [0, {n}] ({n} = unconditional)")
        for key, v, lo in (("num_samples", num_samples, 1), ("num_frames", num_frames, 2), ("max_steps", max_steps, 1)):
            if not isinstance(v, int) or v < lo:
                raise ValueError(f"{key}={v!r} is invalid; allowed: an int >= {lo}")
        self.model = model
        self.tokenizer = tokenizer
        self.class_names = names
        self.num_samples, self.num_frames, self.scale = num_samples, num_frames, scale
        self.sampler_kwargs = dict(sampler_kwargs or {})
        check_range("max_cfg", max_cfg, 1.0, float("inf"))
        check_range("cfg_scale", cfg_scale, 1.0, max_cfg)
        if num_steps is None:
            num_steps = min(int(model.default_num_steps), max_steps)
        check_range("num_steps", num_steps, 1, max_steps, integer=True)
        check_range("seed", seed, 0, float("inf"), integer=True)
        self.starts_empty = getattr(model, "family", "") in EMPTY_CANVAS_FAMILIES
        self.start_label = "empty canvas" if self.starts_empty else "noise"
        self.title = f"Sampler: {self.start_label} → image (press Generate after changing a setting)"
        self._init = dict(label=label, cfg_scale=float(cfg_scale), num_steps=int(num_steps), seed=int(seed))
        self._max_steps, self._max_cfg = max_steps, float(max_cfg)
        self._cache: dict = {}
        self._nfe: dict = {}  # settings -> network evaluations of that sampling run
        self.last_nfe: int | None = None
        super().__init__()

    def build_controls(self) -> dict:
        opts = [(name, i) for i, name in enumerate(self.class_names)] + [("unconditional", self.model.num_classes)]
        return {
            "label": W.Dropdown(options=opts, value=self._init["label"], description="class"),
            "cfg_scale": W.FloatSlider(value=self._init["cfg_scale"], min=1.0, max=self._max_cfg, step=0.25,
                                 description="cfg scale", continuous_update=False),
            "num_steps": W.IntSlider(value=self._init["num_steps"], min=1, max=self._max_steps,
                                     description="steps", continuous_update=False),
            "seed": W.IntText(value=self._init["seed"], description="seed"),
        }

    def build_buttons(self) -> list:
        self.generate_button = W.Button(description="Generate", button_style="primary", icon="play")
        self.generate_button.on_click(lambda _b: self._on_generate())
        return [self.generate_button]

    def _on_generate(self):
        unchanged = self.last_params is not None and self.last_error is None \
            and self.current_params() == self.last_params
        if not unchanged:
            self.status.value = "sampling…"
        try:
            self.refresh()
        except Exception:
            return  # shown in ``status`` and kept in ``last_error`` by Panel.refresh
        if unchanged:
            self.status.value += (" &nbsp; <i>(nothing changed: these settings give this same sample; "
                                  "change the seed for new ones)</i>")

    def _on_change(self, _change=None):
        """Controls only mark the figure stale; sampling waits for the Generate button."""
        if self.last_params is None:
            return self._on_generate()
        if self.current_params() != self.last_params:
            self.status.value = "settings changed: press <b>Generate</b>"

    def describe(self, params: dict) -> str:
        name = "unconditional" if params["label"] == self.model.num_classes else self.class_names[params["label"]]
        nfe = f" &nbsp; network evaluations = {self.last_nfe}" if self.last_nfe else ""
        return (f"{type(self.model).__name__}: {name}, cfg = {params['cfg_scale']:.3g}, steps = {params['num_steps']}, "
                f"seed = {params['seed']}{nfe}")

    @torch.no_grad()
    def trajectory(self, label: int, cfg_scale: float, num_steps: int, seed: int):
        """(frame indices, list of decoded frames (num_samples, 3, H, W)) for these settings."""
        key = (int(label), float(cfg_scale), int(num_steps), int(seed))
        if key in self._cache:
            self.last_nfe = self._nfe.get(key)
            return self._cache[key]
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed={seed!r} is invalid; allowed: an int >= 0")
        gen = torch.Generator().manual_seed(seed)
        labels = torch.full((self.num_samples,), int(label), dtype=torch.long)
        _, traj = self.model.generate(labels, cfg_scale=cfg_scale, num_steps=num_steps, rng=gen,
                                      return_trajectory=True,
                                      **self.sampler_kwargs)
        self.last_nfe = getattr(self.model, "last_nfe", None)
        self._nfe[key] = self.last_nfe
        idx = pick_frames(len(traj), self.num_frames)
        frames = [decode_latents(self.tokenizer, traj[i]).cpu() for i in idx]
        if len(self._cache) > 16:
            oldest = next(iter(self._cache))
            self._cache.pop(oldest)
            self._nfe.pop(oldest, None)
        self._cache[key] = (idx, frames, len(traj))
        return self._cache[key]

    def render(self, label: int, cfg_scale: float, num_steps: int, seed: int):
        idx, frames, n = self.trajectory(label, cfg_scale, num_steps, seed)
        rows = [torch.stack([f[i] for f in frames]) for i in range(self.num_samples)]
        last = n - 1
        cols = [self.start_label if i == 0 else ("sample" if i == last else f"{i}/{last}") for i in idx]
        return labelled_grid(rows, row_labels=[f"seed {seed} #{r}" for r in range(self.num_samples)],
                             col_labels=cols, scale=self.scale, label_width=80)
