"""Flow matching: the linear path, time sampling, timestep shift and both ODE samplers."""

import pytest
import torch

from ldetok_lite.generators.flow import FlowMatching, shift_time


def test_linear_path_endpoints_and_velocity():
    x1, x0 = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    xt, u = FlowMatching.interpolate(x1, x0, torch.tensor([0.0, 1.0, 0.5, 0.25]))
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[1], x1[1])  # t = 0 noise, t = 1 data
    assert torch.allclose(xt[2], 0.5 * (x0[2] + x1[2]))
    assert torch.allclose(xt[3], 0.25 * x1[3] + 0.75 * x0[3])
    assert torch.equal(u, x1 - x0)


def test_time_sampling():
    g = torch.Generator().manual_seed(0)
    t = FlowMatching("uniform").sample_t(20000, "cpu", g)
    assert 0 <= t.min() and t.max() < 1 and t.mean().item() == pytest.approx(0.5, abs=0.01)
    t = FlowMatching("logit_normal").sample_t(20000, "cpu", g)
    logit = torch.log(t / (1 - t))
    assert logit.mean().item() == pytest.approx(0.0, abs=0.03) and logit.std().item() == pytest.approx(1.0, abs=0.03)
    with pytest.raises(ValueError, match="time_sampling='beta'"):
        FlowMatching("beta")


def test_shift_time():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.allclose(shift_time(t, 1.0), t)
    s = shift_time(t, 0.3)
    assert s[0] == 0 and s[-1].item() == pytest.approx(1.0) and bool((s[1:] > s[:-1]).all())
    assert s[5].item() == pytest.approx(0.3 * 0.5 / (1 - 0.7 * 0.5))
    assert bool((s[1:-1] < t[1:-1]).all())  # s < 1 packs steps near the noise end
    with pytest.raises(ValueError, match="shift"):
        shift_time(t, 0.0)


def _gaussian_velocity(m, s):
    """Exact marginal velocity when data ~ N(m, s²): the flow maps x₀ to m + s·x₀."""

    def v(x, t):
        t = t.reshape(-1, *([1] * (x.ndim - 1)))
        return m + (t * s**2 - (1 - t)) / (t**2 * s**2 + (1 - t) ** 2) * (x - t * m)

    return v


def test_samplers_transport_gaussian():
    fm = FlowMatching()
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    v = _gaussian_velocity(2.0, 0.5)
    x = fm.sample_dopri5(v, x0, num_points=3, rtol=1e-6)
    assert torch.allclose(x, 2.0 + 0.5 * x0, atol=1e-3)
    assert fm.last_nfe > 0
    x, traj = fm.sample_euler(v, x0, num_steps=200, return_trajectory=True)
    assert len(traj) == 201 and torch.equal(traj[0], x0) and torch.equal(traj[-1], x)
    assert torch.allclose(x, 2.0 + 0.5 * x0, atol=2e-2)
    x, traj = fm.sample_dopri5(v, x0, num_points=5, return_trajectory=True)
    assert len(traj) == 5


def test_euler_straight_paths_exact():
    """With a point-mass target every path is straight: one Euler step is exact."""
    fm = FlowMatching()
    x0 = torch.randn(8, 3)
    c = torch.tensor([1.0, -2.0, 0.5])
    x = fm.sample_euler(lambda x, t: (c - x) / (1 - t[:, None]), x0, num_steps=1)
    assert torch.allclose(x, c.expand(8, 3), atol=1e-6)
    x = fm.sample_euler(lambda x, t: (c - x) / (1 - t[:, None]), x0, num_steps=7, shift=0.3)
    assert torch.allclose(x, c.expand(8, 3), atol=1e-5)


def test_training_loss_shapes():
    fm = FlowMatching("logit_normal")
    x1 = torch.randn(5, 4, 3, 3)
    terms = fm.training_losses(lambda x, t: torch.zeros_like(x), x1, rng=torch.Generator().manual_seed(0))
    assert terms["loss"].shape == (5,)
    t = torch.full((5,), 0.5)
    noise = torch.zeros_like(x1)
    assert torch.allclose(fm.training_losses(lambda x, t: 2 * x, x1, t=t, noise=noise)["loss"], torch.zeros(5))
    with pytest.raises(ValueError, match="velocity shape"):
        fm.training_losses(lambda x, t: x[:, :2], x1)
