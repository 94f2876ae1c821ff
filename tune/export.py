"""``python -m tune.export``: runs `tune.cli.export` (its arguments and exit status: see there)."""

import sys

from tune.cli.export import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
