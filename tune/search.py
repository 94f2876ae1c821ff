"""``python -m tune.search``: runs `tune.cli.search` (its flags and exit status: see there)."""

import os
import sys

from tune.cli.search import main, run

__all__ = ["main", "run"]

if __name__ == "__main__":
    end = run()
    if end.at_once:  # measured: with S3 gone, the process printed its error, then sat in exit handlers for minutes
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(end.status)
    sys.exit(end.status)
