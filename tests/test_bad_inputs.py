"""The bad-input audit: every bad input gets a clear error at the public boundary, and hostile or
careless use (weights files with code, planted links, a user's files, silent results) is handled.

``CASES`` is a table of ``Case(id, bad, call, exc, match)``: ``call()`` triggers the bad input
``bad`` (a short description), which must raise ``exc`` with a message matching the regex
``match`` (it names the parameter, the value and what is allowed or what to do), never a shape
error from deep inside torch. CLI cases run ``ldetok_lite.cli.main([...])`` in-process: it must
return a non-zero code and print one ``ldetok-lite: error: ...`` line on stderr, no traceback
(argparse's own errors print its usage line first); they surface here as :class:`CliFailed`.
A case with ``exc=None`` must succeed: it checks its own outcome and raises :class:`DataLoss`,
:class:`SilentWrong` or :class:`CodeRan` when a file was lost, a result was wrong or code ran.

    python tests/test_bad_inputs.py [--hostile]    # the table (markdown) of what each case does now, with counts
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, NamedTuple

import pytest
import torch
from PIL import Image

from ldetok_lite import checkpoint as C
from ldetok_lite import corruption as K
from ldetok_lite import evaluation as F
from ldetok_lite import metrics as M
from ldetok_lite import training as T
from ldetok_lite.cli import main as cli_main
from ldetok_lite.config import ConfigError, DataConfig, TokenizerConfig, TrainConfig
from ldetok_lite.convert import load_official_checkpoint
from ldetok_lite.data import DataError, ImageFolderDataset, ShapesDataset, make_dataset, make_loader
from ldetok_lite.generators import create_generator, decode_latents
from ldetok_lite.io import FileContentError, UnsafeFileError, safe_torch_load, write_json_atomic, write_jsonl_atomic
from ldetok_lite.presets import load_preset
from ldetok_lite.pretrained import from_pretrained
from ldetok_lite.tokenizer import create_tokenizer

ROOT = Path(__file__).resolve().parents[1]
NAN, INF = float("nan"), float("inf")


class Case(NamedTuple):
    id: str
    bad: str  # the bad input, in words (the table's second column)
    call: Callable[[], object]
    exc: type[BaseException] | None  # None: the call must succeed (it checks its own outcome)
    match: str  # regex the message must match (re.search)


class CliFailed(Exception):
    """``cli.main`` returned a non-zero code; the message is its last stderr line."""


# ------------------------------------------------------------------------------------------------
# lazily built objects shared by the cases (small: detok_tiny, DiT_tiny, a few files)
# ------------------------------------------------------------------------------------------------


@functools.cache
def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="ldetok-bad-inputs-"))


@functools.cache
def tok():
    torch.manual_seed(0)
    return create_tokenizer("detok_tiny").eval()


@functools.cache
def dit():
    torch.manual_seed(0)
    return create_generator("DiT_tiny")


@functools.cache
def sit():
    torch.manual_seed(0)
    return create_generator("SiT_tiny")


def fid(images, reference, **kwargs) -> float:
    return F.compute_metrics(images, reference, **kwargs)["fid"]


def imgs(n=2, size=32, channels=3, dtype=torch.float32):
    x = torch.rand(n, channels, size, size)
    return x if dtype.is_floating_point else (x * 255).to(dtype)


def poisoned(value, n=2, size=32):
    x = torch.rand(n, 3, size, size)
    x[0, 0, 0, 0] = value
    return x


def latents(n=2, c=8, g=8):
    return torch.randn(n, c, g, g)


def labels(*v):
    return torch.tensor(v or (1, 2), dtype=torch.long)


@functools.cache
def tok_ckpt() -> Path:
    return C.save_pretrained(tok(), scratch() / "tok_ckpt", ema_state=tok().state_dict())


@functools.cache
def gen_ckpt() -> Path:
    return C.save_pretrained(dit(), scratch() / "gen_ckpt", ema_state=dit().state_dict())


@functools.cache
def truncated_ckpt() -> Path:
    d = C.save_pretrained(tok(), scratch() / "trunc_ckpt")
    f = d / C.MODEL_FILE
    f.write_bytes(f.read_bytes()[:1000])
    return d


@functools.cache
def evil_pth() -> Path:
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    p = scratch() / "evil.pth"
    torch.save({"model": {"w": torch.ones(1)}, "payload": Payload()}, p)
    return p


@functools.cache
def truncated_pth() -> Path:
    p = scratch() / "truncated.pth"
    torch.save({"model_ema": tok().state_dict()}, p)
    p.write_bytes(p.read_bytes()[:5000])
    return p


@functools.cache
def empty_dir() -> Path:
    p = scratch() / "empty"
    p.mkdir()
    return p


@functools.cache
def folder_without_images() -> Path:
    p = scratch() / "no_images"
    (p / "cat").mkdir(parents=True)
    (p / "cat" / "notes.txt").write_text("not an image")
    return p


@functools.cache
def folder_with_bad_image() -> Path:
    from PIL import Image

    p = scratch() / "bad_image"
    (p / "cat").mkdir(parents=True)
    (p / "cat" / "a_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.new("RGB", (40, 40), (200, 10, 10)).save(p / "cat" / "b_good.png")
    return p


def cli(*argv: str):
    """Run ``ldetok-lite argv`` in-process; raise :class:`CliFailed` unless it succeeds."""
    err = io.StringIO()
    out = io.StringIO()
    parser_error = False
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli_main(list(argv))
        except SystemExit as e:  # argparse: its usage, then one "error:" line; exit code 2
            code, parser_error = e.code, True
    text = err.getvalue().strip()
    if code == 0:
        return code
    assert code == 2, f"exit code {code}"
    assert "Traceback" not in text, text
    lines = text.splitlines()
    assert lines, "no message on stderr"
    if parser_error:
        assert lines[0].startswith("usage:") and ": error: " in lines[-1], text
    else:
        assert len(lines) == 1 and lines[0].startswith("ldetok-lite: error: "), text
    raise CliFailed(lines[-1])


# ------------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------------

CASES: list[Case] = [
    # ---- corruption (paper eq. 1, MAE masking)
    Case("noise-tau-high", "interpolative_noise(z, tau=1.5)", lambda: K.interpolative_noise(latents(), 1.5, 3.0),
         ValueError, r"tau=1\.5 is out of range; allowed \[0, 1\]"),
    Case("noise-tau-negative", "additive_noise(z, tau=-0.1)", lambda: K.additive_noise(latents(), -0.1, 3.0),
         ValueError, r"tau=-0\.1 is out of range; allowed \[0, 1\]"),
    Case("noise-tau-nan", "interpolative_noise(z, tau=nan)", lambda: K.interpolative_noise(latents(), NAN, 3.0),
         ValueError, r"tau=nan is out of range; allowed \[0, 1\]"),
    Case("noise-tau-tensor", "per-sample tau tensor with a value 2.0",
         lambda: K.interpolative_noise(latents(), torch.tensor([0.5, 2.0]), 3.0),
         ValueError, r"tau has values in \[0\.5, 2\], out of range; allowed \[0, 1\]"),
    Case("noise-tau-batch", "tau of shape [3] for a batch of 2",
         lambda: K.interpolative_noise(latents(), torch.tensor([0.1, 0.2, 0.3]), 3.0),
         ValueError, r"tau has shape \(3,\) but z has batch size 2"),
    Case("noise-gamma-negative", "interpolative_noise(z, tau, gamma=-1)",
         lambda: K.interpolative_noise(latents(), 0.5, -1.0), ValueError,
         r"gamma=-1\.0 is out of range; allowed a finite float >= 0"),
    Case("noise-gamma-inf", "additive_noise(z, tau, gamma=inf)", lambda: K.additive_noise(latents(), 0.5, INF),
         ValueError, r"gamma=inf is out of range; allowed a finite float >= 0"),
    Case("noise-z-not-tensor", "interpolative_noise(z=a list)", lambda: K.interpolative_noise([1.0], 0.5, 1.0),
         TypeError, r"z must be a tensor, got list"),
    Case("noise-shape", "noise of another shape than z",
         lambda: K.interpolative_noise(latents(), 0.5, 1.0, noise=torch.randn(2, 8)),
         ValueError, r"noise must be a tensor shaped like z \(2, 8, 8, 8\), got \(2, 8\)"),
    Case("mask-ratio-one", "sample_mask_ratio(max_ratio=1.0)", lambda: K.sample_mask_ratio(1.0),
         ValueError, r"max_ratio=1\.0 is out of range; allowed \[0, 1\)"),
    Case("mask-ratio-high", "random_mask(tokens, ratio=1.2)", lambda: K.random_mask(torch.randn(2, 16, 8), 1.2),
         ValueError, r"ratio=1\.2 is out of range; allowed \[0, 1\)"),
    Case("mask-2d", "random_mask(tokens of shape (N, C))", lambda: K.random_mask(torch.randn(16, 8), 0.5),
         ValueError, r"tokens must be a tensor of shape \(B, N, C\) .*got shape \(16, 8\); for one sequence \(N, C\) "
         r"pass tokens\[None\]"),
    Case("sample-tau-batch", "sample_tau(batch_size=0)", lambda: K.sample_tau(0),
         ValueError, r"batch_size=0 is out of range; allowed an int >= 1"),
    # ---- tokenizer
    Case("tok-unknown-name", "create_tokenizer('detok_tinyy')", lambda: create_tokenizer("detok_tinyy"),
         ValueError, r"unknown tokenizer 'detok_tinyy' \(did you mean 'detok_tiny'\?\); allowed: detok_SS"),
    Case("tok-unknown-override", "create_tokenizer(..., gama=2)", lambda: create_tokenizer("detok_tiny", gama=2.0),
         ValueError, r"unknown tokenizer override 'gama'; allowed: img_size, patch_size, token_channels, gamma"),
    Case("tok-gamma", "create_tokenizer(gamma=-1)", lambda: create_tokenizer("detok_tiny", gamma=-1),
         ValueError, r"gamma=-1 is out of range; allowed a finite float >= 0"),
    Case("tok-gamma-nan", "create_tokenizer(gamma=nan)", lambda: create_tokenizer("detok_tiny", gamma=NAN),
         ValueError, r"gamma=nan is out of range; allowed a finite float >= 0"),
    Case("tok-mask-ratio", "create_tokenizer(mask_ratio=1.0)", lambda: create_tokenizer("detok_tiny", mask_ratio=1.0),
         ValueError, r"mask_ratio=1\.0 is out of range; allowed \[0, 1\)"),
    Case("tok-mask-ratio-type", "create_tokenizer(mask_ratio='0.7')",
         lambda: create_tokenizer("detok_tiny", mask_ratio="0.7"),
         ValueError, r"mask_ratio='0\.7' is out of range; allowed \[0, 1\)"),
    Case("tok-img-patch", "create_tokenizer(img_size=30) with patch 4",
         lambda: create_tokenizer("detok_tiny", img_size=30),
         ValueError, r"img_size=30 is not divisible by patch_size=4"),
    Case("tok-encode-channels", "encode(x) with 1 channel", lambda: tok().encode(imgs(channels=1)),
         ValueError, r"x has shape \(2, 1, 32, 32\); allowed \(B, 3, H, W\) RGB images"),
    Case("tok-encode-no-batch", "encode(x) of shape (3, 32, 32)", lambda: tok().encode(torch.rand(3, 32, 32)),
         ValueError, r"x has shape \(3, 32, 32\); allowed \(B, 3, H, W\)"),
    Case("tok-encode-uint8", "encode(x) with dtype uint8", lambda: tok().encode(imgs(dtype=torch.uint8)),
         ValueError, r"x has dtype torch\.uint8; allowed a float tensor in \[0, 1\] \(for uint8 images use"),
    Case("tok-tokenize-int64", "tokenize(x) with dtype int64", lambda: tok().tokenize(imgs(dtype=torch.int64)),
         ValueError, r"x has dtype torch\.int64; allowed a float tensor in \[0, 1\]"),
    Case("tok-encode-size", "encode(x) of 64x64 for img_size 32", lambda: tok().encode(imgs(size=64)),
         ValueError, r"x has size 64x64; allowed 32x32 \(img_size=32, patch_size=4\): resize the images or build the "
         r"tokenizer with img_size=64"),
    Case("tok-encode-size-patch", "encode(x) of 30x30 (patch 4)", lambda: tok().encode(imgs(size=30)),
         ValueError, r"x has size 30x30; allowed 32x32 \(img_size=32, patch_size=4\): resize the images or crop them"),
    Case("tok-encode-nan", "encode(x) with a NaN pixel", lambda: tok().encode(poisoned(NAN)),
         ValueError, r"x contains NaN or Inf values; allowed finite images in \[0, 1\]"),
    Case("tok-encode-0-255", "encode(x) of float images in 0..255", lambda: tok().encode(imgs() * 255),
         ValueError, r"x has values in \[0[.\d]*, 25\d\]; allowed images in \[0, 1\] \(0\.\.255 images: divide by 255"),
    Case("tok-encode-minus-one", "tokenize(x) of images in [-1, 1]", lambda: tok().tokenize(imgs() * 2 - 1),
         ValueError, r"x has values in \[-0?\.?\d+, 0?\.?\d+\]; allowed images in \[0, 1\].*\(x \+ 1\) / 2"),
    Case("tok-reconstruct-inf", "reconstruct(x) with an Inf pixel", lambda: tok().reconstruct(poisoned(INF)),
         ValueError, r"x contains NaN or Inf values"),
    Case("tok-tokenize-nan", "tokenize(x) with a NaN pixel", lambda: tok().tokenize(poisoned(NAN)),
         ValueError, r"x contains NaN or Inf values"),
    Case("tok-forward-list", "forward(x=a list) in train mode", lambda: tok().train().forward([[0.5]]),
         TypeError, r"x must be a float tensor \(B, 3, H, W\) in \[0, 1\], got list"),
    Case("tok-forward-size", "forward(x) of 64x64 in train mode", lambda: tok().train().forward(imgs(size=64)),
         ValueError, r"x has size 64x64"),
    Case("tok-encode-mask-ratio", "encode(x, mask_ratio=1.5)", lambda: tok().encode(imgs(), mask_ratio=1.5),
         ValueError, r"mask_ratio=1\.5 is out of range; allowed \[0, 1\)"),
    Case("tok-encode-tau", "encode(x, noise_tau=2.0)", lambda: tok().encode(imgs(), noise_tau=2.0),
         ValueError, r"tau=2\.0 is out of range; allowed \[0, 1\]"),
    Case("tok-decode-channels", "decode(z) with 4 channels for an 8-channel tokenizer",
         lambda: tok().decode(torch.randn(2, 64, 4)),
         ValueError, r"z has shape \(2, 64, 4\); allowed \(B, L, 8\) latent tokens"),
    Case("tok-decode-tokens", "decode(z) with 16 of 64 tokens and no ids_restore",
         lambda: tok().decode(torch.randn(2, 16, 8)),
         ValueError, r"z has 16 tokens but the decoder needs 64 \(pass ids_restore from encode\(\)"),
    Case("tok-detokenize-grid", "detokenize(z) of grid 4x4 for an 8x8 tokenizer",
         lambda: tok().detokenize(latents(g=4)),
         ValueError, r"z has shape \(2, 8, 4, 4\); allowed \(B, 8, 8, 8\) normalised latents"),
    Case("tok-stats", "set_latent_stats(std=0)", lambda: tok().set_latent_stats(0.0, 0.0),
         ValueError, r"std must be > 0"),
    # ---- generators
    Case("gen-unknown-name", "create_generator('DiT_tinyy')", lambda: create_generator("DiT_tinyy"),
         ValueError, r"unknown generator 'DiT_tinyy' \(did you mean 'DiT_tiny'\?\); known: "),
    Case("gen-unknown-kwarg", "create_generator('DiT_tiny', in_chanels=8)",
         lambda: create_generator("DiT_tiny", in_chanels=8),
         TypeError, r"create_generator\('DiT_tiny'\): unknown option 'in_chanels' \(did you mean 'in_channels'\?\);"
                    r" allowed: .*in_channels"),
    Case("gen-bad-size", "create_generator(in_channels=0)", lambda: create_generator("DiT_tiny", in_channels=0),
         ValueError, r"in_channels=0 is invalid; allowed: an int >= 1"),
    Case("gen-cfg-low", "generate(labels, cfg_scale=0.5)", lambda: dit().generate(labels(), cfg_scale=0.5, num_steps=2),
         ValueError, r"cfg_scale=0\.5 is out of range; allowed \[1, inf\) \(1 = no guidance\)"),
    Case("gen-cfg-nan", "generate(labels, cfg_scale=nan)", lambda: dit().generate(labels(), cfg_scale=NAN, num_steps=2),
         ValueError, r"cfg_scale=nan is out of range; allowed \[1, inf\)"),
    Case("gen-steps-zero", "generate(labels, num_steps=0)", lambda: dit().generate(labels(), num_steps=0),
         ValueError, r"num_steps=0 is invalid; allowed: an int >= 1"),
    Case("gen-steps-float", "generate(labels, num_steps=2.5)", lambda: dit().generate(labels(), num_steps=2.5),
         ValueError, r"num_steps=2\.5 is invalid; allowed: an int >= 1"),
    Case("gen-steps-too-many", "DiT generate(num_steps=5000) (1000 timesteps)",
         lambda: dit().generate(labels(), num_steps=5000),
         ValueError, r"num_steps=5000 is out of range; allowed \[1, 1000\]"),
    Case("gen-temperature", "generate(labels, temperature=0)",
         lambda: dit().generate(labels(), num_steps=2, temperature=0.0),
         ValueError, r"temperature=0\.0 is out of range; allowed \(0, inf\)"),
    Case("gen-label-range", "generate(labels=[3, 11]) with 10 classes",
         lambda: dit().generate(labels(3, 11), num_steps=2),
         ValueError, r"label 11 is out of range; allowed \[0, 10\] \(10 = null/unconditional\)"),
    Case("gen-label-negative", "generate(labels=[-1])", lambda: dit().generate(labels(-1), num_steps=2),
         ValueError, r"label -1 is out of range; allowed \[0, 10\]"),
    Case("gen-label-dtype", "generate(labels) with dtype float32",
         lambda: dit().generate(torch.tensor([1.0, 2.0]), num_steps=2),
         TypeError, r"labels must be an integer tensor, got torch\.float32"),
    Case("gen-label-shape", "generate(labels) of shape (2, 1)",
         lambda: dit().generate(torch.zeros(2, 1, dtype=torch.long), num_steps=2),
         ValueError, r"labels must have shape \(B,\) with B >= 1, got \(2, 1\)"),
    Case("gen-sampler", "SiT generate(sampler='rk4')", lambda: sit().generate(labels(), num_steps=2, sampler="rk4"),
         ValueError, r"sampler='rk4' is not known; allowed: dopri5, euler"),
    Case("gen-sampler-option", "generate(..., foo=1)", lambda: dit().generate(labels(), num_steps=2, foo=1),
         ValueError, r"got unknown sampler option\(s\) foo; allowed: none"),
    Case("gen-loss-shape", "model(latents (2, 4, 8, 8), labels) for C=8", lambda: dit()(latents(c=4), labels()),
         ValueError, r"latents shape \(2, 4, 8, 8\) does not fit this model; expected \(B, 8, 8, 8\)"),
    Case("gen-loss-grid", "model(latents (2, 8, 16, 16), labels) for grid 8", lambda: dit()(latents(g=16), labels()),
         ValueError, r"latents shape \(2, 8, 16, 16\) does not fit this model"),
    Case("gen-loss-nan", "model(latents with NaN, labels)",
         lambda: dit()(latents().index_fill_(0, torch.tensor([0]), NAN), labels()),
         ValueError, r"latents contain NaN or inf values"),
    Case("gen-loss-int", "model(latents int64, labels)",
         lambda: dit()(latents().long(), labels()), TypeError, r"latents must be a float tensor, got torch\.int64"),
    Case("gen-loss-batch", "model(latents batch 2, labels batch 3)", lambda: dit()(latents(), labels(1, 2, 3)),
         ValueError, r"labels has 3 entries but latents have batch 2"),
    Case("gen-decode-channels", "decode_latents(tokenizer, latents with 4 channels)",
         lambda: decode_latents(tok(), latents(c=4)),
         ValueError, r"latents have 4 channels but the tokenizer expects 8"),
    # ---- metrics (PSNR/SSIM) and FID
    Case("psnr-shape", "psnr(x (2,3,32,32), y (2,3,16,16))", lambda: M.psnr(imgs(), imgs(size=16)),
         ValueError, r"x shape \(2, 3, 32, 32\) does not match y shape \(2, 3, 16, 16\)"),
    Case("psnr-nan", "psnr(x with NaN, y)", lambda: M.psnr(poisoned(NAN), imgs()),
         ValueError, r"x/y contain NaN or Inf values"),
    Case("psnr-uint8", "psnr(x uint8, y uint8)", lambda: M.psnr(imgs(dtype=torch.uint8), imgs(dtype=torch.uint8)),
         TypeError, r"x must be a float tensor in \[0, 1\], got dtype torch\.uint8"),
    Case("psnr-2d", "psnr(x (32, 32), y (32, 32))", lambda: M.psnr(torch.rand(32, 32), torch.rand(32, 32)),
         ValueError, r"x must have shape \(B, C, H, W\) or \(C, H, W\), got \(32, 32\)"),
    Case("psnr-reduction", "psnr(..., reduction='sum')", lambda: M.psnr(imgs(), imgs(), reduction="sum"),
         ValueError, r"reduction='sum' is not known; allowed: mean, none, batch"),
    Case("ssim-small", "ssim of 8x8 images (window 11)", lambda: M.ssim(imgs(size=8), imgs(size=8)),
         ValueError, r"images of 8x8 are smaller than the SSIM window win_size=11"),
    Case("ssim-inf", "ssim(x, y with Inf)", lambda: M.ssim(imgs(), poisoned(INF)),
         ValueError, r"x/y contain NaN or Inf values"),
    Case("fid-too-few", "fid(1 image, 4 images)", lambda: fid(imgs(1), imgs(4)),
         ValueError, r"images has 1 image; FID/KID need at least 2 per set"),
    Case("fid-nan", "fid(images with NaN, images)", lambda: fid(poisoned(NAN, n=4), imgs(4)),
         ValueError, r"images contain NaN or Inf values"),
    Case("fid-channels", "fid(images with 1 channel, images)", lambda: fid(imgs(4, channels=1), imgs(4)),
         ValueError, r"images must have shape \(N, 3, H, W\) with N >= 1, got \(4, 1, 32, 32\)"),
    Case("fid-sizes", "fid(32x32 images, 64x64 images)", lambda: fid(imgs(4), imgs(4, size=64)),
         ValueError, r"images are 32x32 but the reference images are 64x64; allowed: both sets at the same size"),
    Case("fid-range", "fid(images in [0, 255] as float, images)", lambda: fid(imgs(4) * 255, imgs(4)),
         ValueError, r"images values span \[.*\], out of range; allowed \[0, 1\]"),
    Case("fid-int64", "fid(images int64, images)", lambda: fid(imgs(4, dtype=torch.int64), imgs(4)),
         TypeError, r"images must be float in \[0, 1\] or uint8, got dtype torch\.int64"),
    Case("fid-missing-folder", "fid(a folder that does not exist, images)",
         lambda: fid(str(scratch() / "nope"), imgs(4)),
         FileNotFoundError, r"images: image folder '.*nope' does not exist"),
    Case("fid-empty-folder", "fid(an empty folder, images)", lambda: fid(str(empty_dir()), imgs(4)),
         ValueError, r"images: folder '.*empty' has no images \(png, "),
    Case("fid-feature-net", "fid(..., feature_net='vgg')", lambda: fid(imgs(4), imgs(4), feature_net="vgg"),
         ValueError, r"feature_net='vgg' is not known; allowed: shapes-cnn, inception"),
    Case("fid-stats-few", "fid_stats(features of 1 row)", lambda: F.fid_stats(torch.randn(1, 16)),
         ValueError, r"features must be a \(N, D\) tensor with N >= 2"),
    Case("fid-stats-missing", "load_fid_stats('missing.npz')", lambda: F.load_fid_stats(scratch() / "missing.npz"),
         FileNotFoundError, r"FID statistics file '.*missing\.npz' does not exist"),
    # ---- data
    Case("data-unknown", "DataConfig(dataset='imagenet')", lambda: make_dataset(DataConfig(dataset="imagenet")),
         ConfigError, r"DataConfig\.dataset='imagenet' is not known \(did you mean 'imagefolder'\?\); allowed: shapes"),
    Case("data-split", "make_dataset(cfg, split='test')", lambda: make_dataset(DataConfig(num_train=8), "test"),
         DataError, r"split='test' is not known; allowed 'train', 'val'"),
    Case("data-missing-dir", "imagefolder with data_dir that does not exist",
         lambda: make_dataset(DataConfig(dataset="imagefolder", data_dir=str(scratch() / "nope"))),
         DataError, r"data directory '.*nope' does not exist; put an ImageNet-layout folder there"),
    Case("data-empty-dir", "imagefolder with an empty data_dir",
         lambda: make_dataset(DataConfig(dataset="imagefolder", data_dir=str(empty_dir()))),
         DataError, r"data directory '.*empty' has no class sub-folders \(expected root/<class>/<images>\)"),
    Case("data-no-images", "imagefolder whose class folder holds no image",
         lambda: make_dataset(DataConfig(dataset="imagefolder", data_dir=str(folder_without_images()))),
         DataError, r"has class folders but no images \(extensions \.jpg"),
    Case("data-bad-image-error", "unreadable image with on_bad_image='error'",
         lambda: make_dataset(DataConfig(dataset="imagefolder", data_dir=str(folder_with_bad_image())),
                              on_bad_image="error")[0],
         DataError, r"cannot read image '.*a_broken\.png': .*on_bad_image='skip'"),
    Case("data-bad-image-option", "make_dataset(..., on_bad_image='ignore')",
         lambda: make_dataset(DataConfig(dataset="imagefolder", data_dir=str(folder_with_bad_image())),
                              on_bad_image="ignore"),
         DataError, r"on_bad_image='ignore' is not known; allowed 'skip', 'error'"),
    Case("data-cifar-missing", "cifar10 not downloaded",
         lambda: make_dataset(DataConfig(dataset="cifar10", data_dir=str(empty_dir()))),
         DataError, r"cifar10 is not under '.*empty' and this kit never downloads implicitly"),
    Case("data-img-size", "ShapesDataset(img_size=33)", lambda: ShapesDataset(8, img_size=33),
         DataError, r"img_size=33 is not supported; allowed 16, 32, 64"),
    Case("data-batch", "make_loader(batch_size=0)", lambda: make_loader(DataConfig(num_train=8), batch_size=0),
         DataError, r"batch_size=0 must be a positive int"),
    Case("data-batch-large", "make_loader(batch_size=64) on 8 images",
         lambda: make_loader(DataConfig(num_train=8), batch_size=64),
         DataError, r"batch_size=64 is larger than the train set \(8 images\)"),
    # ---- config and presets
    Case("cfg-preset", "load_preset('tinny')", lambda: load_preset("tinny"),
         ConfigError, r"unknown preset 'tinny' \(did you mean 'tiny'\?\); allowed: smoke, tiny, tiny-long, small, "
                      r"full"),
    Case("cfg-key", "override tokenizer.gama=2", lambda: load_preset("smoke").override(**{"tokenizer.gama": 2.0}),
         ConfigError, r"unknown TokenizerConfig key 'gama' \(did you mean 'gamma'\?\); allowed: model, "),
    Case("cfg-group", "override tokenizr.gamma=2", lambda: load_preset("smoke").override(**{"tokenizr.gamma": 2.0}),
         ConfigError, r"unknown config group 'tokenizr' \(did you mean 'tokenizer'\?\)"),
    Case("cfg-flat-key", "override gamma=2 (no group)", lambda: load_preset("smoke").override(gamma=2.0),
         ConfigError, r"override 'gamma' must be 'group\.key' with group one of: data, tokenizer"),
    Case("cfg-type", "override tokenizer.gamma='high'",
         lambda: load_preset("smoke").override(**{"tokenizer.gamma": "high"}),
         ConfigError, r"TokenizerConfig\.gamma must be float, got 'high' \(str\)"),
    Case("cfg-type-int", "TrainConfig(steps=2.5)", lambda: TrainConfig(steps=2.5),
         ConfigError, r"TrainConfig\.steps must be int, got 2\.5 \(float\)"),
    Case("cfg-gamma-range", "TokenizerConfig(gamma=-1)", lambda: TokenizerConfig(gamma=-1.0),
         ConfigError, r"TokenizerConfig\.gamma=-1\.0 is out of range; allowed \[0\.0, inf\]"),
    Case("cfg-gamma-nan", "TokenizerConfig(gamma=nan)", lambda: TokenizerConfig(gamma=NAN),
         ConfigError, r"TokenizerConfig\.gamma=nan is not a finite number; allowed \[0\.0, inf\]"),
    Case("cfg-mask-range", "override tokenizer.mask_ratio=1.0",
         lambda: load_preset("smoke").override(**{"tokenizer.mask_ratio": 1.0}),
         ConfigError, r"TokenizerConfig\.mask_ratio=1\.0 is out of range; allowed \[0\.0, 1\.0\)"),
    Case("cfg-cfg-range", "override generator.cfg_scale=0.5",
         lambda: load_preset("smoke").override(**{"generator.cfg_scale": 0.5}),
         ConfigError, r"GeneratorConfig\.cfg_scale=0\.5 is out of range; allowed \[1\.0, inf\]"),
    Case("cfg-latent-stats", "override generator.latent_stats=median",
         lambda: load_preset("smoke").override(**{"generator.latent_stats": "median"}),
         ConfigError, r"GeneratorConfig\.latent_stats='median' is not known .*allowed: mean, sample"),
    Case("latent-stats-of", "compute_latent_stats(of='modes')",
         lambda: T.compute_latent_stats(None, DataConfig(), of="modes"),
         ValueError, r"of='modes' is not known; allowed: mean, sample"),
    Case("cfg-steps-range", "override tokenizer_train.steps=0",
         lambda: load_preset("smoke").override(**{"tokenizer_train.steps": 0}),
         ConfigError, r"TrainConfig\.steps=0 is out of range; allowed \[1, 1000000000\]"),
    Case("cfg-choice", "TrainConfig(precision='fp16')", lambda: TrainConfig(precision="fp16"),
         ConfigError, r"TrainConfig\.precision='fp16' is not known .*allowed: auto, bf16, fp32"),
    # ---- checkpoints and safe loading
    Case("ckpt-other-size", "load detok_tiny weights into detok_small_cpu",
         lambda: C.load_weights(create_tokenizer("detok_small_cpu"), tok_ckpt()),
         C.CheckpointError, r"weights in '.*' do not fit this model .*another model or size\?"),
    Case("ckpt-other-model", "load DiT_tiny weights into a tokenizer",
         lambda: C.load_weights(create_tokenizer("detok_tiny"), gen_ckpt()),
         C.CheckpointError, r"do not fit this model .*was the checkpoint made for another model or size\?"),
    Case("ckpt-other-channels", "load an 8-channel DiT_tiny checkpoint into in_channels=4",
         lambda: C.load_weights(create_generator("DiT_tiny", in_channels=4), gen_ckpt()),
         C.CheckpointError, r"do not fit this model"),
    Case("ckpt-truncated", "from_pretrained(a checkpoint whose weights were truncated)",
         lambda: from_pretrained(truncated_ckpt()),
         C.CheckpointError, r"checkpoint file '.*model\.safetensors' is truncated \(1000 bytes, expected \d+\)"),
    Case("ckpt-missing", "from_pretrained('does/not/exist')", lambda: from_pretrained(scratch() / "nope"),
         C.CheckpointError, r"'.*nope' does not exist"),
    Case("ckpt-empty-run", "from_pretrained(a run dir with no checkpoint)", lambda: from_pretrained(empty_dir()),
         C.CheckpointError, r"no complete checkpoint in '.*empty' \(expected checkpoints/step_\*/MANIFEST\.json\)"),
    Case("ckpt-which", "from_pretrained(..., which='best')", lambda: from_pretrained(tok_ckpt(), which="best"),
         ValueError, r"which='best' is not known; allowed: 'ema', 'model'"),
    Case("ckpt-pickle", "safe_torch_load(.pth carrying a pickled object)", lambda: safe_torch_load(evil_pth()),
         UnsafeFileError, r"refused '.*evil\.pth': it contains pickled code or Python objects \(__builtin__\.print\)"),
    Case("official-pickle", "load_official_checkpoint(.pth carrying a pickled object)",
         lambda: load_official_checkpoint(evil_pth(), "detok_tiny"),
         ValueError, r"refused '.*evil\.pth': it contains pickled code"),
    Case("official-truncated", "load_official_checkpoint(a truncated .pth)",
         lambda: load_official_checkpoint(truncated_pth(), "detok_tiny"),
         ValueError, r"'.*truncated\.pth'.*(truncated|corrupt)"),
    Case("official-size", "load_official_checkpoint(detok_tiny weights, name='detok_BB')",
         lambda: load_official_checkpoint({"model_ema": tok().state_dict()}, "detok_BB"),
         ValueError, r"the given dict does not match detok_BB .*The file looks like: img_size=32, patch_size=4"),
    Case("official-missing", "load_official_checkpoint('missing.pth')",
         lambda: load_official_checkpoint(scratch() / "missing.pth"),
         FileNotFoundError, r"no checkpoint at '.*missing\.pth'; the official l-DeTok weights are linked"),
    # ---- the command line (in-process; one line on stderr, exit code 2)
    Case("cli-run-notebook", "ldetok-lite run 99_nope", lambda: cli("run", "99_nope", "--out", str(scratch() / "o")),
         CliFailed, r"^ldetok-lite: error: notebook '99_nope' matches no notebook; known: 00_welcome"),
    Case("cli-run-preset", "ldetok-lite run 01 --preset tinny",
         lambda: cli("run", "01", "--preset", "tinny", "--out", str(scratch() / "o")),
         CliFailed, r"unknown preset 'tinny' \(did you mean 'tiny'\?\); allowed: smoke, tiny, tiny-long, small, full"),
    Case("cli-run-param-name", "ldetok-lite run 01 -p gama 2",
         lambda: cli("run", "01", "--preset", "smoke", "--out", str(scratch() / "o"), "-p", "gama", "2"),
         CliFailed, r"unknown parameter 'gama' for 01_latent_corruption; it takes: preset, seed, out_dir"),
    Case("cli-run-param-type", "ldetok-lite run 01 -p device 3",
         lambda: cli("run", "01", "--preset", "smoke", "--out", str(scratch() / "o"), "-p", "device", "3"),
         CliFailed, r"parameter device=3 (has the wrong type for 01_latent_corruption: expected|must be) str"),
    Case("cli-run-param-range", "ldetok-lite run 01 -p device tpu",
         lambda: cli("run", "01", "--preset", "smoke", "--out", str(scratch() / "o"), "-p", "device", "tpu"),
         CliFailed, r"notebook parameter device='tpu' is not allowed; allowed: auto, cpu, cuda, mps"),
    Case("cli-run-param-code", "ldetok-lite run 01 -p device \"__import__('os').system('touch pwned')\"",
         lambda: cli("run", "01", "--preset", "smoke", "--out", str(scratch() / "o"), "-p", "device",
                     "__import__('os').system('touch pwned')"),
         CliFailed, r"notebook parameter device=\"__import__\('os'\)\.system\('touch pwned'\)\" is not allowed"),
    Case("cli-run-seed", "ldetok-lite run 01 --seed -1",
         lambda: cli("run", "01", "--preset", "smoke", "--out", str(scratch() / "o"), "--seed", "-1"),
         CliFailed, r"notebook parameter seed=-1 must be >= 0"),
    Case("cli-run-reserved", "ldetok-lite run 01 -p seed 3",
         lambda: cli("run", "01", "--preset", "smoke", "--out", str(scratch() / "o"), "-p", "seed", "3"),
         CliFailed, r"pass seed with its own option \(--seed\), not -p"),
    Case("cli-run-data-dir", "ldetok-lite run 00 -p data_dir /missing",
         lambda: cli("run", "00", "--preset", "smoke", "--out", str(scratch() / "o"), "-p", "data_dir",
                     str(scratch() / "nope")),
         CliFailed, r"data_dir '.*nope' does not exist"),
    Case("cli-eval-nothing", "ldetok-lite evaluate (no model)", lambda: cli("evaluate"),
         CliFailed, r"nothing to evaluate: pass --tokenizer DIR \(rFID\) and/or --generator DIR \(gFID\)"),
    Case("cli-eval-missing", "ldetok-lite evaluate --tokenizer /missing",
         lambda: cli("evaluate", "--tokenizer", str(scratch() / "nope")),
         CliFailed, r"--tokenizer '.*nope' is not a directory"),
    Case("cli-eval-cfg", "ldetok-lite evaluate --cfg-scale 0.5",
         lambda: cli("evaluate", "--tokenizer", str(tok_ckpt()), "--cfg-scale", "0.5"),
         CliFailed, r"--cfg-scale \[0\.5\] is out of range; allowed >= 1 \(1 = no guidance\)"),
    Case("cli-eval-steps", "ldetok-lite evaluate --steps -1",
         lambda: cli("evaluate", "--tokenizer", str(tok_ckpt()), "--steps", "-1"),
         CliFailed, r"--steps -1 must be >= 0 \(0 = the family's default\)"),
    Case("cli-eval-num-images", "ldetok-lite evaluate --num-images 1",
         lambda: cli("evaluate", "--tokenizer", str(tok_ckpt()), "--num-images", "1"),
         CliFailed, r"--num-images 1 must be >= 2 \(FID needs a covariance\)"),
    Case("cli-eval-temperature", "ldetok-lite evaluate --temperature 0",
         lambda: cli("evaluate", "--tokenizer", str(tok_ckpt()), "--temperature", "0"),
         CliFailed, r"--temperature 0\.0 must be > 0"),
    Case("cli-eval-preset", "ldetok-lite evaluate --preset tinny",
         lambda: cli("evaluate", "--tokenizer", str(tok_ckpt()), "--preset", "tinny"),
         CliFailed, r"--preset 'tinny' is not known; allowed: smoke, tiny, tiny-long, small, full"),
    Case("cli-eval-kind", "ldetok-lite evaluate --tokenizer <a generator checkpoint>",
         lambda: cli("evaluate", "--tokenizer", str(gen_ckpt()), "--preset", "smoke"),
         CliFailed, r"'.*gen_ckpt' holds a generator checkpoint, not a tokenizer"),
    Case("cli-eval-truncated", "ldetok-lite evaluate --tokenizer <a truncated checkpoint>",
         lambda: cli("evaluate", "--tokenizer", str(truncated_ckpt()), "--preset", "smoke"),
         CliFailed, r"cannot load the tokenizer from '.*trunc_ckpt': .*is truncated"),
    Case("cli-eval-argparse", "ldetok-lite evaluate --num-images many",
         lambda: cli("evaluate", "--num-images", "many"),
         CliFailed, r"argument --num-images: invalid int value: 'many'"),
    Case("cli-train-preset", "ldetok-lite train tokenizer --preset tinny",
         lambda: cli("train", "tokenizer", "--preset", "tinny", "--out", str(scratch() / "t")),
         CliFailed, r"unknown preset 'tinny' \(did you mean 'tiny'\?\)"),
    Case("cli-train-set-key", "ldetok-lite train tokenizer --set tokenizer.gama=2",
         lambda: cli("train", "tokenizer", "--out", str(scratch() / "t"), "--set", "tokenizer.gama=2"),
         CliFailed, r"unknown TokenizerConfig key 'gama' \(did you mean 'gamma'\?\)"),
    Case("cli-train-set-range", "ldetok-lite train tokenizer --set tokenizer.gamma=-1",
         lambda: cli("train", "tokenizer", "--out", str(scratch() / "t"), "--set", "tokenizer.gamma=-1"),
         CliFailed, r"TokenizerConfig\.gamma=-1\.0 is out of range; allowed \[0\.0, inf\]"),
    Case("cli-train-set-nan", "ldetok-lite train tokenizer --set tokenizer.gamma=nan",
         lambda: cli("train", "tokenizer", "--out", str(scratch() / "t"), "--set", "tokenizer.gamma=nan"),
         CliFailed, r"TokenizerConfig\.gamma=nan is not a finite number; allowed \[0\.0, inf\]"),
    Case("cli-train-model", "ldetok-lite train tokenizer --set tokenizer.model=detok_tinyy",
         lambda: cli("train", "tokenizer", "--preset", "smoke", "--device", "cpu", "--out", str(scratch() / "t"),
                     "--set", "tokenizer.model=detok_tinyy"),
         CliFailed, r"unknown tokenizer 'detok_tinyy' \(did you mean 'detok_tiny'\?\)"),
    Case("cli-train-set-form", "ldetok-lite train tokenizer --set gamma",
         lambda: cli("train", "tokenizer", "--out", str(scratch() / "t"), "--set", "gamma"),
         CliFailed, r"--set 'gamma' must look like group\.key=value, e\.g\. tokenizer\.gamma=2\.0"),
    Case("cli-train-variant", "ldetok-lite train tokenizer --variant big",
         lambda: cli("train", "tokenizer", "--out", str(scratch() / "t"), "--variant", "big"),
         CliFailed, r"--variant 'big' is not known; allowed: plain, mask_only, noise_only, ldetok, additive"),
    Case("cli-train-device", "ldetok-lite train tokenizer --device tpu",
         lambda: cli("train", "tokenizer", "--out", str(scratch() / "t"), "--device", "tpu"),
         CliFailed, r"device='tpu' is not known; use one of auto, cpu, cuda, mps"),
    Case("cli-train-data-dir", "ldetok-lite train tokenizer --data-dir /missing",
         lambda: cli("train", "tokenizer", "--out", str(scratch() / "t"), "--data-dir", str(scratch() / "nope")),
         CliFailed, r"--data-dir '.*nope' does not exist"),
    Case("cli-train-gen-tokenizer", "ldetok-lite train generator --tokenizer /missing",
         lambda: cli("train", "generator", "--family", "SiT", "--out", str(scratch() / "t"), "--tokenizer",
                     str(scratch() / "nope")),
         CliFailed, r"--tokenizer '.*nope' is not a directory"),
    Case("cli-train-gen-kind", "ldetok-lite train generator --tokenizer <a generator checkpoint>",
         lambda: cli("train", "generator", "--family", "SiT", "--preset", "smoke", "--out", str(scratch() / "t"),
                     "--tokenizer", str(gen_ckpt())),
         CliFailed, r"--tokenizer '.*gen_ckpt' holds a generator checkpoint, not a tokenizer"),
    Case("cli-train-gen-family", "ldetok-lite train generator --family SiTT",
         lambda: cli("train", "generator", "--family", "SiTT", "--preset", "smoke", "--out", str(scratch() / "t"),
                     "--tokenizer", str(tok_ckpt())),
         CliFailed, r"unknown generator 'SiTT_tiny' \(did you mean 'SiT_tiny'\?\)"),
    Case("cli-bench-tok-model", "ldetok-lite bench tokenizer --model detok_tinyy",
         lambda: cli("bench", "tokenizer", "--model", "detok_tinyy", "--steps", "1", "--warmup", "0"),
         CliFailed, r"unknown tokenizer 'detok_tinyy' \(did you mean 'detok_tiny'\?\)"),
    Case("cli-bench-tok-steps", "ldetok-lite bench tokenizer --steps 0",
         lambda: cli("bench", "tokenizer", "--model", "detok_tiny", "--steps", "0"),
         CliFailed, r"--steps 0 must be >= 1"),
    Case("cli-bench-tok-gamma", "ldetok-lite bench tokenizer --gamma -1",
         lambda: cli("bench", "tokenizer", "--model", "detok_tiny", "--img", "32", "--gamma", "-1", "--steps", "1",
                     "--warmup", "0"),
         CliFailed, r"gamma=-1\.0 is out of range; allowed a finite float >= 0"),
    Case("cli-bench-gen-model", "ldetok-lite bench generator --model SiT_tinyy",
         lambda: cli("bench", "generator", "--model", "SiT_tinyy"),
         CliFailed, r"unknown generator 'SiT_tinyy' \(did you mean 'SiT_tiny'\?\)"),
    Case("cli-bench-gen-cfg", "ldetok-lite bench generator --cfg-scale 0.5",
         lambda: cli("bench", "generator", "--model", "DiT_tiny", "--cfg-scale", "0.5"),
         CliFailed, r"cfg_scale=0\.5 is out of range; allowed \[1, inf\) \(1 = no guidance\)"),
    Case("cli-bench-gen-batch", "ldetok-lite bench generator --batch 0",
         lambda: cli("bench", "generator", "--model", "DiT_tiny", "--batch", "0"),
         CliFailed, r"--batch 0 must be >= 1"),
    Case("cli-bench-gen-warmup", "ldetok-lite bench generator --warmup -1",
         lambda: cli("bench", "generator", "--model", "DiT_tiny", "--warmup", "-1"),
         CliFailed, r"--warmup -1 must be >= 0"),
    Case("cli-bench-gen-kv-model", "ldetok-lite bench generator --compare-kv-cache on a non-AR model",
         lambda: cli("bench", "generator", "--model", "DiT_tiny", "--compare-kv-cache", "--no-sampling",
                     "--batch", "2", "--steps", "1", "--warmup", "0"),
         CliFailed, r"--compare-kv-cache needs an AR model \(RasterAR_\* or RandomAR_\*\), got 'DiT_tiny'"),
    Case("cli-bench-compare-seeds", "ldetok-lite bench compare --seeds 0",
         lambda: cli("bench", "compare", "--preset", "smoke", "--seeds", "0"),
         CliFailed, r"--seeds 0 must be >= 1"),
]


# ------------------------------------------------------------------------------------------------
# hostile and careless use (issue 19): code in weights files, user files, links, silent results
# ------------------------------------------------------------------------------------------------
# A case whose ``exc`` is None must succeed; its call checks the outcome and raises one of these
# when the operation lost data, gave a wrong result, or ran code from a file.


class DataLoss(Exception):
    """A user's file was deleted or overwritten."""


