"""Gaussian diffusion (DDPM / ADM style) for DiT and the DiffLoss head (official ``diffusion/``,
``models/dit.py``, ``models/diffloss.py``).

One object, :class:`GaussianDiffusion`, holds a β schedule of ``num_timesteps`` steps and every
quantity derived from it. It is shape-agnostic: ``x`` is any tensor ``(B, C, ...)`` — an image of
latents ``(B, C, h, w)`` for DiT, or token rows ``(B*N, C)`` for DiffLoss. Channel dim is 1.

- Forward process q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)                 (DDPM eq. 4)
- Posterior q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I)                         (DDPM eq. 6-7)
- ε-prediction; with ``learn_sigma`` the model outputs 2C channels ``[ε, v]`` and the variance is
  the learned range  log σ² = f log β_t + (1 − f) log β̃_t,  f = (v + 1)/2  (Improved DDPM eq. 15)
- Loss = MSE(ε) + L_vb (in bits, with the mean frozen: only the variance learns from it)
  (Improved DDPM §3.1, "hybrid" loss without the λ=0.001 rescale, as the paper's code uses).
- Respacing: :meth:`respace` returns a diffusion over a subset of the original steps with the same
  ᾱ at those steps; the model still receives the *original* timestep indices (``timestep_map``).
- Sampling: ancestral, ``x_{t-1} = μ + σ · temperature · z`` (temperature scales the noise, as
  MAR/DiffLoss do; official ``models/mar.py``).

Notebook 05 builds q(x_t|x_0), the ε loss and the VB term from scratch and asserts them against
this module.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

SCHEDULES = ("linear", "cosine")


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------


def get_betas(schedule: str, num_timesteps: int = 1000) -> torch.Tensor:
    """β_1..β_T as float64.

    ``linear``: ADM's linear schedule, 1e-4 → 0.02 at T = 1000, both ends scaled by 1000/T.
    ``cosine``: ᾱ(t) = cos²(((t/T) + s)/(1 + s) · π/2), s = 0.008, β_t = min(1 − ᾱ(t+1)/ᾱ(t), 0.999)
    (Improved DDPM eq. 17).
    """
    if not isinstance(num_timesteps, int) or isinstance(num_timesteps, bool) or num_timesteps < 1:
        raise ValueError(f"num_timesteps={num_timesteps!r} is invalid; allowed: an int >= 1")
    if schedule == "linear":
        scale = 1000.0 / num_timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64, device="cpu")
    if schedule == "cosine":
        s = 0.008

        def abar(t):
            return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2

        betas = [min(1 - abar((i + 1) / num_timesteps) / abar(i / num_timesteps), 0.999)
                 for i in range(num_timesteps)]
        return torch.tensor(betas, dtype=torch.float64, device="cpu")
    raise ValueError(f"schedule={schedule!r} is not known; allowed: {', '.join(SCHEDULES)}")


def space_timesteps(num_timesteps: int, num_steps: int) -> list[int]:
    """``num_steps`` evenly spaced original step indices in [0, T−1], always including 0 and T−1
    when ``num_steps`` ≥ 2 (ADM ``space_timesteps`` with one section)."""
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps={num_steps!r} is out of range; allowed [1, {num_timesteps}]")
    if num_steps == 1:
        return [num_timesteps - 1]
    stride = (num_timesteps - 1) / (num_steps - 1)
    return sorted({int(round(i * stride)) for i in range(num_steps)})


# ---------------------------------------------------------------------------------------------
# Gaussian helpers (KL and the discretised decoder likelihood, in nats)
# ---------------------------------------------------------------------------------------------


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x):
    """Fast tanh approximation of Φ(x) used by ADM's decoder likelihood."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, means, log_scales, bin_width: float = 2.0 / 255):
    """log p(x) for x binned with ``bin_width`` under N(means, e^{2 log_scales}) (DDPM §3.3).

    The paper's code keeps the 8-bit image bins even for latents; we do the same for fidelity.
    """
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + bin_width / 2))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - bin_width / 2))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(
        x < -0.999, log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))),
    )


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dim except the batch dim: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def randn_like_on(shape, like: torch.Tensor | torch.device, rng: torch.Generator | None = None,
                  dtype=torch.float32) -> torch.Tensor:
    """N(0, I) of ``shape`` on the device of ``like``; draws from ``rng`` on its own device
    (so a CPU rng gives the same numbers whatever device the model is on)."""
    device = like.device if isinstance(like, torch.Tensor) else torch.device(like)
    if rng is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=rng, device=rng.device, dtype=dtype).to(device)


