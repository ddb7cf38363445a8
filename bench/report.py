"""Small aligned tables and the statistics they show."""

from collections.abc import Sequence

import numpy as np


def median(values: Sequence[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile; nan for no values."""
    return float(np.percentile(values, q)) if values else float("nan")


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[object]], notes: Sequence[str] = (), align: str = ""
) -> str:
    """`title`, then the columns aligned per `align` ("l"/"r" each; default: first left, others right)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)).rstrip()

    lines = [line(row) for row in cells]
    rule = "-" * max(map(len, lines))
    return "\n".join([title, rule, lines[0], rule, *lines[1:], rule, *notes])
