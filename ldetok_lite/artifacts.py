"""Shared artefacts of the notebook series: trained tokenizers and generators, trained once.

    tok = get_tokenizer("tiny", "ldetok", cache_dir)          # trains when missing, else loads
    gen = get_generator("tiny", "SiT", "ldetok", cache_dir, tokenizer=tok)

Runs live in ``cache_dir/tokenizers/{preset}-{variant}-s{seed}`` and
``cache_dir/generators/{preset}-{family}-{tokenizer_variant}-s{seed}``; each is an ordinary
training ``out_dir`` (checkpoints, ``metrics.jsonl``, samples), so an interrupted training is
resumed by the next call, and any notebook can run alone. Returned models are the EMA weights
in eval mode. When the preset's settings changed since a cached run was made, the old run is
moved aside (``*.stale-<time>``) and a new one is trained.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch.nn as nn

from . import checkpoint as ckpt
from .config import Preset, load_preset
from .device import pick_device

#: tokenizer variants of the paper's ablations (γ, M, additive noise); see notebooks 03/04.
TOKENIZER_VARIANTS: dict[str, dict] = {
    "plain": {"gamma": 0.0, "mask_ratio": 0.0},
    "ldetok": {"gamma": 3.0, "mask_ratio": 0.7},
    "mask_only": {"gamma": 0.0, "mask_ratio": 0.7},
    "noise_only": {"gamma": 3.0, "mask_ratio": 0.0},
    "additive": {"gamma": 3.0, "mask_ratio": 0.7, "use_additive_noise": True},
}


# settings that do not change what a cached run is (display and bookkeeping only)
_CACHE_IGNORED = {"log_every", "eval_every", "ckpt_every", "num_workers", "checkpoint"}


def _preset(preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    return load_preset(preset)


def _check_variant(variant: str) -> None:
    if variant not in TOKENIZER_VARIANTS:
        raise ValueError(f"tokenizer variant {variant!r} is not known; allowed: {', '.join(TOKENIZER_VARIANTS)}")


def _check_seed(seed) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r} must be an int >= 0")


def tokenizer_configs(preset, variant: str, seed: int = 0):
    """(tok_cfg, train_cfg, data_cfg) of ``variant`` at ``preset`` with ``seed``."""
    p = _preset(preset)
    _check_variant(variant)
    _check_seed(seed)
    v = dict(TOKENIZER_VARIANTS[variant])
    v.setdefault("use_additive_noise", False)
    if variant == "plain":
        v["warm_start"] = "none"  # the plain AE is what the others warm-start from
    return p.tokenizer.replace(**v), p.tokenizer_train.replace(seed=seed), p.data


def tokenizer_dir(preset, variant: str, cache_dir, seed: int = 0) -> Path:
    return Path(cache_dir) / "tokenizers" / f"{_preset(preset).name}-{variant}-s{seed}"


def generator_dir(preset, family: str, tokenizer_variant: str, cache_dir, seed: int = 0) -> Path:
    return Path(cache_dir) / "generators" / f"{_preset(preset).name}-{family}-{tokenizer_variant}-s{seed}"


def _finished(run_dir: Path, configs: dict, steps: int, log) -> Path | None:
    """The final checkpoint of ``run_dir`` when it is complete and made with ``configs``; moves a
    run made with other settings aside."""
    if not run_dir.exists():
        return None
    latest = ckpt.latest_checkpoint(run_dir, log=log)
    if latest is None:
        return None
    payload = json.loads((latest / ckpt.CONFIG_FILE).read_text())
    from .train import _config_diff

    diff = _config_diff(payload.get("configs", {}), configs, ignore=_CACHE_IGNORED)
    if diff:
        move_aside(run_dir, f"was made with other settings ({'; '.join(diff[:3])})", log)
        return None
    return latest if int(payload.get("step") or 0) >= steps else None


def move_aside(run_dir: Path, why: str, log) -> None:
    """Rename a cached run to ``<name>.stale-<time>`` (nothing is deleted) and say why."""
    stale = run_dir.with_name(f"{run_dir.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.rename(stale)
    log(f"{run_dir} {why}; moved it to {stale.name}")


def _load_finished(done: Path | None, run_dir: Path, which: str, dev, log) -> nn.Module | None:
    """The cached model, or None (and the run moved aside, nothing deleted) when its weights no
    longer fit the model the code builds, e.g. after a ``*_tiny`` size table changed."""
    if done is None:
        return None
    try:
        return ckpt.from_pretrained(done, which=which, device=dev, log=log)
    except ckpt.CheckpointError as e:
        move_aside(run_dir, f"no longer loads ({str(e).splitlines()[0]})", log)
        return None


def get_tokenizer(preset, variant: str, cache_dir, seed: int = 0, device: str = "auto", log: Callable = print,
                  callback: Callable | None = None, progress: str = "auto", which: str = "ema") -> nn.Module:
    """The ``variant`` tokenizer of ``preset`` (plain | ldetok | mask_only | noise_only | additive).

    Loads ``cache_dir/tokenizers/{preset}-{variant}-s{seed}`` when its training finished, else
    trains (or resumes) it with the preset's ``tokenizer_train`` config; with the preset's
    ``tokenizer.warm_start == "plain"`` it starts from the (cached or trained) plain AE of the same
    preset and seed, then trains its own ``tokenizer_train.steps``. Returns the EMA weights
    (``which="model"`` for the online ones) in eval mode on ``device``; ``.run_dir`` says where.
    """
    tok_cfg, train_cfg, data_cfg = tokenizer_configs(preset, variant, seed)
    run_dir = tokenizer_dir(preset, variant, cache_dir, seed)
    dev = pick_device(device)
    configs = {"tokenizer": tok_cfg.to_dict(), "tokenizer_train": train_cfg.to_dict(), "data": data_cfg.to_dict()}
    done = _finished(run_dir, configs, train_cfg.steps, log)
    model = _load_finished(done, run_dir, which, dev, log)
    if model is None:
        from .train import train_tokenizer

        log(f"training tokenizer {variant!r} (preset {_preset(preset).name}, γ={tok_cfg.gamma}, "
            f"M={tok_cfg.mask_ratio}{', additive' if tok_cfg.use_additive_noise else ''}, {train_cfg.steps} steps) "
            f"into {run_dir}")
        init_from = None
        if tok_cfg.warm_start == "plain":
            base = get_tokenizer(preset, "plain", cache_dir, seed=seed, device=dev, log=log, progress=progress)
            init_from = ckpt.latest_checkpoint(base.run_dir, log=log)
            log(f"{variant!r} continues from the plain AE ({init_from})")
        t0 = time.time()
        res = train_tokenizer(tok_cfg, train_cfg, data_cfg, run_dir, device=dev, callback=callback,
                              progress=progress, log=log, init_from=init_from)
        log(f"tokenizer {variant!r} ready in {time.time() - t0:.0f} s; val PSNR "
            f"{res.final_metrics.get('psnr_ema', float('nan')):.2f} dB (EMA)")
        model = ckpt.from_pretrained(res.checkpoint, which=which, device=dev, log=log)
    else:
        log(f"loaded tokenizer {variant!r} from {done}")
    model.run_dir = str(run_dir)
    model.variant = variant
    return model


def get_generator(preset, family: str, tokenizer_variant: str, cache_dir, seed: int = 0, device: str = "auto",
                  log: Callable = print, callback: Callable | None = None, progress: str = "auto",
                  tokenizer: nn.Module | None = None, return_tokenizer: bool = False, which: str = "ema",
                  eval_samples: int | None = None):
    """The ``family`` generator (e.g. ``"SiT"``) of ``preset`` trained on ``tokenizer_variant`` latents.

    Loads ``cache_dir/generators/{preset}-{family}-{tokenizer_variant}-s{seed}`` when finished,
    else trains (or resumes) it with the preset's ``generator`` / ``generator_train`` configs; the
    tokenizer comes from :func:`get_tokenizer` (same cache) unless given. The generator's latent
    statistics are set on the tokenizer (``set_latent_stats``), so
    ``generators.decode_latents(tokenizer, z)`` decodes its samples. Returns the generator (EMA,
    eval mode), or ``(generator, tokenizer)`` with ``return_tokenizer=True``. ``eval_samples``: images
    in the end-of-training sample figure (default 10 at ``smoke``, else 20; 0 = none).
    """
    p = _preset(preset)
    _check_variant(tokenizer_variant)
    _check_seed(seed)
    if not isinstance(family, str) or not family:
        raise ValueError(f"family={family!r} must be a generator family such as 'SiT', 'DiT', 'MAR'")
    dev = pick_device(device)
    if tokenizer is None:
        tokenizer = get_tokenizer(p, tokenizer_variant, cache_dir, seed=seed, device=dev, log=log, progress=progress)
    gen_cfg, train_cfg, data_cfg = p.generator, p.generator_train.replace(seed=seed), p.data
    run_dir = generator_dir(p, family, tokenizer_variant, cache_dir, seed)
    configs = {"generator": gen_cfg.to_dict(), "generator_train": train_cfg.to_dict(), "data": data_cfg.to_dict()}
    done = _finished(run_dir, configs, train_cfg.steps, log)
    if done is not None:
        from .train import _tokenizer_fingerprint

        payload = json.loads((done / ckpt.CONFIG_FILE).read_text())
        want = payload.get("configs", {}).get("tokenizer_spec", {}).get("fingerprint")
        if want is not None and want != _tokenizer_fingerprint(tokenizer, data_cfg):
            move_aside(run_dir, "was trained on another tokenizer", log)
            done = None
    model = _load_finished(done, run_dir, which, dev, log)
    if model is None:
        from .train import train_generator

        log(f"training generator {family}_{gen_cfg.size} on {tokenizer_variant!r} latents "
            f"({train_cfg.steps} steps) into {run_dir}")
        if eval_samples is None:
            eval_samples = 10 if p.name == "smoke" else 20
        res = train_generator(family, gen_cfg, train_cfg, data_cfg, tokenizer, run_dir, device=dev,
                              callback=callback, progress=progress, log=log, eval_samples=eval_samples,
                              latent_cache_dir=Path(cache_dir) / "latents")
        done = res.checkpoint
        model = ckpt.from_pretrained(done, which=which, device=dev, log=log)
    else:
        log(f"loaded generator {family} ({tokenizer_variant}) from {done}")
    from .train import load_latent_stats

    mean, std = load_latent_stats(done)
    tokenizer.set_latent_stats(mean, std)
    model.run_dir = str(run_dir)
    model.latent_stats = (mean.clone(), std.clone())
    return (model, tokenizer) if return_tokenizer else model


def clear_cache(cache_dir, what: str = "all") -> list[Path]:
    """Remove cached runs (``what``: all | tokenizers | generators | latents); returns the removed paths."""
    import shutil

    if what not in ("all", "tokenizers", "generators", "latents"):
        raise ValueError(f"what={what!r} is not known; allowed: all, tokenizers, generators, latents")
    removed = []
    for sub in (("tokenizers", "generators", "latents") if what == "all" else (what,)):
        d = Path(cache_dir) / sub
        if d.is_dir():
            shutil.rmtree(d)
            removed.append(d)
    return removed


__all__ = ["TOKENIZER_VARIANTS", "move_aside", "get_tokenizer", "get_generator", "tokenizer_configs", "tokenizer_dir",
           "generator_dir", "clear_cache"]