class SilentWrong(Exception):
    """The call returned a wrong result without a word."""


class CodeRan(Exception):
    """A weights file's pickled code ran."""


def marker() -> Path:
    return scratch() / "PWNED"


class _SystemCall:
    def __reduce__(self):
        return (os.system, (f"touch {marker()}",))


@functools.cache
def system_pth(name: str = "evil.pth") -> Path:
    """A .pth whose unpickling runs ``touch PWNED`` (an os.system payload)."""
    p = scratch() / "payloads" / name
    p.parent.mkdir(exist_ok=True)
    torch.save({"w": torch.ones(2), "hook": _SystemCall()}, p)
    return p


def no_code_ran(fn):
    def call():
        try:
            return fn()
        finally:
            if marker().exists():
                marker().unlink()
                raise CodeRan("the payload's os.system ran")
    return call


def in_env(fn, **env):
    def call():
        old = {k: os.environ.get(k) for k in env}
        os.environ.update({k: str(v) for k, v in env.items()})
        try:
            return fn()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return call


def planted_hub(filename: str) -> Path:
    """A torch hub folder (``TORCH_HOME``) holding the payload under ``filename``."""
    home = scratch() / f"torch-{filename}"
    hub = home / "hub" / "checkpoints"
    hub.mkdir(parents=True, exist_ok=True)
    shutil.copy(system_pth(), hub / filename)
    return home


