"""`python -m experiments --out DIR [--quick] [--seed N]`: the three experiments and DIR/report.md."""

import sys

from experiments.cli import main

sys.exit(main())
