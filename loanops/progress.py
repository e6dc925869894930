"""Progress of long steps (tuning trials, batch rows), reported as log records.

A step reports through the `loanops.progress` logger rather than a callback, so the flows need
no parameter for it and any process that runs them can listen: the CLI draws a progress bar
from these records, and a log file or the Prefect UI keeps them as plain lines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

LOGGER_NAME = "loanops.progress"

_logger = logging.getLogger(LOGGER_NAME)


@dataclass(frozen=True)
class Progress:
    """How far one step has got: `done` of `total` units, with a few headline figures."""

    step: str
    """What is progressing, e.g. `tuning`; a listener keeps one bar per step."""
    done: int
    total: int | None
    """None when the step's size is not known in advance (a time budget, say)."""
    figures: dict[str, str] = field(default_factory=dict)
    """Short labelled figures to show beside the bar, e.g. {"best AUC": "0.7493"}."""

    def describe(self) -> str:
        """One line, for a log file."""
        of = f" of {self.total}" if self.total is not None else ""
        shown = "".join(f", {label} {value}" for label, value in self.figures.items())
        return f"{self.step}: {self.done}{of}{shown}"


def report(progress: Progress) -> None:
    """Log `progress` at INFO, with the record carrying it as `record.progress`."""
    if _logger.isEnabledFor(logging.INFO):
        _logger.info("%s", progress.describe(), extra={"progress": progress})


def progress_of(record: logging.LogRecord) -> Progress | None:
    """The progress a record carries, or None for any other record."""
    progress = getattr(record, "progress", None)
    return progress if isinstance(progress, Progress) else None
