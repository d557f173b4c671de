"""SiT: the DiT backbone trained with flow matching (official ``models/sit.py``, ``transport/``; notebook 06).

Same blocks as DiT (LayerNorm without affine, GELU MLP, fixed sin-cos positions) but C outputs
(the velocity), t ∈ [0, 1] fed directly to the timestep embedder, t ~ U[0, 1) in training, and
the adaptive dopri5 ODE sampler (atol 1e-6, rtol 1e-3). ``num_steps`` is then only the number of
points on the returned trajectory. ``generate(..., sampler="euler", shift=s)`` switches to a
fixed-step Euler sampler (notebook 06 compares steps vs quality). CFG guides all channels at
every t.
"""

from __future__ import annotations

from .base import register
from .dit import FLOW_TINY_DEFAULTS, PAPER_DEFAULTS, SIZES, AdaLNTransformer, _factory
from .flow import FlowMatching

SAMPLERS = ("dopri5", "euler")


class SiT(AdaLNTransformer):
    """Flow-matching transformer. Extra args: ``time_sampling`` (uniform | logit_normal),
    ``sampler`` (dopri5 | euler), ``shift`` (Euler timestep shift), ``atol``, ``rtol``,
    ``cfg_interval_start`` (no guidance while t < this; 0 = guidance everywhere)."""

    family = "SiT"
    default_num_steps = 250

    def __init__(self, in_channels=16, input_size=16, num_classes=1000, label_drop=0.1, *,
                 time_sampling="uniform", sampler="dopri5", shift=1.0, atol=1e-6, rtol=1e-3,
                 cfg_interval_start=0.0, **kw):
        super().__init__(in_channels, input_size, num_classes, label_drop, **kw)
        self.transport = FlowMatching(time_sampling)
        self._check_sampler(sampler, shift)
        self.sampler, self.shift, self.atol, self.rtol = sampler, float(shift), float(atol), float(rtol)
        self.cfg_interval_start = self._check_interval(cfg_interval_start)

    @staticmethod
    def _check_sampler(sampler, shift):
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler={sampler!r} is not known; allowed: {', '.join(SAMPLERS)}")
        if not isinstance(shift, (int, float)) or isinstance(shift, bool) or not shift > 0:
            raise ValueError(f"shift={shift!r} is out of range; allowed (0, inf)")

    @staticmethod
    def _check_interval(start) -> float:
        if isinstance(start, bool) or not isinstance(start, (int, float)) or not 0 <= start < 1:
            raise ValueError(f"cfg_interval_start={start!r} is out of range; allowed [0, 1)")
        return float(start)

    @property
    def last_nfe(self) -> int:
        """Network evaluations (per guided batch) of the last ``generate`` call."""
        return self.transport.last_nfe

    def combine_guidance(self, cond, uncond, cfg_scale, t, interval_start=None):
        """Guide all channels; where t < ``interval_start`` (default ``cfg_interval_start``) keep the
        conditional velocity: no guidance near pure noise, where it costs diversity (notebook 06)."""
        start = self.cfg_interval_start if interval_start is None else interval_start
        guided = uncond + cfg_scale * (cond - uncond)
        if start > 0:
            off = (t < start).reshape(-1, *([1] * (cond.ndim - 1)))
            guided = cond.where(off, guided)
        return guided

    def loss(self, latents, labels):
        return self.transport.training_losses(lambda xt, t: self.net(xt, t, labels), latents)["loss"].mean()

    def sample(self, labels, cfg_scale, num_steps, temperature, rng, return_trajectory, sampler=None, shift=None,
               cfg_interval_start=None):
        """Integrate from noise (scaled by ``temperature``) at t = 0 to data at t = 1. ``sampler``,
        ``shift`` and ``cfg_interval_start`` override the model's settings for this call."""
        sampler = self.sampler if sampler is None else sampler
        shift = self.shift if shift is None else shift
        self._check_sampler(sampler, shift)
        start = self.cfg_interval_start if cfg_interval_start is None else self._check_interval(cfg_interval_start)
        x0 = self.initial_noise(labels.shape[0], rng) * temperature

        def fn(x, t):
            return self.guided_net(x, t, labels, cfg_scale, interval_start=start)

        if sampler == "euler":
            return self.transport.sample_euler(fn, x0, num_steps, shift=shift, return_trajectory=return_trajectory)
        return self.transport.sample_dopri5(fn, x0, num_points=num_steps, atol=self.atol, rtol=self.rtol,
                                            return_trajectory=return_trajectory)


for _size in ("tiny", "small", "base", "large", "xl", "huge"):
    register(f"SiT_{_size}")(_factory(SiT, _size, FLOW_TINY_DEFAULTS if _size == "tiny" else PAPER_DEFAULTS))

__all__ = ["SiT", "SIZES"]
