"""``python -m dpdmd.evaluate``: runs `dpdmd.cli.evaluate.main` (its flags: see there)."""

import sys

from dpdmd.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
