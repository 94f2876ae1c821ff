"""``python -m tune.space --json-schema``: print the JSON Schema of a search-space file
(`tune.space.json_schema`), the file editors read from ``search_spaces/search-space.schema.json``."""

from __future__ import annotations

import argparse
import json
import sys

from .json_schema import space_json_schema


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tune.space", description=__doc__)
    parser.add_argument("--json-schema", action="store_true", required=True,
                        help="print the JSON Schema of a search-space file")
    parser.parse_args(argv)
    print(json.dumps(space_json_schema(), indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
