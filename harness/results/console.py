"""The one table renderer of every command (run's summary, compare, claims, models, suites, profiles): rich's
table, drawn as plain aligned text with a rule under the header, so it reads the same in a terminal, a CI log and
a pipe, and tests can read it back (cells are two spaces or more apart)."""

import io

from rich.console import Console
from rich.table import Table


def table(headers: list[str], rows: list[list], right: tuple[str, ...] = ()) -> str:
    """`rows` under `headers`, each column as wide as its widest cell; columns named in `right` align right."""
    grid = Table(box=None, show_header=True, header_style="", pad_edge=False, padding=(0, 2, 0, 0),
                 show_edge=False)
    for name in headers:
        grid.add_column(name, justify="right" if name in right else "left", no_wrap=True)
    widths = [len(str(name)) for name in headers]
    for row in rows:
        cells = ["" if cell is None else str(cell) for cell in row]
        widths = [max(width, len(cell)) for width, cell in zip(widths, cells, strict=True)]
        grid.add_row(*cells)
    out = io.StringIO()
    Console(file=out, width=sum(widths) + 2 * len(widths) + 1, color_system=None, markup=False, emoji=False,
            highlight=False, soft_wrap=False).print(grid)
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    rule = "  ".join("-" * width for width in widths)
    return "\n".join([lines[0], rule, *lines[1:]])
