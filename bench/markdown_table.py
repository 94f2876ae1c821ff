"""A DataFrame as a Markdown table, for the benchmarks' reports (pandas' ``to_markdown`` needs the
optional ``tabulate`` package)."""

from __future__ import annotations

import pandas as pd


def markdown(table: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    """``table`` as Markdown; floats through ``float_format`` (default: 4 significant digits)."""
    cells = [[float_format.format(v) if isinstance(v, float) else str(v) for v in row]
             for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
