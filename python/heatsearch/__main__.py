"""``python -m heatsearch``: the command line (see :mod:`heatsearch.cli`)."""

import sys

from .cli import main

sys.exit(main())
