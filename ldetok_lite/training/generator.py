"""Training a generator on a frozen tokenizer's latents (official ``main_diffusion.py``,
``utils/train_utils.py``, ``train_one_epoch_generator``; notebooks 05-09).

Latents are normalised per channel with statistics of one pass over the training images
(:func:`compute_latent_stats`, the official ``collect_tokenizer_stats``). With
``GeneratorConfig.cache_latents`` the posterior moments of every image (and of its mirror image)
are computed once and cached; each step then samples μ + σ·ε from them, the same distribution as
``tokenize(x, sampling=True)`` on the fly and many times faster on a CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open

from .. import checkpoint as ckpt
from ..config import DataConfig, GeneratorConfig, TrainConfig
from ..data import make_dataset
from ..device import autocast, pick_device, seed_everything
from ..generators import create_generator, decode_latents
from ..generators.base import resolve_name
from ..io import save_tensors_atomic
from ..pretrained import LATENT_STATS_FILE, tokenizer_fingerprint
from .batches import ImageSource, flip_mask, isolated_rng, step_rng
from .loop import Job, TrainResult, check_config_types, fit, save_sample_figure

__all__ = ["tokenizer_fingerprint", "encode_moments", "channel_stats", "compute_latent_stats", "train_generator"]


@torch.no_grad()
def encode_moments(tokenizer, source: ImageSource, device, batch_size: int = 256, flip: bool = False,
                   precision: str = "auto", log: Callable = print) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image, channels-first ``(N, C, h, w)`` (no mask, no noise).

    fp32 on the CPU; the official statistics pass (``collect_tokenizer_stats``) is fp32 too.
    """
    n = len(source)
    means, stds = [], []
    t0 = time.time()
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size))
        x = source.get(idx)[0].to(device)
        if flip:
            x = x.flip(-1)
        with autocast(device, precision):
            _, _, post = tokenizer.encode(x)
        g = tokenizer.grid_size
        # contiguous NCHW: a channels-last view would follow another conv path than the reloaded cache
        means.append(post.mean.float().transpose(1, 2).unflatten(2, (g, g)).cpu().contiguous())
        stds.append(post.std.float().transpose(1, 2).unflatten(2, (g, g)).cpu().contiguous())
    log(f"encoded {n} images{' (flipped)' if flip else ''} in {time.time() - t0:.1f} s")
    return torch.cat(means).contiguous(), torch.cat(stds).contiguous()


