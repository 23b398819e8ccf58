"""`python -m cycleseg.cli ...` (and `torchrun -m cycleseg.cli ...`): the `cycleseg` command."""

import sys

from cycleseg.cli import main

sys.exit(main())
