"""CorruptionPanel: pure render, fixed noise, observers (headless ipywidgets)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldetok_lite.tokenizer import create_tokenizer
from ldetok_lite.widgets.corruption_panel import CorruptionPanel, patchify, unpatchify


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    return create_tokenizer("detok_tiny").eval()


def arr(img):
    return np.asarray(img, dtype=np.int16)


def test_patchify_roundtrip(images):
    t = patchify(images, 8)
    assert t.shape == (2, 16, 8 * 8 * 3)
    torch.testing.assert_close(unpatchify(t, 8, 4), images)


def test_photo_mode_render_pure_and_limits(images):
    p = CorruptionPanel(images, patch_size=8, seed=0)
    a = p.render(tau=0.3, gamma=3.0, mask_ratio=0.5)
    b = p.render(tau=0.3, gamma=3.0, mask_ratio=0.5)
    assert np.array_equal(arr(a), arr(b))  # pure for the panel's fixed noise
    # τ = 0 and no mask: the "noised" row equals the original row
    masked, out = p.corrupt(0.0, 3.0, 0.0)
    torch.testing.assert_close(out, images, atol=1e-6, rtol=0)
    torch.testing.assert_close(masked, images)
    # τ = 1: pure γ·ε, the same whatever the image (interpolative destroys the signal)
    _, out1 = p.corrupt(1.0, 1.0, 0.0)
    q = CorruptionPanel(torch.zeros(2, 3, 32, 32), patch_size=8, seed=0)
    _, out2 = q.corrupt(1.0, 1.0, 0.0)
    torch.testing.assert_close(out1, out2)
    _, add = q.corrupt(1.0, 1.0, 0.0, mode="additive")  # additive keeps the signal
    _, add_img = p.corrupt(1.0, 1.0, 0.0, mode="additive")
    assert not torch.allclose(add, add_img)
    # masks are nested as the ratio grows (fixed mask noise)
    grey = [(p.corrupt(0.0, 1.0, r)[0] == 0.5).all(1).float().mean().item() for r in (0.2, 0.5, 0.8)]
    assert grey[0] < grey[1] < grey[2]


def test_observer_updates_image_and_noise_fixed(images):
    p = CorruptionPanel(images, patch_size=8, tau=0.2, seed=1)
    p.static()
    before = p.image.value
    eps = p.eps.clone()
    p.tau.value = 0.7  # fires the observer synchronously
    assert p.last_params["tau"] == 0.7 and p.image.value != before and p.last_error is None
    assert torch.equal(p.eps, eps)  # noise held fixed across slider moves
    for w in (p.tau, p.gamma, p.mask_ratio):
        assert w.continuous_update is False
    p.mask_ratio.value = 0.5
    assert p.last_params["mask_ratio"] == 0.5
    before = p.image.value
    p.resample_button.click()
    assert not torch.equal(p.eps, eps) and p.image.value != before
    p.mode.value = "additive"
    assert p.last_params["mode"] == "additive"


def test_tokenizer_mode(images, tok):
    p = CorruptionPanel(images, tokenizer=tok, seed=0, tau=0.0, mask_ratio=0.0)
    p.static()
    _, out = p.corrupt(0.0, 3.0, 0.0)
    with torch.no_grad():
        torch.testing.assert_close(out, tok.reconstruct(images))
    calls = []
    orig = tok.encode

    def counting(*a, **k):
        calls.append(k.get("mask_ratio"))
        return orig(*a, **k)

    tok.encode = counting
    try:
        before = p.image.value
        p.tau.value = 0.6
        p.gamma.value = 2.0
        assert calls == []  # τ/γ moves reuse the cached encoding
        assert p.image.value != before and p.last_error is None
        p.mask_ratio.value = 0.5
        p.tau.value = 0.1
        assert calls == [0.5]  # one encode per mask ratio
    finally:
        del tok.encode
    masked, out = p.corrupt(0.3, 3.0, 0.5)
    assert out.shape == images.shape and float((masked == 0.5).all(1).float().mean()) > 0.4


def test_panel_bad_input(images, tok):
    with pytest.raises(ValueError, match="images has size 64x64; allowed 32x32"):
        CorruptionPanel(torch.rand(1, 3, 64, 64), tokenizer=tok)
    with pytest.raises(ValueError, match="patch"):
        CorruptionPanel(torch.rand(1, 3, 30, 30), patch_size=8)
    with pytest.raises(ValueError, match="mode"):
        CorruptionPanel(images, mode="multiplicative")
    p = CorruptionPanel(images)
    with pytest.raises(ValueError, match="tau"):
        p.render(tau=1.5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(tau=2.0), r"tau=2.0 is out of range; allowed: a number in \[0, 1\]"),
    (dict(gamma=7.0), r"gamma=7.0 is out of range; allowed: a number in \[0, 6\]"),
    (dict(mask_ratio=-0.1), r"mask_ratio=-0.1 is out of range; allowed: a number in \[0, 0.95\]"),
    (dict(tau="0.5"), r"tau='0.5' is out of range"),
])
def test_out_of_range_arguments_raise_instead_of_clamping(images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        CorruptionPanel(images, **kwargs)
