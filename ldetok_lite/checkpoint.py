"""Checkpoints: safetensors weights + JSON config, a separate resumable state, atomic writes.

Layout of one checkpoint directory (DESIGN §3 "Checkpoints"; compare DETOK_SPEC §3.3)::

    <out_dir>/checkpoints/step_000500/
        model.safetensors       the online weights
        ema.safetensors         the EMA weights (same key names)
        config.json             {"spec": model.spec, "step": ..., "configs": {...run configs...}}
        train_state.pt          optimizers, step, RNG states, data position (torch.load weights_only=True)
        extra_*.safetensors     other trainable modules (e.g. the discriminator)
        MANIFEST.json           written LAST: file names, sizes and SHA-256 digests

A directory is written under a temporary name and renamed into place once its manifest exists,
so a kill at any moment leaves either a complete checkpoint or a ``*.tmp*`` leftover that is
ignored (and cleaned). :func:`latest_checkpoint` verifies the manifest (sizes and digests) and
falls back to the previous complete checkpoint when the newest one is truncated or corrupt.
``from_pretrained`` rebuilds a model from ``model.spec`` through ``create_tokenizer`` /
``create_generator``; it accepts a checkpoint directory or a run directory (newest checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

MANIFEST = "MANIFEST.json"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "train_state.pt"
CKPT_SUBDIR = "checkpoints"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or unsafe. The message names the path."""


# ----------------------------------------------------------------------------------------------
# safe primitives
# ----------------------------------------------------------------------------------------------


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; a file that carries a pickled Python object is refused.

    Raises :class:`CheckpointError` naming the file (never executes pickled code).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if m:
            raise CheckpointError(
                f"refusing to load {str(path)!r}: it carries a pickled Python object ({m.group(1)}), not only "
                "tensors and plain containers; loading it could run code. Only load files you trust, and "
                "then convert them to safetensors"
            ) from None
        last = text.strip().splitlines()[-1][:200] if text.strip() else "unpickling failed"
        raise CheckpointError(f"cannot read {str(path)!r}: not a PyTorch tensor file, or truncated/corrupt "
                              f"({last})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {str(path)!r} (truncated or corrupt?): {e}") from None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, write_fn) -> None:
    """Write via ``write_fn(tmp_path)`` to a temporary sibling, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write_fn(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    path = Path(path)
    _write_atomic(path, lambda t: t.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default)))
    return path


def save_tensors_atomic(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata=None) -> Path:
    """Save a flat tensor dict as safetensors atomically (contiguous CPU copies; shared storage is split)."""
    from safetensors.torch import save_file

    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    path = Path(path)
    _write_atomic(path, lambda t: save_file(clean, str(t), metadata=metadata))
    return path


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist")
    try:
        return load_file(str(path), device=str(device))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read {str(path)!r} (truncated or corrupt?): {e}") from None


def _json_default(o):
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The persistent state dict of ``model`` (DDP / compile wrappers unwrapped)."""
    return unwrap(model).state_dict()


def unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP
        model = model.module
    return getattr(model, "_orig_mod", model)  # torch.compile


# ----------------------------------------------------------------------------------------------
# writing a checkpoint directory
# ----------------------------------------------------------------------------------------------


def _config_payload(model: nn.Module, config: dict | None, step: int | None) -> dict:
    spec = getattr(unwrap(model), "spec", None)
    payload = {"format": FORMAT_VERSION, "spec": spec, "step": step, "saved": time.strftime("%Y-%m-%d %H:%M:%S")}
    if config:
        payload["configs"] = {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in config.items()}
    return payload


