"""The one table renderer of every command (run's summary, compare, claims, models, suites, profiles): rich's
table, drawn as plain aligned text with a rule under the header, so it reads the same in a terminal, a CI log and
a pipe, and tests can read it back (cells are two spaces or more apart)."""

import io
import sys

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


class Progress:
    """Progress of a known number of steps on stderr: rich's bar on a terminal; elsewhere (a CI log, a pipe) one
    plain line per step started, so log files get no carriage-return debris. Off (enabled=False) it prints nothing.
    Third-party bars (transformers' and the hub's tqdm) are turned off whenever this is not a terminal's bar."""

    def __init__(self, total: int, description: str, enabled: bool = True, done: int = 0):
        self.total, self.description, self.done = total, description, done
        self.enabled = enabled
        self.terminal = enabled and sys.stderr.isatty()
        self._bar = None
        if not self.terminal:
            _quiet_third_party_bars()
        else:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.fields[now]}"), console=Console(stderr=True), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(description, total=total, completed=done, now="")

    def start(self, what: str) -> None:
        """Step `what` begins."""
        if self._bar is not None:
            self._bar.update(self._task, now=what)
        elif self.enabled:
            print(f"{self.description} {self.done + 1}/{self.total}: {what}", file=sys.stderr, flush=True)

    def advance(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _quiet_third_party_bars() -> None:
    """The hub's and transformers' bars off in this process (the workers turn their own off), leaving the environment
    as it was."""
    try:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging

        disable_progress_bars()
        logging.disable_progress_bar()
    except ImportError:
        pass
