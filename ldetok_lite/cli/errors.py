"""The command line's one error convention: a user's mistake is one line, never a traceback.

Commands raise; ``main`` prints ``ldetok-lite: error: <message>`` on stderr and exits with 2 for
:func:`is_user_error` exceptions (bad options, missing or unusable files, configs, a non-finite
loss). Anything else is a bug and keeps its traceback (``LDETOK_DEBUG=1`` shows them all).
"""

from __future__ import annotations

from ..config import ConfigError
from ..io import FileContentError
from ..training import NonFiniteLossError


class CliError(Exception):
    """A one-line error for the user (printed without a traceback, exit code 2)."""


USER_ERRORS = (CliError, ConfigError, ValueError, FileNotFoundError, FileContentError, NonFiniteLossError)


def is_user_error(e: BaseException) -> bool:
    """Errors that describe a bad input or an unusable file (printed as one line, no traceback)."""
    return isinstance(e, USER_ERRORS)
