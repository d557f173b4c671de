"""DiffLoss: the per-token diffusion head of MAR and the AR models (official models/diffloss.py)."""

from __future__ import annotations

import pytest
import torch

from ldetok_lite.generators.diffloss import DiffLoss, SimpleMLPAdaLN

pytestmark = pytest.mark.usefixtures("one_thread")



def _head(**kw):
    torch.manual_seed(0)
    kw = {"width": 32, "depth": 2, "num_sampling_steps": 5, **kw}
    return DiffLoss(4, 16, **kw)


def _perturb(module, std=0.02, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))


def test_network_shapes_and_zero_init():
    net = SimpleMLPAdaLN(in_channels=4, width=32, out_channels=8, cond_channels=16, depth=2)
    x, t, z = torch.randn(10, 4), torch.randint(0, 1000, (10,)), torch.randn(10, 16)
    out = net(x, t, z)
    assert out.shape == (10, 8)
    assert torch.count_nonzero(out) == 0  # final layer and adaLN start at zero (official models/diffloss.py)


def test_time_embedding_on_unique_values_matches_direct():
    net = SimpleMLPAdaLN(4, 32, 8, 16, 1)
    t = torch.tensor([5, 999, 5, 0, 17, 999])
    torch.testing.assert_close(net.embed_time(t), net.time_embed(t))


def test_cosine_schedule_and_learned_variance():
    head = _head()
    d = head.diffusion
    assert d.schedule == "cosine" and d.learn_sigma and d.num_timesteps == 1000
    assert float(d.betas.max()) <= 0.999 + 1e-12
    assert head.net.out_channels == 8  # ε (C) + variance interpolation (C)


def test_batch_multiplier_repeats_rows(monkeypatch):
    head = _head(batch_mul=4)
    seen = {}
    orig = head.diffusion.training_losses

    def spy(fn, x_start, **kw):
        seen["rows"] = x_start.shape[0]
        return orig(fn, x_start, **kw)

    monkeypatch.setattr(head.diffusion, "training_losses", spy)
    head(torch.randn(6, 4), torch.randn(6, 16))
    assert seen["rows"] == 24
    head(torch.randn(6, 4), torch.randn(6, 16), mask=torch.tensor([1, 0, 1, 0, 0, 0]))
    assert seen["rows"] == 8  # only the 2 weighted rows, ×4


