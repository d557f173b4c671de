"""The convolutional tokenizer: shapes, corruption on the latent map, train/eval
behaviour, training through the kit's trainer, and SD-VAE / MAR-VAE weights in their released
layouts (made by diffusers' own classes with random init)."""

import json
import re

import pytest
import torch

from ldetok_lite import create_tokenizer
from ldetok_lite.config import DataConfig, TokenizerConfig, TrainConfig
from ldetok_lite.conv_tokenizer import ConvTok
from ldetok_lite.convert_vae import load_mar_vae, load_sd_vae, mar_vae_state_dict
from ldetok_lite.io import UnsafeFileError
from ldetok_lite.pretrained import from_pretrained
from ldetok_lite.training import freeze_encoder, train_tokenizer

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def images():
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture()
def tok():
    torch.manual_seed(0)
    return create_tokenizer("cnn_tiny").eval()


def test_shapes_match_the_vit_latent_grid(tok, images):
    vit = create_tokenizer("detok_tiny")
    assert isinstance(tok, ConvTok)
    assert (tok.patch_size, tok.grid_size, tok.token_channels) == (vit.patch_size, vit.grid_size, vit.token_channels)
    z = tok.tokenize(images)
    assert z.shape == vit.tokenize(images).shape == (4, 8, 8, 8)
    assert tok.detokenize(z).shape == images.shape
    out = tok.reconstruct(images)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1


def test_masking_fills_the_latent_map_with_the_mask_vector(tok, images):
    with torch.no_grad():
        tok.mask_token.fill_(7.0)
    noise = torch.rand(4, 64, generator=torch.Generator().manual_seed(1))
    z, ids_restore, post = tok.encode(images, mask_ratio=0.5, mask_noise=noise)
    assert z.shape == (4, 32, 8) and ids_restore.shape == (4, 64)
    kept = noise.argsort(dim=1)[:, :32]  # the 32 smallest noise values are kept, as for the ViT
    torch.testing.assert_close(z, torch.gather(post.mean, 1, kept[..., None].expand(-1, -1, 8)))
    seen = {}
    handle = tok.post_quant_conv.register_forward_pre_hook(lambda m, a: seen.setdefault("grid", a[0]))
    try:
        tok.decode(z, ids_restore)
    finally:
        handle.remove()
    tokens = seen["grid"].flatten(2).transpose(1, 2)
    masked = torch.ones(4, 64, dtype=torch.bool).scatter(1, kept, False)
    assert torch.all(tokens[masked] == 7.0)
    torch.testing.assert_close(tokens[~masked], post.mean[~masked])


@pytest.mark.parametrize("additive", [False, True])
def test_noise_is_the_paper_corruption(images, additive):
    tok = create_tokenizer("cnn_tiny", use_additive_noise=additive, gamma=2.0).eval()
    eps = torch.randn(4, 64, 8, generator=torch.Generator().manual_seed(2))
    clean, _, _ = tok.encode(images)
    tau = torch.tensor([0.0, 0.25, 0.5, 1.0])
    noisy, _, _ = tok.encode(images, noise_tau=tau, noise=eps)
    t = tau[:, None, None]
    want = clean + t * 2.0 * eps if additive else (1 - t) * clean + t * 2.0 * eps
    torch.testing.assert_close(noisy, want)
    torch.testing.assert_close(tok.encode(images, noise_tau=tau, noise=eps, gamma=0.0)[0], clean)


def test_train_mode_corrupts_and_eval_mode_reconstructs(tok, images):
    tok.train()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)
    r1, kl1 = tok(images, rng=g1)
    r2, _ = tok(images, rng=g2)
    assert r1.shape == images.shape and kl1.shape == (4,) and not torch.allclose(r1, r2)
    tok.eval()
    r, _ = tok(images)
    torch.testing.assert_close(r.clamp(0, 1), tok.reconstruct(images))
    torch.testing.assert_close(tok(images)[0], r)