def channel_stats(means: torch.Tensor, stds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and population std of posterior means ``(N, C, h, w)`` (the official
    ``collect_tokenizer_stats``).

    With the posterior ``stds`` it is the std of the posterior *samples* μ + σ·ε instead
    (law of total variance: Var μ + E σ²), the distribution a generator trains on.
    """
    x = means.double().transpose(0, 1).flatten(1)
    mean = x.mean(1)
    var = x.pow(2).mean(1) - mean.pow(2)
    if stds is not None:
        var = var + stds.double().transpose(0, 1).flatten(1).pow(2).mean(1)
    return mean.float(), var.clamp_min(1e-24).sqrt().float()


def compute_latent_stats(tokenizer, data_cfg: DataConfig, device="auto", batch_size: int = 256,
                         max_images: int | None = None, log: Callable = print, of: str = "mean"):
    """One pass over the training images (no flip, no mask, fp32) -> per-channel (mean, std) of
    the posterior means (``of="mean"``, the official code) or samples (``of="sample"``)."""
    if of not in ("mean", "sample"):
        raise ValueError(f"of={of!r} is not known; allowed: mean, sample")
    dev = pick_device(device)
    src = ImageSource(make_dataset(data_cfg.replace(hflip=False), "train"), data_cfg.num_workers)
    if max_images is not None and max_images < len(src):
        src = ImageSource(torch.utils.data.Subset(src.ds, range(max_images)), data_cfg.num_workers)
    tokenizer.eval()
    m, s = encode_moments(tokenizer, src, dev, batch_size, precision="fp32", log=log)
    return channel_stats(m, s if of == "sample" else None)


def train_generator(family: str, gen_cfg: GeneratorConfig, train_cfg: TrainConfig, data_cfg: DataConfig,
                    tokenizer: nn.Module, out_dir, device: str = "auto", callback: Callable | None = None,
                    progress: str = "auto", log: Callable = print, rank: int = 0, world_size: int = 1,
                    stats_max_images: int | None = None, eval_samples: int = 20, latent_cache_dir=None,
                    **generator_kwargs) -> TrainResult:
    """Train (or resume) ``create_generator(f"{family}_{gen_cfg.size}", ...)`` on tokenizer latents.

    The tokenizer is frozen and in eval mode. Per-channel latent statistics (of the posterior means
    or samples, ``gen_cfg.latent_stats``) are computed once (notebook 05) and cached in
    ``out_dir/latent_stats.safetensors``, then set on the tokenizer (``set_latent_stats``), so the
    generator trains on normalized latents and ``tokenizer.detokenize`` decodes its samples. With
    ``gen_cfg.cache_latents`` the posterior moments of every image (and of its mirror image when
    ``data_cfg.hflip``) are computed once and cached in ``out_dir/latent_cache.safetensors``; each
    step then samples ``(μ + σ·ε − m_c)/s_c``, the same distribution as ``tokenize(x,
    sampling=True)`` on the fly.
    ``latent_cache_dir``: keep the latent cache there instead (named by the tokenizer's fingerprint),
    so several generators of one tokenizer share it. ``eval_samples`` images are generated (EMA)
    for the sample figure at each evaluation (0: none).
    ``generator_kwargs`` go to ``create_generator``. ``result.latent_stats`` = (mean, std).
    """
    check_config_types(gen_cfg=(gen_cfg, GeneratorConfig), train_cfg=(train_cfg, TrainConfig),
                 data_cfg=(data_cfg, DataConfig))
    if not isinstance(eval_samples, int) or isinstance(eval_samples, bool) or eval_samples < 0:
        raise ValueError(f"eval_samples={eval_samples!r} must be an int >= 0")
    if not isinstance(family, str) or not family:
        raise ValueError(f"family={family!r} must be a generator family name such as 'SiT' or 'DiT'")
    if not isinstance(tokenizer, nn.Module) or not hasattr(tokenizer, "tokenize"):
        raise TypeError(f"tokenizer must be a tokenizer module (create_tokenizer / get_tokenizer), "
                        f"got {type(tokenizer).__name__}")
    resolve_name(f"{family}_{gen_cfg.size}")  # an unknown family fails before out_dir or any cache is written
    dev = pick_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer.to(dev).eval().requires_grad_(False)
    if tokenizer.img_size != data_cfg.img_size:
        raise ValueError(f"data_cfg.img_size={data_cfg.img_size} does not match the tokenizer's "
                         f"img_size={tokenizer.img_size}")

    train_ds = make_dataset(data_cfg.replace(hflip=False), "train")
    source = ImageSource(train_ds, data_cfg.num_workers)
    num_classes = source.num_classes or 10
    fp = tokenizer_fingerprint(tokenizer, data_cfg)

    # ---- latent statistics (one pass) and the optional latent cache
    stats_path, cache_path = out_dir / LATENT_STATS_FILE, out_dir / "latent_cache.safetensors"
    if latent_cache_dir is not None:
        cache_path = Path(latent_cache_dir) / f"latents-{fp}.safetensors"
    stats = cache = None
    if stats_path.is_file():
        s = ckpt.load_tensors(stats_path)
        with safe_open(str(stats_path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("fingerprint") == fp and meta.get("of", "mean") == gen_cfg.latent_stats:
                stats = (s["mean"], s["std"])
    if gen_cfg.cache_latents and cache_path.is_file():
        try:
            with safe_open(str(cache_path), "pt") as f:
                if (f.metadata() or {}).get("fingerprint") == fp:
                    cache = ckpt.load_tensors(cache_path)
        except Exception as e:  # a corrupt cache is rebuilt
            log(f"latent cache unreadable ({e}); rebuilding")
    t_cache = None
    if gen_cfg.cache_latents and cache is None:
        t0 = time.time()
        with isolated_rng():
            mean, std = encode_moments(tokenizer, source, dev, log=log)
            cache = {"mean": mean, "std": std}
            if data_cfg.hflip:
                cache["mean_flip"], cache["std_flip"] = encode_moments(tokenizer, source, dev, flip=True, log=log)
        if rank == 0:
            save_tensors_atomic(cache_path, cache, metadata={"fingerprint": fp})
        t_cache = time.time() - t0
        log(f"latent cache built in {t_cache:.1f} s ({cache_path})")
    if stats is None:
        if cache is not None and stats_max_images is None:
            stats = channel_stats(cache["mean"], cache["std"] if gen_cfg.latent_stats == "sample" else None)
        else:
            with isolated_rng():
                stats = compute_latent_stats(tokenizer, data_cfg, dev, max_images=stats_max_images, log=log,
                                             of=gen_cfg.latent_stats)
        if rank == 0:
            save_tensors_atomic(stats_path, {"mean": stats[0], "std": stats[1]},
                                     metadata={"fingerprint": fp, "of": gen_cfg.latent_stats})
    tokenizer.set_latent_stats(stats[0], stats[1])
    m_c = stats[0].view(1, -1, 1, 1).to(dev)
    s_c = stats[1].view(1, -1, 1, 1).to(dev)
    if cache is not None:
        cache = {k: v.to(dev) for k, v in cache.items()}

    seed_everything(train_cfg.seed, rank)
    name = f"{family}_{gen_cfg.size}"
    kwargs = dict(in_channels=tokenizer.token_channels, input_size=tokenizer.grid_size, num_classes=num_classes,
                  label_drop=gen_cfg.label_drop)
    kwargs.update(generator_kwargs)
    model = create_generator(name, **kwargs).to(dev)
    labels_all = torch.as_tensor(source.labels).long() if source.labels is not None else None

    def latents_for(idx, step, micro):
        g = step_rng(train_cfg.seed, step, micro)
        flip = (flip_mask(len(idx), g, rank, world_size) if data_cfg.hflip
                else torch.zeros(len(idx), dtype=torch.bool))
        if cache is not None:
            i = idx.to(dev)
            f = flip.view(-1, 1, 1, 1).to(dev)
            mu = torch.where(f, cache["mean_flip"][i], cache["mean"][i]) if data_cfg.hflip else cache["mean"][i]
            sd = torch.where(f, cache["std_flip"][i], cache["std"][i]) if data_cfg.hflip else cache["std"][i]
            z = mu + sd * torch.randn(mu.shape, device=dev)
            y = labels_all[idx].to(dev)
            return ((z - m_c) / s_c).contiguous(), y
        x, y = source.get(idx)
        x = x.to(dev, non_blocking=True)
        x = torch.where(flip.view(-1, 1, 1, 1).to(dev), x.flip(-1), x)
        with torch.no_grad():
            z = tokenizer.tokenize(x, sampling=True)
        return z.float().contiguous(), y.to(dev)

    def compute_loss(fwd, idx, step, micro):
        z, y = latents_for(idx, step, micro)
        loss = fwd(z, y)
        return loss, {"loss": loss.detach()}, None

    def evaluate(live, ema_m, step):
        n = eval_samples
        if n > 0:
            labels = torch.arange(n, device=dev) % num_classes
            gen = torch.Generator(device=dev).manual_seed(train_cfg.seed)
            kw = dict(cfg_scale=gen_cfg.cfg_scale, temperature=gen_cfg.temperature, rng=gen)
            if gen_cfg.num_sampling_steps:
                kw["num_steps"] = gen_cfg.num_sampling_steps
            with autocast(dev, train_cfg.precision):
                z = ema_m.generate(labels, **kw)
            imgs = decode_latents(tokenizer, z.float()).cpu()
            rows = [imgs[i:i + num_classes] for i in range(0, n, num_classes)]
            save_sample_figure(out_dir / "samples" / f"samples_step{step:07d}.png", rows,
                                [f"EMA step {step}"] + [""] * (len(rows) - 1))
        # a held-out loss on fixed latents (same noise every eval)
        idx = torch.arange(min(len(source), 256))
        z, y = latents_for(idx, 0, 99)
        return {"train_subset_loss": ema_m.train()(z, y).detach()} if hasattr(ema_m, "train") else {}

    def extra_files():
        return {"latent_stats": {"mean": stats[0], "std": stats[1]}}

    configs = {"generator": gen_cfg, "generator_train": train_cfg, "data": data_cfg,
               "tokenizer_spec": {"spec": getattr(tokenizer, "spec", None), "fingerprint": fp,
                                  "checkpoint": getattr(tokenizer, "checkpoint_dir", None)}}
    job = Job(model=model, train_cfg=train_cfg, out_dir=out_dir, device=dev, num_items=len(source),
               compute_loss=compute_loss, configs=configs, evaluate=evaluate, extra_files=extra_files,
               callback=callback, progress=progress, log=log, rank=rank, world_size=world_size,
               data_source=source if cache is None else None)
    result = fit(job)
    result.latent_stats = (stats[0].clone(), stats[1].clone())
    result.extra["latent_cache_s"] = t_cache
    result.extra["tokenizer_fingerprint"] = fp
    return result
