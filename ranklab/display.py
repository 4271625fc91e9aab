"""Plain-text tables for the command line and the benchmarks."""
from __future__ import annotations

__all__ = ["print_table", "format_table"]


def format_table(rows: list[dict], floatfmt: str = "{:.4f}") -> str:
    """Rows (dicts, columns in first-seen order) as an aligned text table."""
    if not rows:
        return "(no rows)"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[floatfmt.format(r[c]) if isinstance(r.get(c), float) else
              ("" if r.get(c) is None else str(r.get(c))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def print_table(rows: list[dict], floatfmt: str = "{:.4f}") -> None:
    print(format_table(rows, floatfmt))
