"""Gaussian diffusion: schedules, q(x_t|x_0), posterior, learned range, VB, respacing, sampling."""

import math

import pytest
import torch

from ldetok_lite.generators.diffusion import (
    GaussianDiffusion,
    discretized_gaussian_log_likelihood,
    get_betas,
    normal_kl,
    space_timesteps,
)


def test_linear_schedule_closed_form():
    b = get_betas("linear", 1000)
    assert b.shape == (1000,) and b.dtype == torch.float64
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    assert torch.allclose(b[1:] - b[:-1], torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))
    # ADM scales both ends by 1000/T
    b100 = get_betas("linear", 100)
    assert b100[0].item() == pytest.approx(1e-3) and b100[-1].item() == pytest.approx(0.2)


def test_cosine_schedule_closed_form():
    T, s = 1000, 0.008
    d = GaussianDiffusion(T, "cosine")

    def f(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    for t in (0, 10, 500, 900):  # ᾱ_t = f(t+1)/f(0) where β is not clipped
        assert d.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert d.betas.max().item() <= 0.999 + 1e-12
    assert d.betas[-1].item() == pytest.approx(0.999)


def test_derived_quantities():
    d = GaussianDiffusion(50, "linear")
    ab = torch.cumprod(1 - d.betas, 0)
    assert torch.allclose(d.alphas_cumprod, ab)
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    assert torch.allclose(d.posterior_variance, d.betas * (1 - ab_prev) / (1 - ab))
    assert d.posterior_variance[0].item() == 0.0
    assert d.posterior_log_variance_clipped[0] == d.posterior_log_variance_clipped[1]


def test_q_sample_moments():
    d = GaussianDiffusion(1000, "linear")
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1), 1.5)
    for step in (0, 250, 999):
        t = torch.full((20000,), step, dtype=torch.long)
        xt = d.q_sample(x0, t, rng=g)
        ab = d.alphas_cumprod[step].item()
        assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 1.5, abs=0.03)
        assert xt.var().item() == pytest.approx(1 - ab, abs=0.03 * max(1 - ab, 0.01) + 1e-4)
        mean, var, logvar = d.q_mean_variance(x0[:2], t[:2])
        assert mean[0, 0].item() == pytest.approx(math.sqrt(ab) * 1.5, rel=1e-5)
        assert var[0, 0].item() == pytest.approx(1 - ab, rel=1e-4)
        assert logvar[0, 0].item() == pytest.approx(math.log(1 - ab), rel=1e-4)


def test_posterior_matches_bayes():
    """q(x_{t-1}|x_t,x_0) equals Gaussian conditioning of the forward process."""
    d = GaussianDiffusion(1000, "cosine")
    x0, xt = torch.tensor([[0.7]]), torch.tensor([[-0.3]])
    for step in (1, 100, 700):
        t = torch.tensor([step])
        ab_prev, a, b = d.alphas_cumprod[step - 1].item(), 1 - d.betas[step].item(), d.betas[step].item()
        prec = 1 / (1 - ab_prev) + a / b
        mean = (math.sqrt(ab_prev) * 0.7 / (1 - ab_prev) + math.sqrt(a) * -0.3 / b) / prec
        m, v, _ = d.q_posterior_mean_variance(x0, xt, t)
        assert m.item() == pytest.approx(mean, rel=1e-4, abs=1e-6)
        assert v.item() == pytest.approx(1 / prec, rel=1e-4)


def test_learned_range_and_vb():
    d = GaussianDiffusion(100, "linear", learn_sigma=True)
    x0 = torch.randn(4, 3)
    noise = torch.randn(4, 3)
    t = torch.tensor([5, 20, 50, 99])
    xt = d.q_sample(x0, t, noise)
    for v, name in ((1.0, "betas"), (-1.0, "posterior_log_variance_clipped")):
        out = d.p_mean_variance(torch.cat([noise, torch.full_like(noise, v)], 1), xt, t)
        ref = d.betas[t] if name == "betas" else d.posterior_log_variance_clipped[t].exp()
        assert torch.allclose(out["variance"][:, 0], ref.float(), rtol=1e-4)
        assert torch.allclose(out["pred_xstart"], x0, atol=1e-4)
    # exact ε and the posterior variance: the KL term vanishes (t > 0)
    vb = d.vb_terms_bpd(torch.cat([noise, -torch.ones_like(noise)], 1), x0, xt, t)
    assert vb.abs().max().item() < 1e-3
    # t = 0 uses the decoder NLL: positive bits
    t0 = torch.zeros(4, dtype=torch.long)
    vb0 = d.vb_terms_bpd(torch.cat([noise, -torch.ones_like(noise)], 1), x0, d.q_sample(x0, t0, noise), t0)
    assert (vb0 > 0).all()


