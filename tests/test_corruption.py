"""The pure corruption functions (paper eq. 1; official DeTok.encode, mae_random_masking)."""

from __future__ import annotations

import math

import pytest
import torch

from ldetok_lite.corruption import (
    additive_noise,
    interpolative_noise,
    num_kept,
    random_mask,
    random_mask_indices,
    sample_mask_ratio,
    sample_tau,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ latent noise


def test_tau_zero_returns_z():
    z = torch.randn(4, 16, 8, generator=gen(1))
    torch.testing.assert_close(interpolative_noise(z, 0.0, 3.0, rng=gen()), z)
    torch.testing.assert_close(additive_noise(z, 0.0, 3.0, rng=gen()), z)
    torch.testing.assert_close(interpolative_noise(z, torch.zeros(4), 3.0), z)


def test_tau_one_returns_gamma_eps_whatever_z():
    eps = torch.randn(4, 16, 8, generator=gen(2))
    for z in (torch.randn(4, 16, 8), torch.full((4, 16, 8), 1e3), torch.zeros(4, 16, 8)):
        torch.testing.assert_close(interpolative_noise(z, 1.0, 3.0, noise=eps), 3.0 * eps)
    # additive keeps the signal
    z = torch.randn(4, 16, 8)
    torch.testing.assert_close(additive_noise(z, 1.0, 3.0, noise=eps), z + 3.0 * eps)


def test_formulas_and_generator_reproducible():
    z = torch.randn(3, 5, 2, generator=gen(3))
    eps = torch.randn(3, 5, 2, generator=gen(4))
    torch.testing.assert_close(interpolative_noise(z, 0.3, 2.0, noise=eps), 0.7 * z + 0.3 * 2.0 * eps)
    torch.testing.assert_close(additive_noise(z, 0.3, 2.0, noise=eps), z + 0.3 * 2.0 * eps)
    a = interpolative_noise(z, 0.5, 3.0, rng=gen(7))
    b = interpolative_noise(z, 0.5, 3.0, rng=gen(7))
    torch.testing.assert_close(a, b)
    # a generator draws exactly torch.randn(z.shape) from that generator
    torch.testing.assert_close(a, 0.5 * z + 0.5 * 3.0 * torch.randn(z.shape, generator=gen(7)))


def test_bf16_latents_are_corrupted_in_float32():
    """τ, ε and the mix are float32 for a bf16 latent (official DeTok.encode under autocast)."""
    z = torch.randn(3, 5, 2, generator=gen(3)).bfloat16()
    tau = torch.rand(3, generator=gen(5))
    out = interpolative_noise(z, tau, 3.0, rng=gen(7))
    assert out.dtype == torch.float32
    eps = torch.randn(z.shape, generator=gen(7))
    t = tau.view(3, 1, 1)
    assert torch.equal(out, (1.0 - t) * z.float() + t * 3.0 * eps)
    assert additive_noise(z, 0.5, 3.0, rng=gen(7)).dtype == torch.float32
    assert interpolative_noise(z.double(), 0.5, 3.0, rng=gen(7)).dtype == torch.float64


def test_per_sample_tau_broadcasts():
    z = torch.randn(4, 6, 3)
    eps = torch.randn(4, 6, 3)
    tau = torch.tensor([0.0, 0.25, 0.5, 1.0])
    out = interpolative_noise(z, tau, 3.0, noise=eps)
    for i in range(4):
        torch.testing.assert_close(out[i], (1 - tau[i]) * z[i] + tau[i] * 3.0 * eps[i])
    out = additive_noise(z, tau, 3.0, noise=eps)
    for i in range(4):
        torch.testing.assert_close(out[i], z[i] + tau[i] * 3.0 * eps[i])
    # channels-first latents (B, C, h, w) broadcast too
    z4 = torch.randn(4, 8, 2, 2)
    out4 = interpolative_noise(z4, tau, 1.0, noise=torch.zeros_like(z4))
    torch.testing.assert_close(out4, (1 - tau).view(4, 1, 1, 1) * z4)


def test_sample_tau():
    t = sample_tau(10000, rng=gen(0))
    assert t.shape == (10000,) and t.dtype == torch.float32
    assert 0.0 <= float(t.min()) and float(t.max()) < 1.0
    assert abs(float(t.mean()) - 0.5) < 0.02
    torch.testing.assert_close(sample_tau(5, rng=gen(3)), sample_tau(5, rng=gen(3)))


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda z: interpolative_noise(z, 1.5, 3.0), "tau"),
        (lambda z: interpolative_noise(z, -0.1, 3.0), "tau"),
        (lambda z: additive_noise(z, torch.tensor([0.1, 1.2]), 3.0), "tau"),
        (lambda z: interpolative_noise(z, 0.5, -1.0), "gamma"),
        (lambda z: additive_noise(z, 0.5, float("nan")), "gamma"),
        (lambda z: interpolative_noise(z, torch.rand(3), 1.0), "tau"),
        (lambda z: interpolative_noise(z, 0.5, 1.0, noise=torch.zeros(1)), "noise"),
        (lambda z: sample_tau(0), "batch_size"),
        (lambda z: sample_mask_ratio(1.0), "max_ratio"),
        (lambda z: sample_mask_ratio(-0.1), "max_ratio"),
        (lambda z: random_mask(z, 1.0), "ratio"),
        (lambda z: random_mask(z, -0.2), "ratio"),
    ],
)
def test_out_of_range_raises_naming_argument(call, arg):
    z = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match=arg):
        call(z)


