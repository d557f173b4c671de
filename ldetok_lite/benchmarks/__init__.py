"""``ldetok-lite bench ...``: commands that print measured figures (see each module)."""

from __future__ import annotations

import sys


def fail(msg: str) -> int:
    """A one-line error on stderr (as ``ldetok-lite`` prints them); exit code 2."""
    print(f"ldetok-lite: error: {msg}", file=sys.stderr)
    return 2