def _finish_dir(tmp: Path, final: Path) -> Path:
    """Write the manifest last, then rename the temporary directory into place."""
    files = sorted(p for p in tmp.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = {"format": FORMAT_VERSION, "files": {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
                                                    for p in files}}
    write_json_atomic(tmp / MANIFEST, manifest)
    _fsync_dir(tmp)
    if final.exists():  # an older copy of the same step (e.g. a re-run): replace it
        old = final.with_name(final.name + f".old{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)
    return final


def save_pretrained(model: nn.Module, directory: str | os.PathLike, ema_state: dict | None = None,
                    config: dict | None = None, step: int | None = None,
                    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
                    train_state: dict | None = None) -> Path:
    """Write ``directory`` atomically: model (+ EMA) safetensors, ``config.json``, then the manifest.

    ``config``: run configs ({"tokenizer": TokenizerConfig, ...}) stored next to ``model.spec``.
    ``train_state`` (optional): resumable state saved with ``torch.save`` (tensors and plain
    containers only; read back with ``weights_only=True``). ``extra_tensors``: {"discriminator": sd}.
    """
    final = Path(directory)
    if getattr(unwrap(model), "spec", None) is None:
        warnings.warn("model has no .spec; from_pretrained will not be able to rebuild it", stacklevel=2)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_tensors_atomic(tmp / MODEL_FILE, model_state(model))
        if ema_state is not None:
            save_tensors_atomic(tmp / EMA_FILE, ema_state)
        for name, sd in (extra_tensors or {}).items():
            save_tensors_atomic(tmp / f"extra_{name}.safetensors", sd)
        if train_state is not None:
            _write_atomic(tmp / STATE_FILE, lambda t: torch.save(train_state, t))
        write_json_atomic(tmp / CONFIG_FILE, _config_payload(model, config, step))
        return _finish_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def verify_checkpoint(directory: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``directory`` has a manifest whose files all match."""
    d = Path(directory)
    man = d / MANIFEST
    if not man.is_file():
        raise CheckpointError(f"checkpoint {str(d)!r} is incomplete (no {MANIFEST}; the write was interrupted?)")
    try:
        files = json.loads(man.read_text())["files"]
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {str(d)!r} has an unreadable manifest: {e}") from None
    for name, info in files.items():
        p = d / name
        if not p.is_file():
            raise CheckpointError(f"checkpoint {str(d)!r} is missing {name}")
        if p.stat().st_size != info["size"]:
            raise CheckpointError(f"checkpoint file {str(p)!r} is truncated ({p.stat().st_size} bytes, "
                                  f"expected {info['size']})")
        if _sha256(p) != info["sha256"]:
            raise CheckpointError(f"checkpoint file {str(p)!r} is corrupt (SHA-256 does not match the manifest)")


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint directories under ``out_dir/checkpoints`` (complete or not), oldest first by step."""
    root = Path(out_dir) / CKPT_SUBDIR
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name[5:]))


def latest_checkpoint(out_dir: str | os.PathLike, log=None) -> Path | None:
    """The newest *complete and intact* checkpoint directory in a run, or ``None``.

    A newer one that fails :func:`verify_checkpoint` is reported through ``log`` (or a warning)
    and skipped, so the previous complete checkpoint is used.
    """
    for d in reversed(list_checkpoints(out_dir)):
        try:
            verify_checkpoint(d)
            return d
        except CheckpointError as e:
            msg = f"skipping checkpoint: {e}"
            if log is not None:
                log(msg)
            else:
                warnings.warn(msg, stacklevel=2)
    return None


def checkpoint_dir(out_dir: str | os.PathLike, step: int) -> Path:
    return Path(out_dir) / CKPT_SUBDIR / f"step_{step:07d}"


def prune_checkpoints(out_dir: str | os.PathLike, keep: int = 2) -> None:
    """Keep the newest ``keep`` complete checkpoints; remove older ones and stale temporary dirs."""
    root = Path(out_dir) / CKPT_SUBDIR
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.is_dir() and (".tmp" in p.name or ".old" in p.name):
            shutil.rmtree(p, ignore_errors=True)
    complete = [d for d in list_checkpoints(out_dir) if (d / MANIFEST).is_file()]
    for d in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# reading back
# ----------------------------------------------------------------------------------------------


def resolve_checkpoint(path: str | os.PathLike, log=None) -> Path:
    """A checkpoint directory from either itself or a run directory (its newest complete checkpoint)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{str(p)!r} does not exist")
    if (p / MANIFEST).is_file() or (p / MODEL_FILE).is_file():
        verify_checkpoint(p)
        return p
    found = latest_checkpoint(p, log=log)
    if found is None:
        raise CheckpointError(f"no complete checkpoint in {str(p)!r} (expected {CKPT_SUBDIR}/step_*/{MANIFEST})")
    return found


def read_config(path: str | os.PathLike) -> dict:
    """``config.json`` of a checkpoint (or of a run's newest checkpoint)."""
    d = resolve_checkpoint(path)
    return json.loads((d / CONFIG_FILE).read_text())


def build_from_spec(spec: dict) -> nn.Module:
    """Instantiate a fresh model from ``{"kind", "name", "kwargs"}`` via the registries."""
    if not isinstance(spec, dict) or "kind" not in spec or "name" not in spec:
        raise CheckpointError(f"cannot rebuild a model from spec {spec!r}; expected keys kind, name, kwargs")
    kwargs = dict(spec.get("kwargs") or {})
    if spec["kind"] == "tokenizer":
        from ldetok_lite.tokenizer import create_tokenizer

        return create_tokenizer(spec["name"], **kwargs)
    if spec["kind"] == "generator":
        from ldetok_lite.generators import create_generator

        return create_generator(spec["name"], **kwargs)
    raise CheckpointError(f"unknown model kind {spec['kind']!r}; allowed: tokenizer, generator")


def load_weights(model: nn.Module, directory: str | os.PathLike, which: str = "ema", strict: bool = True) -> nn.Module:
    """Load ``model``/``ema`` safetensors from a checkpoint into ``model`` (in place)."""
    if which not in ("ema", "model"):
        raise ValueError(f"which={which!r} is not known; allowed: 'ema', 'model'")
    d = resolve_checkpoint(directory)
    f = d / (EMA_FILE if which == "ema" else MODEL_FILE)
    if which == "ema" and not f.is_file():
        f = d / MODEL_FILE
    sd = load_tensors(f)
    target = unwrap(model)
    try:
        target.load_state_dict(sd, strict=strict)
    except RuntimeError as e:
        spec = getattr(target, "spec", None)
        raise CheckpointError(
            f"weights in {str(f)!r} do not fit this model ({spec}); was the checkpoint made for another model "
            f"or size? {str(e).splitlines()[0]} ..."
        ) from None
    return model


def from_pretrained(directory: str | os.PathLike, which: str = "ema", device: str | torch.device = "cpu",
                    log=None) -> nn.Module:
    """Rebuild a model from ``config.json``'s spec and load its weights; returned in eval mode.

    ``directory``: a checkpoint directory or a run ``out_dir`` (its newest complete checkpoint).
    ``which``: ``"ema"`` (default; falls back to the online weights if no EMA was saved) or ``"model"``.
    """
    if which not in ("ema", "model"):
        raise ValueError(f"which={which!r} is not known; allowed: 'ema', 'model'")
    from ldetok_lite.device import pick_device

    d = resolve_checkpoint(directory, log=log)
    cfg = json.loads((d / CONFIG_FILE).read_text())
    model = build_from_spec(cfg.get("spec"))
    load_weights(model, d, which=which)
    stats = d / "latent_stats.safetensors"
    if stats.is_file() and hasattr(model, "set_latent_stats"):
        s = load_tensors(stats)
        model.set_latent_stats(s["mean"], s["std"])
    model.checkpoint_dir = str(d)
    return model.to(pick_device(device)).eval()


def load_train_state(directory: str | os.PathLike) -> dict:
    """The resumable state of a checkpoint (``torch.load(weights_only=True)``)."""
    return safe_torch_load(Path(directory) / STATE_FILE)
