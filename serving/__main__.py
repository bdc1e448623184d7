"""`python -m serving ARTIFACTS [--host 127.0.0.1] [--port 8000]`, and `python -m serving generate ARTIFACTS ...`."""

import sys

from serving.cli import main

sys.exit(main())