def fresh(name: str) -> Path:
    p = scratch() / "fresh" / name
    shutil.rmtree(p, ignore_errors=True)
    p.mkdir(parents=True)
    return p


def victim() -> Path:
    v = scratch() / "victim.txt"
    v.write_text("original")
    return v


def untouched(fn, *paths):
    """Run ``fn``; raise DataLoss when the victim file changed or one of ``paths`` is gone."""
    def call():
        v = victim()
        try:
            return fn(v)
        finally:
            if v.read_bytes() != b"original":
                raise DataLoss(f"{v} was overwritten through a link")
    return call


def tiny_train(out: Path, **set_items) -> list[str]:
    items = {"tokenizer_train.steps": 2, "tokenizer.warm_start": "none", **set_items}
    argv = ["train", "tokenizer", "--preset", "smoke", "--device", "cpu", "--out", str(out)]
    for k, v in items.items():
        argv += ["--set", f"{k}={v}"]
    return argv


def train_with_user_metrics():
    out = fresh("user_metrics")
    (out / "metrics.jsonl").write_text("my notes\n")
    try:
        cli(*tiny_train(out))
    finally:
        if not (out / "metrics.jsonl").is_file() or (out / "metrics.jsonl").read_text() != "my notes\n":
            raise DataLoss("metrics.jsonl of the user was deleted or changed")


