"""`python -m worker [--gpu N] [--queues gpu,cpu] [--concurrency 1]` (see worker/cli.py)."""

import sys

from worker.cli import main

if __name__ == "__main__":
    sys.exit(main())
