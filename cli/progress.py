"""Long work under one live display: a spinner for the step, a bar for whatever reports progress.

Steps deep in the flows (the tuning trials) report through `loanops.progress` log records; while
a command waits on a flow, a handler turns those records into bars. On a terminal the display
vanishes when the work ends, leaving only the command's own output; piped, it prints nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from cli.console import console
from cli.errors import clear_errors, quiet_prefect_tracebacks

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

T = TypeVar("T")


class ProgressBars(logging.Handler):
    """Draws one bar per step from the `loanops.progress` records it receives."""

    def __init__(self, display: Progress) -> None:
        super().__init__(level=logging.INFO)
        self.display = display
        self.bars: dict[str, TaskID] = {}

    def emit(self, record: logging.LogRecord) -> None:
        from loanops.progress import progress_of

        progress = progress_of(record)
        if progress is None:
            return
        figures = "  ".join(f"{label} {value}" for label, value in progress.figures.items())
        bar = self.bars.get(progress.step)
        if bar is None:
            bar = self.display.add_task(progress.step, total=progress.total, figures=figures)
            self.bars[progress.step] = bar
        self.display.update(bar, completed=progress.done, total=progress.total, figures=figures)


def live_display() -> Progress:
    """A spinner and description per task, and for a task with a total, its bar and count."""
    from rich.console import RenderableType
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class OnlyWithTotal(ProgressColumn):
        """Shows `column` for a task with a known total, nothing for a bare spinner task."""

        def __init__(self, column: ProgressColumn) -> None:
            super().__init__()
            self.column = column

        def render(self, task: Task) -> RenderableType:
            return Text("") if task.total is None else self.column.render(task)

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        OnlyWithTotal(BarColumn()),
        OnlyWithTotal(MofNCompleteColumn()),
        TextColumn("{task.fields[figures]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


@contextmanager
def working(message: str) -> Iterator[None]:
    """Show `message` with a spinner, and bars for progress records, until the block ends.

    Only on a terminal: piped or captured, the command's output is its results alone.
    """
    if not console.is_terminal:
        yield
        return
    from loanops.progress import LOGGER_NAME

    listener = logging.getLogger(LOGGER_NAME)
    with live_display() as display:
        display.add_task(message, total=None, figures="")
        bars = ProgressBars(display)
        listener.addHandler(bars)
        level = listener.level
        listener.setLevel(logging.INFO)
        try:
            yield
        finally:
            listener.removeHandler(bars)
            listener.setLevel(level)


def run_with_status(message: str, run: Callable[[], T]) -> T:
    """Run a flow (or other long work) under the live display, its clear errors as one line."""
    quiet_prefect_tracebacks()
    with clear_errors(), working(message):
        return run()
