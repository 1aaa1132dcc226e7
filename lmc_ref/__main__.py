"""``python -m lmc_ref``: the same as the ``lmc-ref`` command."""

import sys

from .cli import main

sys.exit(main())
