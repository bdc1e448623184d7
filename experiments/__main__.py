"""`python -m kvae_experiments --out DIR [--quick] [--seed N]`: the three experiments and DIR/report.md."""

import sys

from .cli import main

sys.exit(main())
