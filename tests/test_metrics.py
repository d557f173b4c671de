"""PSNR / SSIM / LPIPS helpers."""

import numpy as np
import pytest
import torch

from ldetok_lite import metrics as M


def test_psnr_known_value():
    x = torch.zeros(2, 3, 8, 8)
    y = torch.full((2, 3, 8, 8), 0.1)
    assert M.psnr(x, y).item() == pytest.approx(20.0, abs=1e-4)
    assert M.psnr(x, y, reduction="none").shape == (2,)
    assert M.psnr(x, y, reduction="batch").item() == pytest.approx(20.0, abs=1e-4)
    assert M.psnr(x, x).item() > 90  # finite for identical images


def test_psnr_and_ssim_bad_input():
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="does not match"):
        M.psnr(x, x[:1])
    with pytest.raises(TypeError, match="float"):
        M.psnr((x * 255).to(torch.uint8), x)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        M.ssim(bad, x)
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        M.ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="reduction"):
        M.psnr(x, x, reduction="sum")


def test_ssim_matches_skimage():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ours = M.ssim(x, y, reduction="none")
    for i in range(3):
        ref = structural_similarity(x[i].numpy().astype(np.float64), y[i].numpy().astype(np.float64),
                                    channel_axis=0, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
        assert ours[i].item() == pytest.approx(ref, abs=1e-4)
    assert M.ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)


def test_lpips_random_and_summary():
    x = torch.rand(2, 3, 32, 32)
    assert M.lpips_distance(x, x, net="lpips-random").item() == pytest.approx(0.0, abs=1e-6)
    assert M.lpips_distance(x, 1 - x, net="lpips-random", reduction="none").shape == (2,)
    out = M.reconstruction_metrics(x, x * 0.9, lpips_net="lpips-random")
    assert set(out) == {"psnr", "ssim", "lpips"} and out["psnr"] > 10
