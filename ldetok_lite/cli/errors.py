"""The command line's one error convention: a user's mistake is one line, never a traceback.

Commands raise; ``main`` prints ``ldetok-lite: error: <message>`` on stderr and exits with 2 for
every error a user can cause (:func:`user_message`): bad options, missing or unusable files,
configs, a non-finite loss, and operating-system refusals (a path that is a file, no permission,
a read-only or full disk). Anything else is a bug and keeps its traceback (``LDETOK_DEBUG=1``
shows them all). Output locations are checked before any work (:func:`check_out_dir`,
:func:`check_out_file`), so a bad ``--out`` never costs a finished computation.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from ..config import ConfigError
from ..io import DiskFullError, FileContentError
from ..training import NonFiniteLossError

__all__ = ["CliError", "USER_ERRORS", "is_user_error", "user_message", "check_out_dir", "check_out_file"]


class CliError(Exception):
    """A one-line error for the user (printed without a traceback, exit code 2)."""


USER_ERRORS = (CliError, ConfigError, ValueError, FileNotFoundError, FileContentError, NonFiniteLossError,
               DiskFullError)

#: errno → what it means for a path the user gave, and what to do
_OS_ERRORS = {
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder where a file was expected; give a file name",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "operation not permitted; choose a folder you can write to",
    errno.EROFS: "the file system is read-only; choose another place",
    errno.ENOSPC: "the disk is full; free some space or write somewhere else",
    errno.EDQUOT: "the disk quota is exceeded; free some space or write somewhere else",
    errno.ENAMETOOLONG: "the file name is too long",
    errno.ELOOP: "too many symbolic links (or a link where the kit refuses to follow one)",
    errno.EEXIST: "it already exists",
}


def user_message(e: BaseException) -> str | None:
    """The one line to print for an error the user caused, or None for a bug (keep the traceback)."""
    if isinstance(e, USER_ERRORS):
        return str(e)
    if isinstance(e, OSError) and e.errno in _OS_ERRORS:
        where = f"{str(e.filename)!r}: " if e.filename else ""
        return f"cannot use {where}{_OS_ERRORS[e.errno]} ({e.strerror or e})"
    return None


def is_user_error(e: BaseException) -> bool:
    """Errors that describe a bad input or an unusable file (printed as one line, no traceback)."""
    return user_message(e) is not None


def check_out_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` as an output folder that can be created and written; else :class:`CliError` naming
    ``option``. Called before any work; leaves nothing behind (folders it made to try are removed)."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists() and not q.is_dir():
            what = "is a file" if q == p else f"is inside {str(q)!r}, which is a file"
            raise CliError(f"{option} {str(p)!r} {what}, not a folder; choose another {option}")
    made = [q for q in (p, *p.parents) if not q.exists()]
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p):
            pass
        for q in made:  # deepest first
            q.rmdir()
    except OSError as e:
        raise CliError(f"{option} {str(p)!r} cannot be written to ({e.strerror or e}); "
                       f"choose another {option}") from None
    return p


def check_out_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` as an output file: not a folder, not a symbolic link, in a writable folder; else
    :class:`CliError`. Called before any work."""
    p = Path(path)
    if p.is_dir():
        raise CliError(f"{option} {str(p)!r} is a folder; give a file name, e.g. {str(p / 'results.json')!r}")
    if p.is_symlink():
        raise CliError(f"{option} {str(p)!r} is a symbolic link; the kit does not write through links")
    check_out_dir(p.parent if str(p.parent) else Path("."), f"the folder of {option}")
    return p
