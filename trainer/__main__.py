"""``python -m trainer ...`` (also what torchrun runs: ``torchrun ... -m trainer train CONFIG``)."""

import sys

from trainer.cli import main

sys.exit(main())