# ---------------------------------------------------------------------------------------------
# The diffusion
# ---------------------------------------------------------------------------------------------


class GaussianDiffusion:
    """A discrete-time Gaussian diffusion with ε-prediction (and optionally learned-range variance).

    Args:
        num_timesteps: T of the base schedule (1000 in the paper).
        schedule: ``"linear"`` (DiT) or ``"cosine"`` (DiffLoss); or pass ``betas`` directly.
        learn_sigma: the model outputs ``2C`` channels ``[ε, v]`` (True in the paper's code);
            otherwise ``C`` channels and the fixed variance β̃_t is used.
        betas: an explicit β vector (used by :meth:`respace`).
        timestep_map: original step index for each step of this (respaced) diffusion.

    ``model_fn(x_t, t)`` everywhere receives ``t`` already mapped to the original indices.
    """

    def __init__(self, num_timesteps: int = 1000, schedule: str = "linear", learn_sigma: bool = True,
                 betas: torch.Tensor | None = None, timestep_map: list[int] | None = None):
        if betas is None:
            betas = get_betas(schedule, num_timesteps)
        betas = torch.as_tensor(betas, dtype=torch.float64, device="cpu")
        if betas.ndim != 1 or not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must be a 1-D vector with values in (0, 1]")
        self.schedule = schedule
        self.learn_sigma = bool(learn_sigma)
        self.betas = betas
        self.num_timesteps = int(betas.shape[0])
        self.timestep_map = torch.as_tensor(
            list(range(self.num_timesteps)) if timestep_map is None else list(timestep_map), dtype=torch.long,
            device="cpu")

        alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(alphas, dim=0)
        one = torch.ones(1, dtype=torch.float64, device="cpu")
        self.alphas_cumprod_prev = torch.cat([one, self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.one_minus_alphas_cumprod = 1.0 - self.alphas_cumprod
        self.log_one_minus_alphas_cumprod = torch.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = (1.0 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1).sqrt()
        # posterior q(x_{t-1} | x_t, x_0)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # β̃_0 = 0: clip the log with β̃_1 (as ADM does)
        pv = self.posterior_variance
        self.posterior_log_variance_clipped = torch.log(torch.cat([pv[1:2], pv[1:]])) if len(pv) > 1 \
            else torch.log(betas.clone())
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * alphas.sqrt() / (1.0 - self.alphas_cumprod)
        self._cache: dict = {}

    def __repr__(self):
        return (f"GaussianDiffusion(num_timesteps={self.num_timesteps}, schedule={self.schedule!r}, "
                f"learn_sigma={self.learn_sigma})")

    # -- helpers -----------------------------------------------------------------------------

    def _extract(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``self.<name>[t]`` as float32 on x's device, shaped (B, 1, 1, ...) to broadcast over x."""
        key = (name, x.device)
        arr = self._cache.get(key)
        if arr is None:
            arr = getattr(self, name).to(device=x.device, dtype=torch.float32)
            self._cache[key] = arr
        out = arr[t.to(x.device).long()]
        return out.reshape(out.shape[0], *([1] * (x.ndim - 1)))

    def map_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Indices of this diffusion -> the original step indices the model was trained on."""
        return self.timestep_map.to(t.device)[t.long()]

    def respace(self, num_steps: int) -> "GaussianDiffusion":
        """A diffusion over ``num_steps`` evenly spaced original steps with the same ᾱ there
        (β'_i = 1 − ᾱ_{s_i}/ᾱ_{s_{i-1}}; Improved DDPM §4). Returns ``self`` when nothing changes."""
        base_map = self.timestep_map.tolist()
        keep = space_timesteps(self.num_timesteps, num_steps)
        if len(keep) == self.num_timesteps:
            return self
        betas, last = [], 1.0
        for i in keep:
            abar = float(self.alphas_cumprod[i])
            betas.append(1.0 - abar / last)
            last = abar
        return GaussianDiffusion(schedule=self.schedule, learn_sigma=self.learn_sigma,
                                 betas=torch.tensor(betas, dtype=torch.float64, device="cpu"),
                                 timestep_map=[base_map[i] for i in keep])

    def sample_timesteps(self, batch: int, device, rng: torch.Generator | None = None) -> torch.Tensor:
        """t ~ U{0, …, T−1}, one per row."""
        gdev = rng.device if rng is not None else device
        return torch.randint(0, self.num_timesteps, (batch,), generator=rng, device=gdev).to(device)

    # -- forward process ---------------------------------------------------------------------

    def q_mean_variance(self, x_start, t):
        """Mean, variance and log-variance of q(x_t | x_0)."""
        mean = self._extract("sqrt_alphas_cumprod", t, x_start) * x_start
        var = self._extract("one_minus_alphas_cumprod", t, x_start).expand_as(x_start)
        return mean, var, self._extract("log_one_minus_alphas_cumprod", t, x_start).expand_as(x_start)

    def q_sample(self, x_start, t, noise=None, rng=None):
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (DDPM eq. 4)."""
        if noise is None:
            noise = randn_like_on(x_start.shape, x_start, rng, dtype=x_start.dtype)
        return (self._extract("sqrt_alphas_cumprod", t, x_start) * x_start
                + self._extract("sqrt_one_minus_alphas_cumprod", t, x_start) * noise)

    def q_posterior_mean_variance(self, x_start, x_t, t):
        """μ̃_t(x_t, x_0), β̃_t and log β̃_t (clipped) of q(x_{t-1} | x_t, x_0) (DDPM eq. 7)."""
        mean = (self._extract("posterior_mean_coef1", t, x_t) * x_start
                + self._extract("posterior_mean_coef2", t, x_t) * x_t)
        var = self._extract("posterior_variance", t, x_t).expand_as(x_t)
        logvar = self._extract("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        return mean, var, logvar

    def predict_xstart_from_eps(self, x_t, t, eps):
        """x̂_0 = (x_t − √(1 − ᾱ_t) ε̂)/√ᾱ_t."""
        return (self._extract("sqrt_recip_alphas_cumprod", t, x_t) * x_t
                - self._extract("sqrt_recipm1_alphas_cumprod", t, x_t) * eps)

    # -- reverse process ---------------------------------------------------------------------

    def split_output(self, model_output: torch.Tensor, x: torch.Tensor):
        """(ε̂, v or None) from a model output of 2C (learn_sigma) or C channels on dim 1."""
        c = x.shape[1]
        want = 2 * c if self.learn_sigma else c
        if model_output.shape[0] != x.shape[0] or model_output.shape[1] != want \
                or model_output.shape[2:] != x.shape[2:]:
            raise ValueError(f"model output shape {tuple(model_output.shape)} does not match x "
                             f"{tuple(x.shape)}; expected {want} channels on dim 1")
        if self.learn_sigma:
            return model_output[:, :c], model_output[:, c:]
        return model_output, None

    def p_mean_variance(self, model_output, x_t, t, clip_denoised: bool = False):
        """Mean and (log-)variance of p(x_{t-1} | x_t) from a model output.

        Returns a dict: mean, variance, log_variance, pred_xstart, eps.
        """
        model_output = model_output.float()
        eps, v = self.split_output(model_output, x_t)
        if v is not None:  # learned range between β̃_t (min) and β_t (max)
            min_log = self._extract("posterior_log_variance_clipped", t, x_t)
            max_log = torch.log(self._extract("betas", t, x_t))
            frac = (v + 1) / 2
            log_var = frac * max_log + (1 - frac) * min_log
        else:
            log_var = self._extract("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        pred_x0 = self.predict_xstart_from_eps(x_t, t, eps)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_x0, x_t, t)
        return {"mean": mean, "variance": log_var.exp(), "log_variance": log_var,
                "pred_xstart": pred_x0, "eps": eps}

    def vb_terms_bpd(self, model_output, x_start, x_t, t):
        """L_vb per row in bits/dim: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0 and the
        discretised decoder NLL −log p(x_0|x_1) at t = 0 (DDPM eq. 5)."""
        true_mean, _, true_logvar = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance(model_output, x_t, t)
        kl = mean_flat(normal_kl(true_mean, true_logvar, out["mean"], out["log_variance"])) / math.log(2.0)
        nll = -mean_flat(discretized_gaussian_log_likelihood(
            x_start, out["mean"], 0.5 * out["log_variance"])) / math.log(2.0)
        return torch.where(t.to(kl.device) == 0, nll, kl)

    def training_losses(self, model_fn: Callable, x_start: torch.Tensor, t: torch.Tensor | None = None,
                        noise: torch.Tensor | None = None, rng: torch.Generator | None = None) -> dict:
        """Per-row losses ``{"loss", "mse", "vb"}`` (each (B,)); ``loss = mse + vb``.

        ``model_fn(x_t, t_original)`` returns (B, 2C, ...) or (B, C, ...). The VB term sees the
        ε̂ half detached, so it only trains the variance (Improved DDPM §3.1).
        """
        x_start = x_start.float()
        if t is None:
            t = self.sample_timesteps(x_start.shape[0], x_start.device, rng)
        if noise is None:
            noise = randn_like_on(x_start.shape, x_start, rng)
        x_t = self.q_sample(x_start, t, noise)
        out = model_fn(x_t, self.map_timesteps(t)).float()
        eps, v = self.split_output(out, x_t)
        terms = {"mse": mean_flat((noise - eps) ** 2)}
        if v is not None:
            frozen = torch.cat([eps.detach(), v], dim=1)
            terms["vb"] = self.vb_terms_bpd(frozen, x_start, x_t, t)
        else:
            terms["vb"] = torch.zeros_like(terms["mse"])
        terms["loss"] = terms["mse"] + terms["vb"]
        return terms

    @torch.no_grad()
    def p_sample(self, model_fn, x, t, temperature: float = 1.0, rng=None, clip_denoised=False):
        """One ancestral step x_t -> x_{t-1} = μ + σ·temperature·z (no noise at t = 0)."""
        out = self.p_mean_variance(model_fn(x, self.map_timesteps(t)), x, t, clip_denoised)
        noise = randn_like_on(x.shape, x, rng)
        nonzero = (t != 0).float().reshape(-1, *([1] * (x.ndim - 1)))
        return out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise * temperature, out

    @torch.no_grad()
    def p_sample_loop(self, model_fn: Callable, shape, noise: torch.Tensor | None = None,
                      temperature: float = 1.0, rng: torch.Generator | None = None,
                      device=None, return_trajectory: bool = False, clip_denoised: bool = False,
                      progress: bool = False):
        """Ancestral sampling over all steps of this diffusion (respace first for fewer steps).

        Returns x_0, or ``(x_0, [x_T, …, x_0])`` with ``return_trajectory``.
        """
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature={temperature!r} is out of range; allowed (0, inf)")
        if device is None:
            device = noise.device if noise is not None else torch.device("cpu")
        x = noise.float() if noise is not None else randn_like_on(tuple(shape), torch.device(device), rng)
        traj = [x] if return_trajectory else None
        steps = range(self.num_timesteps - 1, -1, -1)
        if progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps, leave=False)
        for i in steps:
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            x, _ = self.p_sample(model_fn, x, t, temperature, rng, clip_denoised)
            if traj is not None:
                traj.append(x)
        return (x, traj) if return_trajectory else x
