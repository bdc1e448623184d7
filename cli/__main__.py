"""`python -m kvae_cli ...` is the `kvae` command."""

import sys

from kvae_cli.main import main

sys.exit(main())