def test_normal_kl_and_likelihood():
    m1, l1, m2, l2 = torch.tensor(0.3), torch.tensor(-0.5), torch.tensor(-0.2), torch.tensor(0.4)
    p = torch.distributions.Normal(m1, (0.5 * l1).exp())
    q = torch.distributions.Normal(m2, (0.5 * l2).exp())
    assert normal_kl(m1, l1, m2, l2).item() == pytest.approx(torch.distributions.kl_divergence(p, q).item(), rel=1e-5)
    ll = discretized_gaussian_log_likelihood(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([-3.0]))
    half = (1 / 255) / math.exp(-3.0)
    ref = math.log(0.5 * (math.erf(half / math.sqrt(2)) - math.erf(-half / math.sqrt(2))))
    assert ll.item() == pytest.approx(ref, rel=1e-3)


def test_training_losses_any_shape():
    d = GaussianDiffusion(1000, "cosine")
    for shape in ((6, 4), (3, 4, 5, 5)):
        x = torch.randn(shape)

        def fn(xt, t):
            return torch.zeros(xt.shape[0], 2 * xt.shape[1], *xt.shape[2:])

        terms = d.training_losses(fn, x, rng=torch.Generator().manual_seed(0))
        assert terms["loss"].shape == (shape[0],)
        assert torch.allclose(terms["loss"], terms["mse"] + terms["vb"])
    with pytest.raises(ValueError, match="channels"):
        d.training_losses(lambda xt, t: torch.zeros(6, 4), torch.randn(6, 4))


def test_respacing():
    d = GaussianDiffusion(1000, "linear")
    assert space_timesteps(1000, 4) == [0, 333, 666, 999]
    assert space_timesteps(1000, 1) == [999]
    r = d.respace(10)
    assert r.num_timesteps == 10
    assert torch.allclose(r.alphas_cumprod, d.alphas_cumprod[r.timestep_map])
    assert r.map_timesteps(torch.tensor([0, 9])).tolist() == [0, 999]
    assert d.respace(1000) is d
    with pytest.raises(ValueError, match="num_steps"):
        d.respace(0)
    with pytest.raises(ValueError, match="num_steps"):
        d.respace(1001)


def test_sampling_deterministic_and_temperature():
    d = GaussianDiffusion(1000, "cosine").respace(8)
    seen = []

    def fn(x, t):
        seen.append(int(t[0]))
        return torch.cat([0.1 * x, torch.zeros_like(x)], 1)

    a = d.p_sample_loop(fn, (5, 3), rng=torch.Generator().manual_seed(1))
    b, traj = d.p_sample_loop(fn, (5, 3), rng=torch.Generator().manual_seed(1), return_trajectory=True)
    assert a.shape == (5, 3) and torch.equal(a, b) and len(traj) == 9 and torch.equal(traj[-1], b)
    assert seen[:8] == [999, 856, 714, 571, 428, 285, 143, 0]  # original indices reach the model
    c = d.p_sample_loop(fn, (5, 3), rng=torch.Generator().manual_seed(2))
    assert not torch.equal(a, c)
    with pytest.raises(ValueError, match="temperature"):
        d.p_sample_loop(fn, (5, 3), temperature=0.0)


def test_bad_schedule():
    with pytest.raises(ValueError, match="schedule='quadratic'"):
        get_betas("quadratic", 10)
    with pytest.raises(ValueError, match="num_timesteps"):
        get_betas("linear", 0)
