"""``python -m ensembler ...``: the same as the ``ensembler`` console script."""

import sys

from ensembler.cli import main

sys.exit(main())
