"""Files: atomic writes, JSON lines, safe loading of weights, and the one ``--set`` grammar.

- **Atomic writes** (:func:`atomic_write`): the bytes go to a new temporary file with a random
  name in the target's folder (created exclusively, so it never follows or overwrites a link),
  are flushed to disk, and the file is then renamed over the target. A kill at any moment
  leaves the old file or the new one, never half of one.
- **JSON lines** (:func:`read_jsonl`, :func:`append_jsonl`): ``metrics.jsonl`` and the
  comparison's ``rows.jsonl``. A line cut by a kill is skipped when read.
- **Safe loading** (:func:`safe_torch_load`, :func:`load_tensors`): ``.pth`` files are read with
  ``torch.load(weights_only=True)``, so a file that carries code is refused, never run.
- **The ``--set`` grammar** (:func:`parse_value`, :func:`parse_overrides`): ``group.key=value``
  items for every command and for the ``overrides`` parameter of notebooks 20-22.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import pickletools
import re
import secrets
import shutil
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import torch

__all__ = [
    "FileContentError", "UnsafeFileError", "DiskFullError", "repo_root", "atomic_write", "fsync_dir",
    "write_text_atomic", "write_json_atomic", "save_tensors_atomic", "read_jsonl", "append_jsonl", "append_text",
    "open_append", "write_jsonl_atomic", "json_default",
    "sha256_file", "pickled_globals", "safe_torch_load", "load_tensors", "load_state_dict_file", "parse_value",
    "parse_overrides",
]


class FileContentError(ValueError):
    """A file exists but cannot be used: truncated, corrupt, or of another kind. Names the file."""


class UnsafeFileError(FileContentError):
    """A weights file carries pickled code (it could run a program when loaded) and was refused."""


class DiskFullError(OSError):
    """A write failed because the disk is full; names the file and the space left."""

    def __str__(self) -> str:
        return str(self.strerror)


def repo_root(start: Path | None = None) -> Path:
    """The checkout root (holding ``pyproject.toml`` and ``ldetok_lite/``) around ``start`` (default: the
    current directory), else the checkout this package was imported from, else the current directory."""
    here = (start or Path.cwd()).resolve()
    package_parent = Path(__file__).resolve().parents[1]  # an editable install's checkout
    for p in (here, *here.parents, *([package_parent] if start is None else [])):
        if (p / "pyproject.toml").is_file() and (p / "ldetok_lite").is_dir():
            return p
    return here


# ----------------------------------------------------------------------------------------------
# atomic writes
# ----------------------------------------------------------------------------------------------


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk; best effort."""
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


def _disk_full(path: Path, err: BaseException) -> DiskFullError:
    try:
        free = f"{shutil.disk_usage(path.parent).free / 1e6:.0f} MB free"
    except OSError:
        free = "free space unknown"
    return DiskFullError(errno.ENOSPC, f"the disk is full: could not write {str(path)!r} ({free}); free some space "
                                       f"or write somewhere else ({err})")


def _is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err).lower()  # torch's writer reports a full disk as a RuntimeError
    return "no space left" in text or "file write failed" in text


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(f)`` on a fresh temporary file next to ``path``, then rename it over ``path``.

    The temporary name is random and created exclusively (``O_EXCL | O_NOFOLLOW``): it cannot be
    a link planted by someone else. The target's folder is created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o644)
            break
        except FileExistsError:  # pragma: no cover - a 48-bit name collision
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if _is_disk_full(e):
            raise _disk_full(path, e) from None
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def json_default(o):
    """``json.dumps(default=...)`` for configs, paths, tensors and tuples."""
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, default=json_default) + "\n")


def save_tensors_atomic(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                        metadata: dict[str, str] | None = None) -> Path:
    """A flat tensor dict as safetensors (contiguous CPU copies; shared storage is split)."""
    from safetensors.torch import save

    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return atomic_write(path, lambda f: f.write(save(clean, metadata=metadata)))


# ----------------------------------------------------------------------------------------------
# JSON lines
# ----------------------------------------------------------------------------------------------


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The rows of a JSON-lines file ([] when it does not exist; cut or garbled lines skipped)."""
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one row; refuses to write through a symbolic link."""
    append_text(path, json.dumps(row, default=json_default) + "\n")