def test_decoder_finetune_freezes_the_encoder_side(tok):
    frozen = set(freeze_encoder(tok))
    trainable = {n for n, p in tok.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("decoder.", "post_quant_conv.", "mask_token")) for n in trainable)
    assert any(n.startswith("quant_conv.") for n in frozen) and any(n.startswith("encoder.") for n in frozen)


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="patch_size=8 does not match 'cnn_tiny', which downsamples by 4"):
        create_tokenizer("cnn_tiny", patch_size=8)
    with pytest.raises(ValueError, match="unknown tokenizer 'cnn_tin'.*did you mean"):
        create_tokenizer("cnn_tin")
    with pytest.raises(ValueError, match="unknown tokenizer override 'depth'"):
        create_tokenizer("cnn_tiny", depth=3)
    with pytest.raises(ValueError, match="norm_num_groups=8 must divide"):
        create_tokenizer("cnn_tiny", block_out_channels=(12, 32, 64))
    with pytest.raises(ValueError, match="mask_ratio=1.0 is out of range"):
        create_tokenizer("cnn_tiny", mask_ratio=1.0)
    with pytest.raises(ValueError, match="x has size 64x64; allowed 32x32"):
        create_tokenizer("cnn_tiny").tokenize(torch.rand(1, 3, 64, 64))


def test_trains_through_the_kit_trainer_and_reloads(tmp_path, images):
    tok_cfg = TokenizerConfig(model="cnn_tiny", patch_size=4, token_channels=8)
    train_cfg = TrainConfig(steps=4, batch_size=8, blr=1e-3, warmup_frac=0.0, log_every=2)
    data = DataConfig(num_train=64, num_val=16)
    res = train_tokenizer(tok_cfg, train_cfg, data, tmp_path / "run", progress="none", log=lambda *_: None)
    assert isinstance(res.ema_model, ConvTok)
    again = from_pretrained(tmp_path / "run")
    assert isinstance(again, ConvTok)
    torch.testing.assert_close(again.reconstruct(images), res.ema_model.cpu().reconstruct(images))


# --------------------------------------------------------------------------- released layouts

def _small_vae(**kw):
    torch.manual_seed(5)
    cfg = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
               up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32), layers_per_block=1,
               latent_channels=4, norm_num_groups=8, sample_size=32)
    cfg.update(kw)
    vae = diffusers.AutoencoderKL(**cfg).eval()
    with torch.no_grad():  # non-trivial weights everywhere (the init zeroes nothing, but be sure)
        for p in vae.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return vae


@pytest.mark.parametrize("safe_serialization", [True, False])
def test_sd_vae_folder_loads_and_matches_diffusers(tmp_path, images, safe_serialization):
    vae = _small_vae()
    vae.save_pretrained(tmp_path / "vae", safe_serialization=safe_serialization)
    ours = load_sd_vae(tmp_path / "vae")
    with torch.no_grad():
        dist = vae.encode(images * 2 - 1).latent_dist
        z, _, post = ours.encode(images)
        torch.testing.assert_close(z.transpose(1, 2).unflatten(2, (16, 16)), dist.mean)
        torch.testing.assert_close(post.logvar.transpose(1, 2).unflatten(2, (16, 16)), dist.logvar)
        torch.testing.assert_close(ours.decode(z), vae.decode(dist.mean).sample * 0.5 + 0.5, atol=1e-5, rtol=1e-5)


