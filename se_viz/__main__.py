"""``python -m se_viz``: the command line (see se_viz.cli)."""

import sys

from .cli import main

sys.exit(main())
