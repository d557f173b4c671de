"""The checkpoint format: safetensors weights, a JSON config, a separate resumable state.

Layout of one checkpoint directory (compare the official ``utils/misc.py``, ``save_checkpoint``)::

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
Building a model from a checkpoint is ``ldetok_lite.pretrained.from_pretrained``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from . import _compat
from .io import (
    FileContentError,
    UnsafeFileError,
    atomic_write,
    fsync_dir,
    safe_torch_load,
    save_tensors_atomic,
    sha256_file,
    write_json_atomic,
)
from .io import load_tensors as _load_tensor_file

MANIFEST = "MANIFEST.json"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "train_state.pt"
CKPT_SUBDIR = "checkpoints"
FORMAT_VERSION = 1


class CheckpointError(FileContentError):
    """A checkpoint is missing, incomplete, corrupt or unsafe. The message names the path."""


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
    manifest = {"format": FORMAT_VERSION, "files": {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
                                                    for p in files}}
    write_json_atomic(tmp / MANIFEST, manifest)
    fsync_dir(tmp)
    if final.exists():  # an older copy of the same step (e.g. a re-run): replace it
        old = Path(tempfile.mkdtemp(prefix=f"{final.name}.old", dir=final.parent))  # unique, ours
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)
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
    tmp = Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp", dir=final.parent))  # a fresh name: never a planted link
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the checkpoint from other users of a shared run folder
    try:
        save_tensors_atomic(tmp / MODEL_FILE, model_state(model))
        if ema_state is not None:
            save_tensors_atomic(tmp / EMA_FILE, ema_state)
        for name, sd in (extra_tensors or {}).items():
            save_tensors_atomic(tmp / f"extra_{name}.safetensors", sd)
        if train_state is not None:
            atomic_write(tmp / STATE_FILE, lambda f: torch.save(train_state, f))
        write_json_atomic(tmp / CONFIG_FILE, _config_payload(model, config, step))
        return _finish_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def manifest_files(directory: str | os.PathLike) -> dict[str, dict]:
    """The manifest's ``{file name: {"size", "sha256"}}``; every name must be a plain file name in
    the checkpoint folder (no path, no ``..``), else :class:`CheckpointError`."""
    d = Path(directory)
    man = d / MANIFEST
    if not man.is_file():
        raise CheckpointError(f"checkpoint {str(d)!r} is incomplete (no {MANIFEST}; the write was interrupted?)")
    try:
        files = json.loads(man.read_text())["files"]
        if not isinstance(files, dict) or not all(isinstance(v, dict) and {"size", "sha256"} <= set(v)
                                                  for v in files.values()):
            raise ValueError("'files' is not a table of sizes and digests")
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {str(d)!r} has an unreadable manifest: {e}") from None
    for name in files:
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
            raise CheckpointError(f"checkpoint {str(d)!r}: its manifest names {name!r}, which is not a file of the "
                                  "checkpoint folder; the manifest was tampered with")
    return files


def verify_checkpoint(directory: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``directory`` has a manifest whose files all match."""
    d = Path(directory)
    for name, info in manifest_files(d).items():
        p = d / name
        if p.is_symlink():
            raise CheckpointError(f"checkpoint file {str(p)!r} is a symbolic link; checkpoints hold plain files")
        if not p.is_file():
            raise CheckpointError(f"checkpoint {str(d)!r} is missing {name}")
        if p.stat().st_size != info["size"]:
            raise CheckpointError(f"checkpoint file {str(p)!r} is truncated ({p.stat().st_size} bytes, "
                                  f"expected {info['size']})")
        if sha256_file(p) != info["sha256"]:
            raise CheckpointError(f"checkpoint file {str(p)!r} is corrupt (SHA-256 does not match the manifest)")


def listed_file(directory: str | os.PathLike, name: str) -> Path:
    """``directory/name`` when the (verified) checkpoint's manifest lists it, else :class:`CheckpointError`:
    a file added after the checkpoint was written is never read."""
    d = Path(directory)
    if name not in manifest_files(d):
        raise CheckpointError(f"checkpoint {str(d)!r}: {name} is not listed in its manifest (added after the "
                              "checkpoint was written?); it is not read")
    return d / name


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


_LEFTOVER = re.compile(r"^step_\d+\.(tmp|old)[0-9a-z_]+$")  # save_pretrained's temporary folders
_ATOMIC_TEMP = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # io.atomic_write's temporary files


def _kit_file(name: str) -> bool:
    return (name in (MODEL_FILE, EMA_FILE, CONFIG_FILE, STATE_FILE, MANIFEST) or bool(_ATOMIC_TEMP.match(name))
            or (name.startswith("extra_") and name.endswith(".safetensors")))


def is_leftover(path: Path) -> bool:
    """True for a temporary folder an interrupted :func:`save_pretrained` left: its name has the
    kit's pattern and it holds only files the kit writes (a user's folder never qualifies)."""
    if path.is_symlink() or not path.is_dir() or not _LEFTOVER.match(path.name):
        return False
    return all(c.is_file() and not c.is_symlink() and _kit_file(c.name) for c in path.iterdir())


