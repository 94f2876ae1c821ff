"""``python -m tune.front``: redraw a search's fronts from its files (`tune.cli.front`)."""

import sys

from .cli.front import main

if __name__ == "__main__":
    sys.exit(main())