def prune_user_folders():
    out = fresh("prune")
    for s in (1, 2, 3):
        C.save_pretrained(tok(), C.checkpoint_dir(out, s))
    mine = out / C.CKPT_SUBDIR / "my.old.backup"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    C.prune_checkpoints(out, keep=2)
    if not (mine / "notes.txt").is_file():
        raise DataLoss("prune_checkpoints deleted the user's folder 'my.old.backup'")


def final_eval_fails():
    from ldetok_lite.training import tokenizer as tt

    out = fresh("final_eval")
    real = tt.save_sample_figure

    def broken(*a, **k):
        raise RuntimeError("the sample figure could not be drawn")

    tt.save_sample_figure = broken
    try:
        T.train_tokenizer(TokenizerConfig(warm_start="none"), TrainConfig(steps=2, batch_size=8, log_every=1),
                          DataConfig(num_train=16, num_val=8), out, device="cpu", progress="none", log=lambda *a: None)
    finally:
        tt.save_sample_figure = real
        if C.latest_checkpoint(out, log=lambda *a: None) is None:
            raise DataLoss("the finished training was not saved (the evaluation came first and failed)")


def through_link(name: str, write):
    def call(v):
        out = fresh(f"link-{name}")
        (out / name).symlink_to(v)
        write(out)
    return call


