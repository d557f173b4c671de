"""One model cache: trained tokenizers and generators, trained once and found again by every
notebook, the comparison and the command line.

    tok = get_tokenizer("tiny", "ldetok", cache_dir)                 # trains when missing, else loads
    gen = get_generator("tiny", "SiT", "ldetok", cache_dir, tokenizer=tok)
    ft = finetune_decoder("tiny", "ldetok", tok)                     # the paper's second stage

Runs live in ``cache_dir/tokenizers/{preset}-{variant}-s{seed}`` and
``cache_dir/generators/{preset}-{family}-{variant}-s{seed}``; a run made with settings that differ
from the named preset's gets a digest of them appended, so it never collides with the notebooks'
runs. Each is an ordinary training ``out_dir`` (checkpoints, ``metrics.jsonl``, samples), so an
interrupted training is resumed by the next call and any notebook can run alone. Returned models
are the EMA weights in eval mode, with ``.run_dir`` and ``.train_seconds``. When a cached run no
longer fits (other settings, another tokenizer, weights that no longer load), it is moved aside
(``*.stale-<time>``; nothing is deleted) and trained again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from .. import checkpoint as ckpt
from ..config import Preset, TokenizerConfig, TrainConfig, diff_configs, suggest
from ..device import pick_device
from ..presets import (
    CONV_PREFIX,
    GENERATOR_FAMILIES,
    PRESET_NAMES,
    decoder_finetune,
    load_preset,
    tokenizer_recipe,
    warm_start_recipe,
)
from ..pretrained import from_pretrained, load_latent_stats
from ..training import tokenizer_fingerprint, train_generator, train_tokenizer

__all__ = ["get_tokenizer", "get_generator", "finetune_decoder", "tokenizer_dir", "generator_dir", "move_aside",
           "clear_cache", "elapsed_seconds", "generator_family", "CACHE_KINDS"]

CACHE_KINDS = ("tokenizers", "generators", "latents")
# settings that do not change what a cached run is (display and bookkeeping only)
_IGNORED = frozenset({"log_every", "eval_every", "ckpt_every", "num_workers", "checkpoint"})


def _preset(preset: Preset | str) -> Preset:
    return preset if isinstance(preset, Preset) else load_preset(preset)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _named(p: Preset) -> Preset | None:
    return load_preset(p.name) if p.name in PRESET_NAMES else None


def _name(p: Preset, label: str, seed: int, settings, named_settings) -> str:
    base = f"{p.name}-{label}-s{seed}"
    return base if settings == named_settings else f"{base}-{_digest(settings)}"


def _tokenizer_run_dir(p: Preset, label: str, tok: TokenizerConfig, train: TrainConfig, cache_dir) -> Path:
    named = _named(p)
    settings = [tok.to_dict(), train.to_dict(), p.data.to_dict()]
    named_settings = None
    if named is not None and label != "warm-start":
        n_tok, n_train, n_data = tokenizer_recipe(named, label, train.seed)
        named_settings = [n_tok.to_dict(), n_train.to_dict(), n_data.to_dict()]
    return Path(cache_dir) / "tokenizers" / _name(p, label, train.seed, settings, named_settings)


def tokenizer_dir(preset: Preset | str, variant: str, cache_dir, seed: int = 0) -> Path:
    """Where the cache keeps (or finds) the ``variant`` tokenizer of ``preset`` and ``seed``."""
    p = _preset(preset)
    tok, train, _ = tokenizer_recipe(p, variant, seed)
    return _tokenizer_run_dir(p, variant, tok, train, cache_dir)


def generator_dir(preset: Preset | str, family: str, variant: str, cache_dir, seed: int = 0) -> Path:
    """Where the cache keeps (or finds) the ``family`` generator on ``variant`` latents (``family``
    in any case: ``"sit"`` and ``"SiT"`` are the same folder; an unknown name raises)."""
    p = _preset(preset)
    family = generator_family(family)
    return _generator_run_dir(p, family, variant, seed, tokenizer_dir(p, variant, cache_dir, seed).name, cache_dir)


def _generator_run_dir(p: Preset, family: str, variant: str, seed: int, tokenizer_name: str, cache_dir) -> Path:
    family = generator_family(family)  # the folder name uses the registry's spelling, whatever the caller's case
    def settings(q: Preset, tok_name: str):
        return [q.generator.to_dict(), q.generator_train.replace(seed=seed).to_dict(), q.data.to_dict(), tok_name]

    named = _named(p)
    named_settings = None
    if named is not None:
        named_settings = settings(named, _tokenizer_run_dir(named, variant, *tokenizer_recipe(named, variant, seed)[:2],
                                                            cache_dir).name)
    label = f"{family}-{variant}"
    return Path(cache_dir) / "generators" / _name(p, label, seed, settings(p, tokenizer_name), named_settings)


def move_aside(run_dir: Path, why: str, log: Callable = print) -> Path:
    """Rename a cached run to ``<name>.stale-<time>`` (nothing is deleted) and say why."""
    stale = run_dir.with_name(f"{run_dir.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.rename(stale)
    log(f"{run_dir} {why}; moved it to {stale.name}")
    return stale


def elapsed_seconds(run_dir) -> float:
    """Training seconds of a run (from its newest checkpoint's state; 0 when unknown)."""
    latest = ckpt.latest_checkpoint(run_dir, log=lambda *_: None) if Path(run_dir).is_dir() else None
    if latest is None:
        return 0.0
    try:
        return float(ckpt.load_train_state(latest).get("elapsed_s", 0.0))
    except ckpt.CheckpointError:
        return 0.0


def generator_family(name: str) -> str:
    """The family's spelling in ``GENERATOR_FAMILIES`` (``"sit"`` → ``"SiT"``, case-insensitive as
    ``generators.resolve_name``); an unknown name raises ``ValueError``. Every cache folder name
    goes through it, so ``sit`` and ``SiT`` find the same trained model."""
    if isinstance(name, str) and name:
        for fam in GENERATOR_FAMILIES:
            if name.lower() == fam.lower():
                return fam
    raise ValueError(f"generator family {name!r} is not known{suggest(str(name), GENERATOR_FAMILIES)}; "
                     f"allowed: {', '.join(GENERATOR_FAMILIES)}")


def _finished(run_dir: Path, configs: dict, steps: int, log, fingerprint: str | None = None) -> Path | None:
    """The final checkpoint of ``run_dir`` when it is complete and was made with ``configs`` (and
    the tokenizer ``fingerprint``); a run made otherwise is moved aside."""
    if not run_dir.exists():
        return None
    latest = ckpt.latest_checkpoint(run_dir, log=log)
    if latest is None:
        return None
    payload = json.loads((latest / ckpt.CONFIG_FILE).read_text())
    stored = payload.get("configs", {})
    diff = diff_configs(stored, configs, ignore=_IGNORED)
    if diff:
        move_aside(run_dir, f"was made with other settings ({'; '.join(diff[:3])})", log)
        return None
    want = (stored.get("tokenizer_spec") or {}).get("fingerprint")
    if fingerprint is not None and want is not None and want != fingerprint:
        move_aside(run_dir, "was trained on another tokenizer", log)
        return None
    return latest if int(payload.get("step") or 0) >= steps else None


def _cached(run_dir: Path, configs: dict, steps: int, train: Callable, which: str, dev, log,
            fingerprint: str | None = None) -> nn.Module:
    """Load the finished run in ``run_dir``, or call ``train()`` (which resumes a partial one)."""
    done = _finished(run_dir, configs, steps, log, fingerprint)
    model = None
    if done is not None:
        try:
            model = from_pretrained(done, which=which, device=dev, log=log)
            log(f"loaded {run_dir.name} from {done}")
        except ckpt.CheckpointError as e:  # e.g. a size table changed since the run was made
            move_aside(run_dir, f"no longer loads ({str(e).splitlines()[0]})", log)
    if model is None:
        model = from_pretrained(train().checkpoint, which=which, device=dev, log=log)
    model.run_dir = str(run_dir)
    model.train_seconds = elapsed_seconds(run_dir)
    return model


def _tokenizer(p: Preset, label: str, tok: TokenizerConfig, train: TrainConfig, cache_dir, dev, log, callback,
               progress, which) -> nn.Module:
    run_dir = _tokenizer_run_dir(p, label, tok, train, cache_dir)
    base = warm_start_recipe(tok, train)
    label_base = None
    if base is not None:  # the plain AE it continues from: cached too, shared by the variants
        plain_name = CONV_PREFIX + "plain" if label.startswith(CONV_PREFIX) else "plain"
        label_base = plain_name if base == tokenizer_recipe(p, plain_name, base[1].seed)[:2] else "warm-start"

    def fit():
        init_from = None
        if base is not None:
            plain = _tokenizer(p, label_base, *base, cache_dir, dev, log, None, progress, "ema")
            init_from = ckpt.latest_checkpoint(plain.run_dir, log=log)
            log(f"{label!r} continues from the plain AE ({init_from})")
        log(f"training tokenizer {label!r} (preset {p.name}, γ={tok.gamma}, M={tok.mask_ratio}"
            f"{', additive' if tok.use_additive_noise else ''}, {train.steps} steps) into {run_dir}")
        return train_tokenizer(tok, train, p.data, run_dir, device=dev, callback=callback, progress=progress,
                               log=log, init_from=init_from)

    configs = {"tokenizer": tok, "tokenizer_train": train, "data": p.data}
    model = _cached(run_dir, configs, train.steps, fit, which, dev, log)
    model.variant = label
    # the plain AE's training time, whether it was trained now or found in the cache
    model.warm_start_seconds = 0.0 if base is None else elapsed_seconds(
        _tokenizer_run_dir(p, label_base, *base, cache_dir))
    return model


def get_tokenizer(preset: Preset | str, variant: str, cache_dir, seed: int = 0, device="auto", log: Callable = print,
                  callback: Callable | None = None, progress: str = "auto", which: str = "ema") -> nn.Module:
    """The ``variant`` tokenizer (plain | ldetok | mask_only | noise_only | additive | g{γ}-m{M})
    of ``preset`` at ``seed``: loaded from the cache when finished, else trained (or resumed) with
    the preset's recipe, warm start included (``presets.warm_start_recipe``). EMA weights
    (``which="model"``: the online ones) in eval mode on ``device``."""
    p = _preset(preset)
    tok, train, _ = tokenizer_recipe(p, variant, seed)
    return _tokenizer(p, variant, tok, train, cache_dir, pick_device(device), log, callback, progress, which)


def finetune_decoder(preset: Preset | str, variant: str, tokenizer: nn.Module, seed: int = 0,
                     steps: int | None = None, device="auto", log: Callable = print,
                     progress: str = "auto") -> nn.Module:
    """The paper's second tokenizer stage (``presets.decoder_finetune``) on a cached ``tokenizer``.

    It starts from the EMA weights, so the encoder, the latents and every generator trained on them
    stay exactly as they were; only reconstructions change. Kept in ``<tokenizer run>-ft{steps}``."""
    p = _preset(preset)
    tok, train, _ = tokenizer_recipe(p, variant, seed)
    ft_tok, ft_train = decoder_finetune(tok, train, steps)
    src = ckpt.latest_checkpoint(tokenizer.run_dir, log=lambda *_: None)
    if src is None:
        raise ValueError(f"tokenizer {variant!r} has no finished checkpoint in {tokenizer.run_dir}")
    run_dir = Path(tokenizer.run_dir).with_name(f"{Path(tokenizer.run_dir).name}-ft{ft_train.steps}")
    dev = pick_device(device)

    def fit():
        log(f"decoder fine-tune {variant} s{seed}: {ft_train.steps} steps, γ=0 M=0 ({run_dir.name})")
        return train_tokenizer(ft_tok, ft_train, p.data, run_dir, device=dev, init_from=src, init_weights="ema",
                               progress=progress, log=log)

    configs = {"tokenizer": ft_tok, "tokenizer_train": ft_train, "data": p.data}
    model = _cached(run_dir, configs, ft_train.steps, fit, "ema", dev, log)
    before, after = tokenizer.encoder.state_dict(), model.encoder.state_dict()
    if any(not torch.equal(before[k].to(v.device), v) for k, v in after.items()):
        raise RuntimeError(f"the decoder fine-tune of {variant!r} changed the encoder ({run_dir}); "
                           "its latents would no longer match the generators")
    model.variant = variant
    return model


def get_generator(preset: Preset | str, family: str, variant: str, cache_dir, seed: int = 0, device="auto",
                  log: Callable = print, callback: Callable | None = None, progress: str = "auto",
                  tokenizer: nn.Module | None = None, return_tokenizer: bool = False, which: str = "ema",
                  eval_samples: int | None = None, model_kwargs: dict | None = None):
    """The ``family`` generator (e.g. ``"SiT"``) of ``preset`` trained on ``variant`` latents.

    Loaded from the cache when finished, else trained (or resumed) with the preset's
    ``generator`` / ``generator_train`` configs; the tokenizer comes from :func:`get_tokenizer`
    (same cache) unless given. The generator's latent statistics are set on the tokenizer, so
    ``generators.decode_latents(tokenizer, z)`` decodes its samples. Returns the generator (EMA,
    eval mode), or ``(generator, tokenizer)`` with ``return_tokenizer=True``. ``eval_samples``:
    images in the end-of-training sample figure (default 10 at ``smoke``, else 20; 0 = none).
    ``model_kwargs``: settings for ``create_generator`` beyond the preset's size (e.g. ``{"depth": 6}``);
    the run gets a folder of its own (``-m<digest>``).
    """
    p = _preset(preset)
    family = generator_family(family)
    dev = pick_device(device)
    if tokenizer is None:
        tokenizer = get_tokenizer(p, variant, cache_dir, seed=seed, device=dev, log=log, progress=progress)
    tokenizer_name = Path(getattr(tokenizer, "run_dir", "")).name or tokenizer_fingerprint(tokenizer, p.data)
    gen_cfg, train_cfg = p.generator, p.generator_train.replace(seed=seed)
    run_dir = _generator_run_dir(p, family, variant, seed, tokenizer_name, cache_dir)
    model_kwargs = dict(model_kwargs or {})
    if model_kwargs:
        run_dir = run_dir.with_name(f"{run_dir.name}-m{_digest(model_kwargs)}")
    fp = tokenizer_fingerprint(tokenizer, p.data)

    def fit():
        log(f"training generator {family}_{gen_cfg.size} on {variant!r} latents ({train_cfg.steps} steps) "
            f"into {run_dir}")
        n = eval_samples if eval_samples is not None else (10 if p.name == "smoke" else 20)
        return train_generator(family, gen_cfg, train_cfg, p.data, tokenizer, run_dir, device=dev, callback=callback,
                               progress=progress, log=log, eval_samples=n,
                               latent_cache_dir=Path(cache_dir) / "latents", **model_kwargs)

    configs = {"generator": gen_cfg, "generator_train": train_cfg, "data": p.data}
    model = _cached(run_dir, configs, train_cfg.steps, fit, which, dev, log, fingerprint=fp)
    mean, std = load_latent_stats(ckpt.latest_checkpoint(run_dir, log=lambda *_: None))
    tokenizer.set_latent_stats(mean, std)
    model.latent_stats = (mean.clone(), std.clone())
    return (model, tokenizer) if return_tokenizer else model


def clear_cache(cache_dir, what: str = "all") -> list[Path]:
    """Remove cached runs (``what``: all | tokenizers | generators | latents); returns the removed paths."""
    if what not in ("all", *CACHE_KINDS):
        raise ValueError(f"what={what!r} is not known; allowed: all, {', '.join(CACHE_KINDS)}")
    removed = []
    for sub in (CACHE_KINDS if what == "all" else (what,)):
        d = Path(cache_dir) / sub
        if d.is_dir():
            shutil.rmtree(d)
            removed.append(d)
    return removed