def prune_checkpoints(out_dir: str | os.PathLike, keep: int = 2) -> None:
    """Keep the newest ``keep`` complete checkpoints; remove older ones and the temporary folders of
    interrupted saves (:func:`is_leftover`). Anything else under ``checkpoints/`` is left alone."""
    root = Path(out_dir) / CKPT_SUBDIR
    if not root.is_dir():
        return
    for p in root.iterdir():
        if is_leftover(p):
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
    try:
        config = json.loads(listed_file(d, CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {str(d)!r} has an unreadable {CONFIG_FILE}: {e}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {str(d)!r}: {CONFIG_FILE} is not a JSON object")
    return config


def load_weights(model: nn.Module, directory: str | os.PathLike, which: str = "ema", strict: bool = True,
                 new_ok: tuple[str, ...] = ()) -> nn.Module:
    """Load ``model``/``ema`` safetensors from a checkpoint into ``model`` (in place). ``new_ok``:
    prefixes of the model's tensors the checkpoint may lack (they keep their initial values, e.g. the
    distillation projection of a tokenizer that continues from a plain AE); any other mismatch is an error."""
    if which not in ("ema", "model"):
        raise ValueError(f"which={which!r} is not known; allowed: 'ema', 'model'")
    d = resolve_checkpoint(directory)
    name = EMA_FILE if which == "ema" and EMA_FILE in manifest_files(d) else MODEL_FILE
    f = listed_file(d, name)
    sd = load_tensors(f)
    target = unwrap(model)
    try:
        if new_ok:
            keep = {k: v for k, v in target.state_dict().items() if k.startswith(tuple(new_ok)) and k not in sd}
            sd = {**keep, **sd}
        target.load_state_dict(sd, strict=strict)
    except RuntimeError as e:
        spec = getattr(target, "spec", None)
        raise CheckpointError(
            f"weights in {str(f)!r} do not fit this model ({spec}); was the checkpoint made for another model "
            f"or size? {str(e).splitlines()[0]} ..."
        ) from None
    return model


def load_train_state(directory: str | os.PathLike) -> dict:
    """The resumable state of a checkpoint (``torch.load(weights_only=True)``)."""
    try:
        return safe_torch_load(listed_file(directory, STATE_FILE))
    except (FileContentError, FileNotFoundError) as e:
        raise CheckpointError(f"checkpoint {str(directory)!r}: {e}") from None


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors file of a checkpoint; :class:`CheckpointError` when missing or unreadable."""
    try:
        return _load_tensor_file(path, device)
    except (FileContentError, FileNotFoundError) as e:
        raise CheckpointError(str(e)) from None


# ----------------------------------------------------------------------------------------------
# files written by the official code (``utils/misc.py``, ``save_checkpoint``)
# ----------------------------------------------------------------------------------------------


def read_official_state_dict(path, which: str = "model_ema", check=None, hint: str = "",
                             what: str = "a checkpoint written by the official code") -> tuple[dict, str]:
    """The state dict under ``which`` (``model`` or ``model_ema``) of an official ``.pth``, and a name
    for the source in messages.

    ``path`` may also be a bare state dict or an already-loaded dict. The file is read with
    ``torch.load(weights_only=True)``: one that carries code is refused, never run. As the
    official ``--load_from``, a file without ``model_ema`` gives its ``model`` weights (with a
    warning) and ``loss.*`` entries are skipped. ``check(sd)``
    returns an error text when the weights are not the expected model (None when they are);
    ``hint`` says where such files come from; ``what`` names the expected file in messages.
    """
    if isinstance(path, Mapping):
        ckpt, where = path, "the given dict"
    else:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no checkpoint at {str(p)!r}" + (f"; {hint}" if hint else ""))
        where = str(p)
        try:
            ckpt = safe_torch_load(p)
        except UnsafeFileError:
            raise
        except FileContentError as e:
            raise FileContentError(f"{e}; is it {what}?") from None
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{where} holds a {type(ckpt).__name__}, not a checkpoint dict with 'model'/'model_ema'")
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        sd = ckpt  # a bare state dict
    elif which in ckpt and ckpt[which] is not None:
        sd = ckpt[which]
    elif which == "model_ema" and isinstance(ckpt.get("model"), Mapping):
        # as the official --load_from: a file without EMA weights gives its model weights
        warnings.warn(f"{where} has no 'model_ema'; using its 'model' weights", stacklevel=3)
        sd = ckpt["model"]
    else:
        raise ValueError(f"{where} has no entry {which!r}; it has: {', '.join(map(str, list(ckpt)[:10]))} "
                         "(use which='model' or which='model_ema')")
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{where}[{which!r}] is not a state dict of tensors")
    sd = {k: v for k, v in sd.items() if not k.startswith("loss.")}  # loss modules, skipped as the official loader does
    problem = check(sd) if check is not None else None
    if problem:
        raise ValueError(f"{where} {problem}")
    return dict(sd), where


def state_dict_mismatch(model: nn.Module, sd: Mapping) -> str:
    """'' when ``sd`` has exactly ``model``'s keys and shapes; otherwise what is missing, extra or
    of another shape (five of each at most)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k}: file {tuple(sd[k].shape)} vs model {expected[k]}" for k in expected
             if k in sd and tuple(sd[k].shape) != expected[k]]
    lines = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            lines.append(f"{label} ({len(items)}): {', '.join(items[:5])}{more}")
    return "; ".join(lines)


def __getattr__(name: str):  # names that moved to another module in this release (ldetok_lite._compat)
    return _compat.moved_attribute(__name__, name)