def test_mask_excludes_unweighted_rows_from_loss_and_gradients():
    head = _head()
    _perturb(head)
    target = torch.randn(8, 4)
    z = torch.randn(8, 16, requires_grad=True)
    mask = torch.tensor([1, 1, 0, 1, 0, 0, 1, 0], dtype=torch.bool)
    loss = head(target, z, mask=mask, rng=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.all(z.grad[~mask] == 0) and torch.any(z.grad[mask] != 0)
    other = target.clone()
    other[~mask] = 100.0 * torch.randn(int((~mask).sum()), 4)
    loss2 = head(other, z.detach(), mask=mask, rng=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loss.detach(), loss2)
    # weights: Σ w·ℓ / Σ w; all-ones mask equals no mask for the same draws
    l_all = head(target, z.detach(), mask=torch.ones(8), rng=torch.Generator().manual_seed(3))
    l_none = head(target, z.detach(), rng=torch.Generator().manual_seed(3))
    torch.testing.assert_close(l_all, l_none)


def test_loss_terms_and_training_reduces_loss():
    torch.manual_seed(0)
    head = _head(batch_mul=2)
    z = torch.randn(64, 16)
    target = torch.tanh(z[:, :4]) * 2  # x is a function of z: learnable
    loss, terms = head(target, z, return_terms=True)
    assert set(terms) == {"mse", "vb"} and torch.isfinite(loss)
    opt = torch.optim.Adam(head.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    first = None
    for step in range(30):
        loss = head(target, z, rng=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
    with torch.no_grad():
        evals = [float(head(target, z, rng=torch.Generator().manual_seed(i))) for i in range(4)]
    assert sum(evals) / 4 < 0.8 * first


def test_sample_shape_determinism_and_temperature():
    head = _head()
    _perturb(head, std=0.01)
    z = torch.randn(5, 16)
    a = head.sample(z, rng=torch.Generator().manual_seed(0))
    b = head.sample(z, rng=torch.Generator().manual_seed(0))
    assert a.shape == (5, 4)
    torch.testing.assert_close(a, b)
    c = head.sample(z, temperature=0.5, rng=torch.Generator().manual_seed(0))
    assert not torch.allclose(a, c)
    assert head.sample(z, num_steps=2, rng=torch.Generator().manual_seed(0)).shape == (5, 4)


def test_guidance_scale_one_equals_conditional():
    head = _head()
    _perturb(head, std=0.01)
    z, zu = torch.randn(5, 16), torch.randn(5, 16)
    cond = head.sample(z, rng=torch.Generator().manual_seed(0))
    guided1 = head.sample(z, cfg_scale=1.0, z_uncond=zu, rng=torch.Generator().manual_seed(0))
    scale = cond.abs().max()
    torch.testing.assert_close(guided1 / scale, cond / scale, atol=1e-5, rtol=1e-5)
    per_row = head.sample(z, cfg_scale=torch.ones(5), z_uncond=zu, rng=torch.Generator().manual_seed(0))
    torch.testing.assert_close(per_row / scale, cond / scale, atol=1e-5, rtol=1e-5)


def test_guidance_is_on_eps_only():
    head = _head()
    _perturb(head, std=0.1)
    x, t = torch.randn(3, 4), torch.full((3,), 500)
    c, cu = head.net.cond_embed(torch.randn(3, 16)), head.net.cond_embed(torch.randn(3, 16))
    out_c = head.net.forward_embedded(x, t, c)
    out_u = head.net.forward_embedded(x, t, cu)
    out = head.guided_fn(c, cu, 3.0)(x, t)
    torch.testing.assert_close(out[:, :4], out_u[:, :4] + 3.0 * (out_c[:, :4] - out_u[:, :4]))
    torch.testing.assert_close(out[:, 4:], out_c[:, 4:])  # variance from the conditional branch


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=0.0), "temperature"),
    (dict(cfg_scale=0.5), "cfg"),
    (dict(num_steps=0), "num_steps"),
    (dict(num_steps=1001), "num_steps"),
    (dict(z_uncond=torch.randn(2, 16)), "z_uncond"),
    (dict(cfg_scale=torch.ones(3)), "cfg"),
])
def test_sample_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _head().sample(torch.randn(5, 16), **kwargs)


def test_forward_bad_arguments():
    head = _head()
    with pytest.raises(ValueError, match="target"):
        head(torch.randn(5, 3), torch.randn(5, 16))
    with pytest.raises(ValueError, match="mask"):
        head(torch.randn(5, 4), torch.randn(5, 16), mask=torch.ones(4))
    with pytest.raises(ValueError, match="no rows"):
        head(torch.randn(5, 4), torch.randn(5, 16), mask=torch.zeros(5))
    with pytest.raises(TypeError, match="z"):
        head(torch.randn(5, 4), [1, 2])
    with pytest.raises(ValueError, match="width"):
        DiffLoss(4, 16, width=0)


def test_clip_x0_bounds_the_implied_x0_and_is_off_by_default():
    head = _head()
    assert head.clip_x0 is None and _head(clip_x0=5.0).clip_x0 == 5.0
    x, t = 3 * torch.randn(50, 4), torch.randint(0, 1000, (50,))
    eps = 5 * torch.randn(50, 4)
    new = head._clip_eps(x, t, eps, 2.0)
    ab = head.diffusion.alphas_cumprod.float()[t][:, None]
    x0 = (x - (1 - ab).sqrt() * new) / ab.sqrt()
    assert x0.abs().max() <= 2.0 + 1e-2
    torch.testing.assert_close(head._clip_eps(x, t, eps, 1e9), eps, atol=1e-4, rtol=1e-4)
    _perturb(head, std=0.05)  # an inaccurate head: without the clip the first step blows up
    z = torch.randn(64, 16)
    wild = head.sample(z, rng=torch.Generator().manual_seed(0))
    tame = head.sample(z, rng=torch.Generator().manual_seed(0), clip_x0=3.0)
    assert tame.abs().max() < 10 < wild.abs().max()
    with pytest.raises(ValueError, match="clip_x0"):
        head.sample(z, clip_x0=-1.0)
