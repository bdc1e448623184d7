"""`python -m kvae_serving ARTIFACTS [--host 127.0.0.1] [--port 8000]`, and `python -m kvae_serving generate ARTIFACTS ...`."""

import sys

from .cli import main

sys.exit(main())
