"""LatentExplorer panel and the robustness helpers (headless: slider moves fire observers)."""

import pytest
import torch
from PIL import Image

from ldetok_lite.analysis import corrupt_and_decode, noise_robustness, robustness_curves
from ldetok_lite.tokenizer import create_tokenizer
from ldetok_lite.viz import latent_pca_image
from ldetok_lite.widgets.latent_explorer import LatentExplorer


@pytest.fixture(scope="module")
def toks():
    torch.manual_seed(0)
    return {"plain AE": create_tokenizer("detok_tiny", gamma=0.0, mask_ratio=0.0),
            "l-DeTok": create_tokenizer("detok_tiny")}


def test_panel_renders_and_caches_encodings(toks):
    p = LatentExplorer(toks)
    img = p.static()
    assert isinstance(img, Image.Image) and set(p.last_psnr) == set(toks)
    assert p.encodes == 2  # one encoding per tokenizer
    p.params["tau"].value = 0.2
    p.params["gamma"].value = 1.0
    assert p.encodes == 2 and p.last_params["tau"] == 0.2 and p.last_error is None  # only re-decoded
    p.params["mask_ratio"].value = 0.5
    assert p.encodes == 4  # masking happens at the encoder input: encoded once per ratio
    p.params["mask_ratio"].value = 0.0
    assert p.encodes == 4
    p.params["image"].value = len(p.images) - 1  # a photo
    assert p.encodes == 6 and p.renders == 6


def test_noise_is_fixed_and_resample_changes_it(toks):
    p = LatentExplorer(toks, tau=0.5)
    a = p.decode("l-DeTok", 0, 0.5, 3.0, 0.3)
    b = p.decode("l-DeTok", 0, 0.5, 3.0, 0.3)
    assert torch.equal(a, b)
    p.buttons[0].click()
    assert not torch.equal(a, p.decode("l-DeTok", 0, 0.5, 3.0, 0.3))


def test_zero_corruption_equals_reconstruct(toks):
    tok = toks["plain AE"]
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(corrupt_and_decode(tok, x, tau=0.0), tok.reconstruct(x), atol=1e-6)
    # τ = 1 with interpolative noise: nothing of the image is left; the output ignores the input
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(3, tok.seq_len, tok.token_channels, generator=g)
    out1 = corrupt_and_decode(tok, x, tau=1.0, noise=noise)
    out2 = corrupt_and_decode(tok, torch.rand(3, 3, 32, 32), tau=1.0, noise=noise)
    assert torch.allclose(out1, out2, atol=1e-6)


def test_bad_values_are_reported(toks):
    p = LatentExplorer(toks)
    with pytest.raises(ValueError, match="tau"):
        p.render(tau=1.5)
    with pytest.raises(ValueError, match="image"):
        p.render(image=99)
    with pytest.raises(ValueError, match="img_size"):
        LatentExplorer({"a": toks["plain AE"], "b": create_tokenizer("detok_small_cpu")})


def test_robustness_helpers(toks):
    x = torch.rand(4, 3, 32, 32)
    (v,) = noise_robustness(toks["l-DeTok"], x, taus=(0.5,))
    assert isinstance(v, float) and v > 0
    c = robustness_curves(toks, x, taus=(0.0, 0.5), mask_ratios=(0.0, 0.5))
    assert [t for t, _ in c["plain AE"]["tau"]] == [0.0, 0.5] and len(c["l-DeTok"]["mask"]) == 2
    assert isinstance(latent_pca_image(toks, x), Image.Image)


@pytest.mark.parametrize("kwargs, match", [
    (dict(tau=1.5), r"tau=1.5 is out of range; allowed: a number in \[0, 1\]"),
    (dict(gamma=-1.0), r"gamma=-1.0 is out of range; allowed: a number in \[0, 6\]"),
    (dict(mask_ratio=0.95), r"mask_ratio=0.95 is out of range; allowed: a number in \[0, 0.9\]"),
])
def test_out_of_range_arguments_raise_instead_of_clamping(toks, kwargs, match):
    with pytest.raises(ValueError, match=match):
        LatentExplorer(toks, **kwargs)