# ------------------------------------------------------------------ mask ratio sampler


@pytest.mark.parametrize("M", [0.7, 0.4])
def test_mask_ratio_sampler_distribution(M):
    g = gen(0)
    draws = torch.tensor([sample_mask_ratio(M, rng=g) for _ in range(4000)])
    assert isinstance(sample_mask_ratio(M, rng=g), float)
    p0 = float((draws == 0).float().mean())
    expected = 0.1 / (M + 0.1)
    assert abs(p0 - expected) < 4 * math.sqrt(expected * (1 - expected) / 4000)
    assert float(draws.max()) <= M and float(draws.min()) >= 0.0
    assert float(draws.max()) > M - 0.05  # the range is really used


def test_mask_ratio_sampler_zero_and_reproducible():
    assert all(sample_mask_ratio(0.0, rng=gen(i)) == 0.0 for i in range(20))
    assert sample_mask_ratio(0.7, rng=gen(5)) == sample_mask_ratio(0.7, rng=gen(5))


# ------------------------------------------------------------------ random masking


@pytest.mark.parametrize("n, ratio", [(256, 0.7), (16, 0.75), (10, 0.7), (64, 0.0), (64, 0.95), (7, 0.5)])
def test_random_mask_counts(n, ratio):
    tokens = torch.randn(3, n, 5)
    kept, mask, ids_restore = random_mask(tokens, ratio, rng=gen(0))
    keep = math.ceil(round(n * (1 - ratio), 9))
    assert kept.shape == (3, keep, 5)
    assert mask.shape == (3, n) and ids_restore.shape == (3, n)
    assert torch.all(mask.sum(1) == n - keep)
    assert num_kept(n, ratio) == keep
    assert num_kept(256, 0.7) == 77  # official mae_random_masking: at least 77 kept at M = 0.7


def test_random_mask_ids_restore_inverts_shuffle():
    b, n, c = 4, 20, 3
    tokens = torch.randn(b, n, c)
    noise = torch.rand(b, n, generator=gen(1))
    kept, mask, ids_restore = random_mask(tokens, 0.6, noise=noise)
    ids_shuffle = torch.argsort(noise, dim=1)
    dropped = torch.gather(tokens, 1, ids_shuffle[:, kept.shape[1]:, None].expand(-1, -1, c))
    full = torch.cat([kept, dropped], dim=1)
    restored = torch.gather(full, 1, ids_restore[..., None].expand(-1, -1, c))
    torch.testing.assert_close(restored, tokens)
    # the kept tokens are exactly the unmasked ones
    for i in range(b):
        vis = tokens[i][mask[i] == 0]
        assert sorted(vis[:, 0].tolist()) == sorted(kept[i, :, 0].tolist())


def test_random_mask_nested_for_fixed_noise():
    tokens = torch.randn(2, 64, 4)
    noise = torch.rand(2, 64, generator=gen(3))
    prev = None
    for ratio in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9):
        _, mask, _ = random_mask(tokens, ratio, noise=noise)
        if prev is not None:
            assert torch.all(mask >= prev)  # once masked, stays masked
        prev = mask


def test_random_mask_per_sample_and_indices():
    ids_keep, mask, ids_restore = random_mask_indices(2, 30, 0.5, rng=gen(0))
    assert not torch.equal(mask[0], mask[1])  # per-sample shuffles
    assert torch.equal(torch.argsort(ids_restore, 1)[:, :15], ids_keep)