def ckpt_tmp_link():
    out = fresh("ckpt-link")
    other = fresh("ckpt-victim")
    (other / "keep.txt").write_text("keep")
    (out / C.CKPT_SUBDIR).mkdir()
    (out / C.CKPT_SUBDIR / f"step_0000001.tmp{os.getpid()}").symlink_to(other, target_is_directory=True)
    C.save_pretrained(tok(), C.checkpoint_dir(out, 1))
    if sorted(p.name for p in other.iterdir()) != ["keep.txt"]:
        raise DataLoss("the checkpoint was written into (or deleted) the folder the link points to")


def seed_kept():
    out = fresh("seed")
    cli(*tiny_train(out, **{"tokenizer_train.seed": 7}))
    got = C.read_config(out)["configs"]["tokenizer_train"]["seed"]
    if got != 7:
        raise SilentWrong(f"--set tokenizer_train.seed=7 was saved as {got} (--seed's default won)")


@functools.cache
def foreign_generator() -> Path:
    """A SiT trained (2 steps) on the latents of tok_ckpt()."""
    from ldetok_lite.config import GeneratorConfig

    out = scratch() / "gen_on_tok"
    T.train_generator("SiT", GeneratorConfig(num_sampling_steps=2), TrainConfig(steps=1, batch_size=8, log_every=1),
                      DataConfig(num_train=16, num_val=8), from_pretrained(tok_ckpt()), out, device="cpu",
                      progress="none", log=lambda *a: None, eval_samples=0)
    return out


