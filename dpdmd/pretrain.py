"""``python -m dpdmd.pretrain``: runs `dpdmd.cli.pretrain.main` (its flags: see there)."""

import sys

from dpdmd.cli.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
