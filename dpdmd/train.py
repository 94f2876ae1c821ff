"""``python -m dpdmd.train``: runs `dpdmd.cli.train.main` (its flags and exit status: see there).

This file serves ``-m`` only. Imported, Python would bind it to the package attribute
``dpdmd.train`` (an imported submodule becomes an attribute of its package) and so hide the
function ``dpdmd.train(config, ...)``. Rather than patch the import system, importing it is
refused with the names to use: `dpdmd.cli.train` for the command line, `dpdmd.train` for the
function.
"""

import sys

if __name__ == "__main__":
    from dpdmd.cli.train import main

    sys.exit(main())
elif __name__ != "__mp_main__":  # a spawned child of a ``-m dpdmd.train`` process re-runs this file under that name
    raise ImportError("`dpdmd.train` is the function train(config, ...); this module only serves "
                      "`python -m dpdmd.train`. For the command line's parts import dpdmd.cli.train "
                      "(e.g. `from dpdmd.cli.train import main`).")