def test_sd_vae_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="sd-vae-ft-ema"):
        load_sd_vae(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_sd_vae(tmp_path / "empty")
    _small_vae().save_pretrained(tmp_path / "vae")
    cfg = json.loads((tmp_path / "vae" / "config.json").read_text())
    (tmp_path / "vae" / "config.json").write_text(json.dumps(dict(cfg, _class_name="UNet2DModel")))
    with pytest.raises(ValueError, match="describes 'UNet2DModel'"):
        load_sd_vae(tmp_path / "vae")
    (tmp_path / "vae" / "config.json").write_text(json.dumps(dict(cfg, latent_channels=8)))
    with pytest.raises(ValueError, match="does not match the SD-VAE architecture.*shape mismatch"):
        load_sd_vae(tmp_path / "vae")


# the latent-diffusion layout of MAR's models/vae.py, written out by hand (the inverse of what
# convert_vae reads), to make a kl16.ckpt-style file from diffusers weights
def _to_ldm(key: str, levels: int) -> str:
    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    key = re.sub(r"mid_block\.resnets\.(\d)", lambda m: f"mid.block_{int(m.group(1)) + 1}", key)
    key = key.replace("mid_block.attentions.0", "mid.attn_1")
    key = re.sub(r"up_blocks\.(\d+)", lambda m: f"up.{levels - 1 - int(m.group(1))}", key)
    key = key.replace("down_blocks", "down").replace("resnets", "block").replace("attentions", "attn")
    key = key.replace("downsamplers.0", "downsample").replace("upsamplers.0", "upsample")
    for a, b in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
        key = key.replace(f".{a}.", f".{b}.")
    return key


def _ldm_file(vae, path, levels):
    sd = {}
    for k, v in vae.state_dict().items():
        new = _to_ldm(k, levels)
        if re.search(r"\.(attn|attn_1)\.", new) and new.endswith("weight") and v.ndim == 2:
            v = v[:, :, None, None]  # MAR's attention projections are 1×1 convolutions
        sd[new] = v.clone()
    torch.save({"model": sd, "epoch": 3}, path)
    return sd


def test_mar_vae_layout_renames_to_diffusers(tmp_path, images):
    vae = _small_vae(down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"))
    sd = _ldm_file(vae, tmp_path / "small.ckpt", levels=2)
    assert "encoder.down.1.attn.0.q.weight" in sd and "decoder.up.1.block.1.conv1.weight" in sd
    assert mar_vae_state_dict(sd, levels=2).keys() == vae.state_dict().keys()
    ours = create_tokenizer("cnn_custom", block_out_channels=(16, 32), norm_num_groups=8, token_channels=4,
                            down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"))
    ours.load_state_dict({**mar_vae_state_dict(sd, levels=2), "mask_token": ours.mask_token.detach()})
    with torch.no_grad():
        dist = vae.encode(images * 2 - 1).latent_dist
        z = ours.encode(images)[0]
        torch.testing.assert_close(z.transpose(1, 2).unflatten(2, (16, 16)), dist.mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.decode(z), vae.decode(dist.mean).sample * 0.5 + 0.5, atol=1e-5, rtol=1e-5)


def test_mar_vae_kl16_loads_with_strict_keys(tmp_path):
    full = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4 + ("AttnDownEncoderBlock2D",),
                                   up_block_types=("UpDecoderBlock2D",) * 5,
                                   block_out_channels=(128, 128, 256, 256, 512), layers_per_block=2, latent_channels=16)
    _ldm_file(full, tmp_path / "kl16.ckpt", levels=5)
    ours = load_mar_vae(tmp_path / "kl16.ckpt")
    assert (ours.patch_size, ours.token_channels, ours.training) == (16, 16, False)
    theirs = full.state_dict()
    for k, v in ours.state_dict().items():
        if k != "mask_token":
            assert torch.equal(v, theirs[k]), k


def test_mar_vae_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="kl16.ckpt"):
        load_mar_vae(tmp_path / "kl16.ckpt")
    torch.save({"model": create_tokenizer("detok_tiny").state_dict()}, tmp_path / "detok.pth")
    with pytest.raises(ValueError, match="does not look like MAR-VAE weights"):
        load_mar_vae(tmp_path / "detok.pth")

    class Payload:
        def __reduce__(self):
            return (eval, ("1 + 1",))

    torch.save({"model": Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(UnsafeFileError, match="code"):
        load_mar_vae(tmp_path / "evil.ckpt")


def test_cnn_variants_through_the_model_cache(tmp_path):
    from ldetok_lite.experiments.cache import get_tokenizer
    from ldetok_lite.presets import tokenizer_recipe, warm_start_recipe

    tok, train, _ = tokenizer_recipe("tiny", "cnn-ldetok")
    assert (tok.model, tok.gamma, tok.mask_ratio) == ("cnn_tiny", 3.0, 0.7)
    base, _ = warm_start_recipe(tok, train)  # l-DeTok continues from the plain CNN, as the ViT does
    assert (base.model, base.gamma, base.mask_ratio) == ("cnn_tiny", 0.0, 0.0)
    assert tokenizer_recipe("full", "cnn-plain")[0].model == "mar_vae"
    model = get_tokenizer("smoke", "cnn-ldetok", tmp_path, log=lambda *_: None, progress="none")
    assert isinstance(model, ConvTok) and model.gamma == 3.0
    assert (tmp_path / "tokenizers" / "smoke-cnn-ldetok-s0").is_dir()