def open_append(path: str | os.PathLike) -> int:
    """A file descriptor appending to ``path`` (created when missing); a symbolic link is refused."""
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FileContentError(f"{str(path)!r} is a symbolic link; the kit does not write through links "
                                   "(remove it or use another output folder)") from None
        raise


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` to ``path`` (created when missing); refuses to write through a symbolic link."""
    path = Path(path)
    line = text.encode("utf-8")
    fd = open_append(path)
    try:
        os.write(fd, line)
    except OSError as e:
        if _is_disk_full(e):
            raise _disk_full(path, e) from None
        raise
    finally:
        os.close(fd)


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    return write_text_atomic(path, "".join(json.dumps(r, default=json_default) + "\n" for r in rows))


# ----------------------------------------------------------------------------------------------
# reading weights safely
# ----------------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _allowed_globals() -> set[str]:
    """The globals ``torch.load(weights_only=True)`` accepts (tensor rebuilders, dtypes, containers)."""
    try:
        from torch import _weights_only_unpickler  # a private module: fall back on prefixes without it

        return set(_weights_only_unpickler._get_allowed_globals())
    except (ImportError, AttributeError):
        return set()


_SAFE_PREFIXES = ("torch._utils._rebuild", "torch._tensor._rebuild", "collections.OrderedDict", "_codecs.encode")


def _pickle_bytes(path: Path) -> bytes:
    """The pickle stream of a ``.pth``: the ``data.pkl`` of a zip checkpoint, else the file itself."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
            return z.read(name) if name else b""
    return path.read_bytes()


def pickled_globals(path: str | os.PathLike) -> list[str] | None:
    """``module.name`` of every global a pickle in ``path`` refers to, read with ``pickletools``
    (nothing is executed); None when the file holds no readable pickle."""
    try:
        data = _pickle_bytes(Path(path))
        ops = list(pickletools.genops(data))
    except Exception:  # not a pickle, or cut short
        return None
    names, strings = [], []
    for op, arg, _ in ops:
        if op.name in ("GLOBAL", "INST"):
            names.append(str(arg).replace(" ", "."))
        elif "UNICODE" in op.name or op.name in ("SHORT_BINSTRING", "BINSTRING", "STRING"):
            strings.append(str(arg))
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            names.append(f"{strings[-2]}.{strings[-1]}")
    return names


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only.

    Raises :class:`UnsafeFileError` when the file carries pickled code (it is never run; the
    refusal names what it would have called), and :class:`FileContentError` when it is
    truncated, corrupt or not a PyTorch file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        names = pickled_globals(path)
        if names is None:  # no readable pickle: fall back on torch's own words
            names = re.findall(r"GLOBAL ([\w]+\.[\w.]+)", str(e))
        allowed = _allowed_globals()
        code = [n for n in dict.fromkeys(names) if n not in allowed and not n.startswith(_SAFE_PREFIXES)
                and not n.endswith("Storage")]
        if code:
            raise UnsafeFileError(
                f"refused {str(path)!r}: it contains pickled code or Python objects ({', '.join(code[:3])}), not "
                "only tensors, so loading it could run a program. The kit never loads such files, and neither "
                "should you unless you made the file yourself; then re-save its tensors "
                "(torch.save(model.state_dict(), ...)) or save them as safetensors") from None
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        last = next((ln for ln in lines if ln.startswith(("Unsupported", "Trying", "Could not"))),
                    lines[-1] if lines else "unpickling failed")[:200]
        raise FileContentError(f"cannot read {str(path)!r}: not a PyTorch tensor file, or truncated/corrupt "
                               f"({last})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise FileContentError(f"cannot read {str(path)!r} (truncated or corrupt?): {e}") from None


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors file as a tensor dict; :class:`FileContentError` when it is unreadable."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    try:
        return load_file(str(path), device=str(device))
    except Exception as e:  # safetensors raises its own error types
        raise FileContentError(f"cannot read {str(path)!r} (truncated or corrupt?): {e}") from None


def load_state_dict_file(path: str | os.PathLike) -> dict:
    """A state dict from ``.safetensors`` or ``.pth`` (the latter through :func:`safe_torch_load`)."""
    path = Path(path)
    return load_tensors(path) if path.suffix == ".safetensors" else safe_torch_load(path)


# ----------------------------------------------------------------------------------------------
# the one --set grammar
# ----------------------------------------------------------------------------------------------

_WORDS = {"True": True, "true": True, "False": False, "false": False, "None": None, "null": None}


def parse_value(text: str):
    """One command-line value: ``True``/``true``/``False``/``false`` → bool, ``None``/``null`` →
    None (papermill's typing; lower-case ``none`` stays a string, a value of several options), then
    int, float, a JSON list (``[1, 2.5]``), else the string itself (quotes stripped)."""
    s = text.strip()
    if s in _WORDS:
        return _WORDS[s]
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            pass
    if s.startswith("[") and s.endswith("]"):
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            pass
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    return s


def parse_overrides(items: str | Iterable[str] | None, what: str = "override") -> dict:
    """``group.key=value`` items → ``{"group.key": value}`` (values typed by :func:`parse_value`).

    ``items``: a list (repeated ``--set``) or one string with items separated by spaces, commas
    or semicolons (the ``overrides`` notebook parameter). A malformed item raises ``ValueError``
    naming it as ``what`` (``--set`` on the command line).
    """
    if items is None:
        return {}
    if isinstance(items, str):
        items = [i for i in re.split(r"[\s,;]+(?![^\[]*\])", items.strip()) if i]
    out = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ValueError(f"{what} {item!r} must look like group.key=value, e.g. tokenizer.gamma=2.0")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_value(value)
    return out