@functools.cache
def other_tok_ckpt() -> Path:
    torch.manual_seed(1)
    return C.save_pretrained(create_tokenizer("detok_tiny"), scratch() / "other_tok")


def read_image(make) -> list[float]:
    root = fresh("images")
    (root / "a").mkdir()
    make(root / "a")
    ds = ImageFolderDataset(str(root), img_size=32, hflip=False)
    return [round(float(v), 2) for v in ds[0][0].mean((1, 2))]


def png16(d: Path):
    import numpy as np

    Image.fromarray((np.ones((40, 40)) * 1000).astype(np.uint16)).save(d / "g16.png")


def rgba(d: Path):
    Image.new("RGBA", (40, 40), (255, 0, 0, 0)).save(d / "clear.png")


def exif_rotated(d: Path):
    im = Image.new("RGB", (64, 32), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 32, 32))  # left half white; EXIF 6: shown rotated 90° clockwise
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(d / "r.jpg", exif=exif)


def expect(value, want, what):
    if value != want:
        raise SilentWrong(f"{what}: got {value}, expected {want}")
    return value


def exif_top_is_white():
    root = fresh("exif")
    (root / "a").mkdir()
    exif_rotated(root / "a")
    x = ImageFolderDataset(str(root), img_size=32, hflip=False)[0][0]
    top, bottom = float(x[:, :16].mean()), float(x[:, 16:].mean())
    if not top > 0.9 > 0.1 > bottom:
        raise SilentWrong(f"EXIF orientation ignored: top half {top:.2f}, bottom half {bottom:.2f}")


def tampered_manifest():
    d = C.save_pretrained(tok(), fresh("manifest") / "ck")
    man = json.loads((d / C.MANIFEST).read_text())
    man["files"]["../../victim.txt"] = {"size": 8, "sha256": "0" * 64}
    (d / C.MANIFEST).write_text(json.dumps(man))
    return from_pretrained(d)


def planted_ema():
    from ldetok_lite.io import save_tensors_atomic

    d = C.save_pretrained(tok(), fresh("planted") / "ck")  # no EMA written
    save_tensors_atomic(d / C.EMA_FILE, {k: torch.zeros_like(v) for k, v in tok().state_dict().items()})
    loaded = from_pretrained(d)
    if not torch.equal(loaded.decoder.mask_token, tok().decoder.mask_token):
        raise SilentWrong("from_pretrained read ema.safetensors, a file its manifest does not list")


def planted_stats():
    from ldetok_lite.io import save_tensors_atomic
    from ldetok_lite.pretrained import load_latent_stats

    d = C.save_pretrained(tok(), fresh("stats") / "ck")
    save_tensors_atomic(d / "extra_latent_stats.safetensors", {"mean": torch.zeros(8), "std": torch.ones(8)})
    return load_latent_stats(d)


