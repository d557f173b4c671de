"""Flow matching on the linear path, and ODE samplers (official ``transport/``; notebook 06).

Convention of the paper's code (SiT "transport"): **t = 0 is noise, t = 1 is data**,

    x_t = t·x₁ + (1 − t)·x₀,   x₁ = data, x₀ ~ N(0, I),   target velocity u = x₁ − x₀,

and the loss is the mean squared error between the predicted and the target velocity. Training
times: ``uniform`` t ~ U[0, 1) (SiT) or ``logit_normal`` t = sigmoid(N(μ, σ²)) (LightningDiT).

Sampling integrates dx/dt = v(x, t) from t = 0 (noise) to t = 1 (data):

- :meth:`FlowMatching.sample_dopri5`: adaptive Dormand–Prince (torchdiffeq), atol 1e-6, rtol 1e-3
  (SiT). ``num_points`` is only the number of output grid points (the trajectory), not the NFE.
- :meth:`FlowMatching.sample_euler`: ``num_steps`` Euler steps over the shifted grid
  t′ = s·t/(1 + (s − 1)·t) (LightningDiT, s = 0.3: small s packs steps near the noise end).
  The official ``num_sampling_steps = N`` grid points correspond to ``num_steps = N − 1`` here.

Like :mod:`.diffusion`, everything works on any (B, ...) tensor.
"""

from __future__ import annotations

from typing import Callable

import torch

from .diffusion import mean_flat, randn_like_on

TIME_SAMPLINGS = ("uniform", "logit_normal")


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Timestep shift t′ = s·t / (1 + (s − 1)·t); s = 1 is the identity, t′(0) = 0, t′(1) = 1."""
    if not shift > 0:
        raise ValueError(f"shift={shift!r} is out of range; allowed (0, inf)")
    return shift * t / (1 + (shift - 1) * t)


def _bcast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (x.ndim - 1)))


class FlowMatching:
    """The linear interpolant with velocity prediction.

    Args:
        time_sampling: ``uniform`` or ``logit_normal`` (sigmoid of N(``logit_mean``, ``logit_std``²)).
    """

    def __init__(self, time_sampling: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0):
        if time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"time_sampling={time_sampling!r} is not known; allowed: {', '.join(TIME_SAMPLINGS)}")
        if not logit_std > 0:
            raise ValueError(f"logit_std={logit_std!r} is out of range; allowed (0, inf)")
        self.time_sampling = time_sampling
        self.logit_mean = float(logit_mean)
        self.logit_std = float(logit_std)
        self.last_nfe = 0  # function evaluations of the last sampling call

    def __repr__(self):
        return f"FlowMatching(time_sampling={self.time_sampling!r})"

    # -- training ------------------------------------------------------------------------------

    def sample_t(self, batch: int, device, rng: torch.Generator | None = None) -> torch.Tensor:
        """Training times (B,) in [0, 1)."""
        gdev = rng.device if rng is not None else device
        if self.time_sampling == "uniform":
            t = torch.rand(batch, generator=rng, device=gdev)
        else:
            n = torch.randn(batch, generator=rng, device=gdev)
            t = torch.sigmoid(self.logit_mean + self.logit_std * n)
        return t.to(device)

    @staticmethod
    def interpolate(x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor):
        """(x_t, u): x_t = t·x₁ + (1 − t)·x₀ and the velocity u = x₁ − x₀."""
        tb = _bcast(t, x1)
        return tb * x1 + (1 - tb) * x0, x1 - x0

    def training_losses(self, model_fn: Callable, x1: torch.Tensor, t: torch.Tensor | None = None,
                        noise: torch.Tensor | None = None, rng: torch.Generator | None = None) -> dict:
        """Per-row ``{"loss"}`` (B,) = mean‖v(x_t, t) − (x₁ − x₀)‖²; ``model_fn(x_t, t)`` gets t in [0, 1]."""
        x1 = x1.float()
        if t is None:
            t = self.sample_t(x1.shape[0], x1.device, rng)
        if noise is None:
            noise = randn_like_on(x1.shape, x1, rng)
        x_t, u = self.interpolate(x1, noise, t)
        v = model_fn(x_t, t).float()
        if v.shape != x1.shape:
            raise ValueError(f"velocity shape {tuple(v.shape)} does not match data {tuple(x1.shape)}")
        return {"loss": mean_flat((v - u) ** 2)}

    # -- sampling ------------------------------------------------------------------------------

    @torch.no_grad()
    def sample_euler(self, model_fn: Callable, x0: torch.Tensor, num_steps: int, shift: float = 1.0,
                     return_trajectory: bool = False):
        """``num_steps`` Euler steps from t = 0 to 1 on the shifted grid; returns x₁ or (x₁, trajectory)."""
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps={num_steps!r} is invalid; allowed: an int >= 1")
        ts = shift_time(torch.linspace(0, 1, num_steps + 1, dtype=torch.float64), shift).tolist()
        x = x0.float()
        traj = [x] if return_trajectory else None
        for t0, t1 in zip(ts[:-1], ts[1:]):
            t = torch.full((x.shape[0],), t0, device=x.device)
            x = x + (t1 - t0) * model_fn(x, t).float()
            if traj is not None:
                traj.append(x)
        self.last_nfe = num_steps
        return (x, traj) if return_trajectory else x

    @torch.no_grad()
    def sample_dopri5(self, model_fn: Callable, x0: torch.Tensor, num_points: int = 2, atol: float = 1e-6,
                      rtol: float = 1e-3, return_trajectory: bool = False):
        """Adaptive dopri5 from t = 0 to 1 (torchdiffeq); the trajectory has ``max(num_points, 2)``
        evenly spaced points. ``self.last_nfe`` counts the function evaluations it took."""
        from torchdiffeq import odeint

        nfe = [0]

        def f(t, x):
            nfe[0] += 1
            return model_fn(x, t.expand(x.shape[0]).to(x.dtype)).float()

        grid = torch.linspace(0, 1, max(int(num_points), 2), device=x0.device, dtype=torch.float32)
        xs = odeint(f, x0.float(), grid, method="dopri5", atol=atol, rtol=rtol)
        self.last_nfe = nfe[0]
        return (xs[-1], list(xs.unbind(0))) if return_trajectory else xs[-1]
