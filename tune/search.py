"""``python -m tune.search``: runs `tune.cli.search` (its flags and exit status: see there)."""

from tune.cli.search import console, main, run

__all__ = ["main", "run"]

if __name__ == "__main__":
    console()
