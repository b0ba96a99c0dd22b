"""``python -m heatsearch``: the command line (see :mod:`heatsearch.app.cli`)."""

import sys

from .app.cli import main

sys.exit(main())
