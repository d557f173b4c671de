"""``python -m ldetok_lite.cli ...`` (what torchrun starts on every rank)."""

import sys

from . import main

sys.exit(main())