def full_disk_write():
    import errno

    from ldetok_lite import io as lio

    real = lio.os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def __getattr__(self, name):
            return getattr(self.f, name)

    lio.os.fdopen = lambda *a, **k: Full(real(*a, **k))
    try:
        cli(*tiny_train(fresh("disk") / "run"))
    finally:
        lio.os.fdopen = real


def a_file() -> Path:
    p = scratch() / "a_file"
    p.write_text("x")
    return p


def truncated_npz() -> Path:
    p = scratch() / "ref.npz"
    p.write_bytes(b"PK\x03\x04 truncated")
    return p


HOSTILE_CASES: list[Case] = [
    # ---- 1-2: code in weights files
    Case("code-inception-path", "--inception-weights FILE with an os.system payload",
         no_code_ran(lambda: F.get_feature_net("inception", img_size=64, inception_weights=str(system_pth()))),
         UnsafeFileError, r"refused .*: it contains pickled code or Python objects \(posix\.system\)"),
    Case("code-inception-env", "LDETOK_INCEPTION_WEIGHTS=FILE with an os.system payload",
         no_code_ran(in_env(lambda: F.get_feature_net("inception", img_size=64),
                            LDETOK_INCEPTION_WEIGHTS=system_pth())),
         UnsafeFileError, r"contains pickled code"),
    Case("code-inception-hub", "a payload planted as the Inception weights in the torch hub cache",
         no_code_ran(in_env(lambda: F.get_feature_net("inception", img_size=64),
                            TORCH_HOME=planted_hub("weights-inception-2015-12-05-6726825d.pth"))),
         UnsafeFileError, r"contains pickled code"),
    Case("code-vgg-hub", "a payload planted as the VGG16 LPIPS trunk in the torch hub cache",
         no_code_ran(in_env(lambda: __import__("ldetok_lite.losses", fromlist=["x"]).build_lpips("lpips-vgg"),
                            TORCH_HOME=planted_hub("vgg16-397923af.pth"))),
         UnsafeFileError, r"contains pickled code"),
    Case("code-convnext-hub", "a payload planted as the ConvNeXt-S weights in the torch hub cache",
         no_code_ran(in_env(lambda: __import__("ldetok_lite.losses", fromlist=["x"]).ConvNeXtLogits(),
                            TORCH_HOME=planted_hub("convnext_small-0c510722.pth"))),
         UnsafeFileError, r"contains pickled code"),
    Case("code-official-tokenizer", "load_official_checkpoint(FILE with an os.system payload)",
         no_code_ran(lambda: load_official_checkpoint(system_pth())), UnsafeFileError, r"contains pickled code"),
    Case("code-diagnosis", "safe_torch_load(os.system payload): named as code, not as corruption",
         no_code_ran(lambda: safe_torch_load(system_pth())),
         UnsafeFileError, r"^refused .*contains pickled code or Python objects .*could run a program"),
    # ---- 3-5: user files
    Case("loss-user-metrics", "train into a folder holding the user's own metrics.jsonl", train_with_user_metrics,
         CliFailed, r"already holds metrics\.jsonl, not written by a training run of this kit"),
    Case("loss-prune-user-folder", "prune_checkpoints with the user's checkpoints/my.old.backup", prune_user_folders,
         None, ""),
    Case("loss-final-eval", "the end-of-run evaluation fails after the last step", final_eval_fails,
         RuntimeError, r"the sample figure could not be drawn"),
    Case("link-metrics-tmp", "metrics.jsonl.tmp is a link to another file",
         untouched(through_link("metrics.jsonl.tmp", lambda o: write_jsonl_atomic(o / "metrics.jsonl", [{"a": 1}]))),
         None, ""),
    Case("link-summary-tmp", "summary.json.tmp is a link to another file",
         untouched(through_link("summary.json.tmp", lambda o: write_json_atomic(o / "summary.json", {"a": 1}))),
         None, ""),
    Case("link-checkpoint-tmp", "checkpoints/step_0000001.tmp<pid> is a link to another folder", ckpt_tmp_link,
         None, ""),
    Case("link-png", "an output PNG name is a link to another file",
         untouched(through_link("000000.png", lambda o: F.save_png_folder(imgs(1), o))), None, ""),
    Case("link-torchrun-log", "torchrun.log is a link to another file",
         untouched(through_link("torchrun.log", lambda o: __import__(
             "ldetok_lite.experiments.fullscale", fromlist=["x"]).stream_subprocess(
             [sys.executable, "-c", "print(1)"], o / "torchrun.log", log=lambda *a: None))),
         FileContentError, r"is a symbolic link; the kit does not write through links"),
    Case("link-notebook-output", "ldetok-lite run: the executed notebook's path is a link",
         untouched(through_link("00_welcome.ipynb", lambda o: cli("run", "00", "--preset", "smoke", "--out", str(o)))),
         CliFailed, r"00_welcome\.ipynb is a symbolic link"),
    # ---- 6: silent wrong results
    Case("silent-foreign-tokenizer", "evaluate a generator with a tokenizer it was not trained on",
         lambda: cli("evaluate", "--generator", str(foreign_generator()), "--tokenizer", str(other_tok_ckpt()),
                     "--preset", "smoke", "--num-images", "4"),
         CliFailed, r"was trained on the latents of .*, not of this tokenizer"),
    Case("silent-seed", "--set tokenizer_train.seed=7 without --seed", seed_kept, None, ""),
    Case("silent-ema-one", "TrainConfig(ema_decay=1.0)", lambda: TrainConfig(ema_decay=1.0),
         ConfigError, r"ema_decay=1\.0 is out of range; allowed \[0(\.0)?, 1(\.0)?\)"),
    Case("silent-png16", "a 16-bit PNG (value 1000/65535)",
         lambda: expect(read_image(png16), [0.02, 0.02, 0.02], "16-bit PNG"), None, ""),
    Case("silent-rgba", "a fully transparent red RGBA PNG",
         lambda: expect(read_image(rgba), [1.0, 1.0, 1.0], "transparent pixels (on white)"), None, ""),
    Case("silent-exif", "a JPEG with EXIF orientation 6", exif_top_is_white, None, ""),
    Case("silent-psnr-empty", "psnr of an empty batch", lambda: M.psnr(imgs(0), imgs(0)),
         ValueError, r"empty"),
    Case("silent-fid-nan", "FID between statistics with NaN",
         lambda: F.fid_between_stats({"mu": torch.zeros(4).numpy(), "sigma": torch.full((4, 4), NAN).numpy()},
                                     {"mu": torch.zeros(4).numpy(), "sigma": torch.eye(4).numpy()}),
         ValueError, r"statistics.*(NaN|not finite)"),
    Case("silent-encode-gamma-neg", "tokenizer.encode(x, noise_tau=0.5, gamma=-1)",
         lambda: tok().encode(imgs(), noise_tau=0.5, gamma=-1.0), ValueError, r"gamma=-1\.0 is out of range"),
    Case("silent-encode-gamma-nan", "tokenizer.encode(x, noise_tau=0.5, gamma=nan)",
         lambda: tok().encode(imgs(), noise_tau=0.5, gamma=NAN), ValueError, r"gamma=nan is out of range"),
    # ---- 7: operating-system refusals
    Case("os-out-file", "ldetok-lite train --out FILE", lambda: cli(*tiny_train(a_file())),
         CliFailed, r"--out '.*a_file' is a file, not a folder"),
    Case("os-out-under-file", "ldetok-lite train --out FILE/sub", lambda: cli(*tiny_train(a_file() / "sub")),
         CliFailed, r"is inside '.*a_file', which is a file"),
    Case("os-run-out-file", "ldetok-lite run --out FILE", lambda: cli("run", "00", "--preset", "smoke", "--out",
                                                                       str(a_file())),
         CliFailed, r"--out '.*a_file' is a file, not a folder"),
    Case("os-eval-out-dir", "ldetok-lite evaluate --out DIR",
         lambda: cli("evaluate", "--tokenizer", str(tok_ckpt()), "--out", str(scratch())),
         CliFailed, r"--out '.*' is a folder; give a file name"),
    Case("os-kernel", "ldetok-lite run --kernel nosuchkernel",
         lambda: cli("run", "00", "--preset", "smoke", "--out", str(fresh("kernel")), "--kernel", "nosuchkernel"),
         CliFailed, r"--kernel 'nosuchkernel' is not installed"),
    Case("os-ref-stats-truncated", "evaluate --ref-stats TRUNCATED.npz",
         lambda: cli("evaluate", "--generator", str(gen_ckpt()), "--tokenizer", str(tok_ckpt()), "--ref-stats",
                     str(truncated_npz())),
         CliFailed, r"cannot read the FID statistics file .*ref\.npz"),
    Case("os-disk-full", "the disk fills up while a checkpoint is written", full_disk_write,
         CliFailed, r"the disk is full"),
    # ---- 8: other dtypes, devices, sizes
    Case("dtype-tokenize-half", "tokenizer.tokenize(x.half())",
         lambda: expect(tok().tokenize(imgs().half()).dtype, torch.float32, "dtype"), None, ""),
    Case("dtype-tokenize-meta", "tokenizer.tokenize(x on the meta device)",
         lambda: tok().tokenize(torch.empty(1, 3, 32, 32, device="meta")), ValueError, r"meta"),
    Case("dtype-noise-int", "interpolative_noise(integer latents)",
         lambda: K.interpolative_noise(torch.zeros(2, 3, dtype=torch.long), 0.5, 3.0), TypeError, r"z must be"),
    Case("size-mask-empty", "random_mask of an empty batch",
         lambda: expect(tuple(K.random_mask(torch.zeros(0, 4, 3), 0.5)[0].shape[:1]), (0,), "batch"), None, ""),
    Case("size-classes", "create_generator(num_classes=10**12)",
         lambda: create_generator("DiT_tiny", num_classes=10**12), ValueError, r"num_classes"),
    Case("size-steps", "TrainConfig(steps=10**13)", lambda: TrainConfig(steps=10**13),
         ConfigError, r"steps=10000000000000 is out of range"),
    Case("size-images", "DataConfig(num_train=50_000_000) of in-memory shapes",
         lambda: DataConfig(num_train=50_000_000), ConfigError, r"num_train"),
    # ---- 9: checkpoints
    Case("ckpt-manifest-outside", "a manifest naming ../../victim.txt", tampered_manifest,
         C.CheckpointError, r"manifest names '\.\./\.\./victim\.txt', which is not a file of the checkpoint"),
    Case("ckpt-unlisted-ema", "an ema.safetensors added after the checkpoint was written", planted_ema, None, ""),
    Case("ckpt-unlisted-stats", "latent statistics added after the checkpoint was written", planted_stats,
         C.CheckpointError, r"extra_latent_stats\.safetensors is not listed in its manifest"),
]
CASES += HOSTILE_CASES


# ------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    if scratch.cache_info().currsize:
        shutil.rmtree(scratch(), ignore_errors=True)


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_rejected_clearly(case: Case, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if case.exc is None:  # the right behaviour is to succeed: no data loss, no wrong result, no code run
            case.call()
            return
        with pytest.raises(case.exc) as e:
            case.call()
    msg = str(e.value)
    assert re.search(case.match, msg), f"{case.id}: {msg!r} does not match {case.match!r}"
    assert "\n" not in msg.strip(), f"{case.id}: message spans several lines: {msg!r}"


def test_bad_notebook_parameter_writes_nothing(tmp_path):
    """A bad -p is refused before papermill starts: no kernel, no output notebook, no out dir."""
    out = tmp_path / "out"
    for bad in (("-p", "gama", "2"), ("-p", "device", "3"), ("-p", "device", "tpu"), ("--seed", "-1"),
                ("-p", "device", "__import__('os').system('touch pwned')")):
        with pytest.raises(CliFailed):
            cli("run", "01", "--preset", "smoke", "--out", str(out), *bad)
        assert not out.exists(), bad
    assert not (ROOT / "notebooks" / "pwned").exists() and not Path("pwned").exists()


def test_notebook_parameters_are_never_evaluated():
    """-p values stay strings (papermill's CLI typing) and are injected as quoted literals."""
    from papermill.translators import PythonTranslator

    from ldetok_lite.io import parse_value

    code = "__import__('os').system('touch pwned')"
    value = parse_value(code)
    assert value == code and isinstance(value, str)
    src = PythonTranslator.codify({"device": value})
    ns: dict = {}
    exec(compile(src, "<parameters>", "exec"), ns)  # the injected cell only binds a string
    assert ns["device"] == code and not Path("pwned").exists()


def test_notebook_outputs_stay_inside_out_dir(tmp_path):
    from PIL import Image

    from ldetok_lite.notebook import NotebookRun

    run = NotebookRun(name="t", preset=load_preset("smoke"), seed=0, device=torch.device("cpu"),
                      out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", interactive=False)
    run.out_dir.mkdir()
    img = Image.new("RGB", (4, 4))
    assert run.save(img, "sub/fig.png", show=False) == run.out_dir / "sub" / "fig.png"
    for name in ("../escape.png", str(tmp_path / "abs.png"), "sub/../../escape.png"):
        with pytest.raises(ValueError, match=r"filename=.* must stay inside out_dir"):
            run.save(img, name, show=False)
    assert not (tmp_path / "escape.png").exists() and not (tmp_path / "abs.png").exists()


def test_library_never_unpickles_or_evaluates_code():
    """Every torch.load passes weights_only=True; no pickle.load, np.load(allow_pickle=True), eval or exec."""
    import ast

    found = []
    for path in sorted((ROOT / "ldetok_lite").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f"{getattr(f.value, 'id', '?')}.{f.attr}" \
                if isinstance(f, ast.Attribute) else "?"
            kw = {k.arg: k.value for k in node.keywords}
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if name == "torch.load":
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                found.append((where, name, ok))
            elif name in ("pickle.load", "pickle.loads", "eval", "exec"):
                found.append((where, name, False))
            elif name == "np.load":
                ap = kw.get("allow_pickle")
                found.append((where, name, ap is None or (isinstance(ap, ast.Constant) and ap.value is False)))
    assert any(n == "torch.load" for _, n, _ in found)  # the scan sees the loader
    assert [f for f in found if not f[2]] == []


def test_unreadable_image_is_skipped_and_counted():
    ds = make_dataset(DataConfig(dataset="imagefolder", data_dir=str(folder_with_bad_image()), img_size=32),
                      on_bad_image="skip")
    assert isinstance(ds, ImageFolderDataset) and len(ds) == 2
    with pytest.warns(UserWarning, match=r"skipping unreadable image '.*a_broken\.png'"):
        img, label = ds[0]
    assert img.shape == (3, 32, 32) and label == 0 and ds.skipped == 1
    assert torch.isfinite(img).all()


def test_bad_input_leaves_no_output(tmp_path):
    """Bad options fail before anything is written: no out dir, no checkpoint, no latent cache."""
    from ldetok_lite import training as T

    out = tmp_path / "gen"
    with pytest.raises(ValueError, match=r"unknown generator 'SiTT_tiny'"):
        T.train_generator("SiTT", load_preset("smoke").generator, load_preset("smoke").generator_train,
                          DataConfig(num_train=16, num_val=4), tok(), out, device="cpu", log=lambda *a: None)
    assert not out.exists()
    for bad in ("tokenizer.gamma=-1", "tokenizer.model=detok_tinyy"):
        with pytest.raises(CliFailed):
            cli("train", "tokenizer", "--preset", "smoke", "--device", "cpu", "--out", str(tmp_path / "tok"),
                "--set", bad)
        assert not (tmp_path / "tok").exists(), bad


def test_training_cli_stops_cleanly_on_bad_tokenizer_checkpoint(tmp_path):
    """A truncated tokenizer checkpoint given to `train generator` is reported in one line."""
    with pytest.raises(CliFailed, match=r"truncated"):
        cli("train", "generator", "--family", "SiT", "--preset", "smoke", "--out", str(tmp_path / "g"),
            "--tokenizer", str(truncated_ckpt()))


# ------------------------------------------------------------------------------------------------
# the table for the closing note
# ------------------------------------------------------------------------------------------------


OUTCOMES = ("clear", "traceback", "silent", "data loss", "code ran")


def _outcome(case: Case) -> tuple[str, str, str]:
    """(outcome, exception type, first message line): ``clear`` is the expected behaviour (the
    expected one-line error, or success for an ``exc=None`` case); ``traceback`` any other error
    (a raw or low-level one); ``silent`` no error where one was due, or a wrong result; ``data
    loss`` a user file deleted or overwritten; ``code ran`` a payload executed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            case.call()
    except DataLoss as e:
        return "data loss", "DataLoss", str(e)
    except CodeRan as e:
        return "code ran", "CodeRan", str(e)
    except SilentWrong as e:
        return "silent", "SilentWrong", str(e)
    except BaseException as e:  # noqa: BLE001 - reporting every outcome
        msg = (str(e).strip().splitlines() or [""])[0]
        ok = case.exc is not None and isinstance(e, case.exc) and re.search(case.match, str(e)) is not None
        return ("clear" if ok else "traceback"), type(e).__name__, msg
    return ("clear" if case.exc is None else "silent"), "(no error)", ""


def markdown_table(cases=None) -> str:
    cases = CASES if cases is None else cases
    rows = ["| case id | bad input | outcome | exception type | message (first line) |", "|---|---|---|---|---|"]
    counts = dict.fromkeys(OUTCOMES, 0)
    for case in cases:
        outcome, etype, msg = _outcome(case)
        counts[outcome] += 1
        cell = msg.replace("|", "\\|")[:160]
        rows.append(f"| {case.id} | `{case.bad.replace('|', '/')}` | {outcome} | {etype} | {cell} |")
    rows.append("")
    rows.append(f"{len(cases)} cases: " + ", ".join(f"{counts[o]} {o}" for o in OUTCOMES) + ".")
    return "\n".join(rows)


if __name__ == "__main__":
    torch.set_num_threads(min(2, torch.get_num_threads()))
    try:
        print(markdown_table(HOSTILE_CASES if "--hostile" in sys.argv else CASES))
    finally:
        shutil.rmtree(scratch(), ignore_errors=True)
    sys.exit(0)
