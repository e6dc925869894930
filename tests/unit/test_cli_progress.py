"""The CLI's live display: progress records become bars; piped output stays the results alone."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from cli import progress as cli_progress
from loanops import progress


def test_progress_records_become_one_bar_per_step() -> None:
    display = cli_progress.live_display()
    bars = cli_progress.ProgressBars(display)
    logger = logging.getLogger(progress.LOGGER_NAME)
    logger.addHandler(bars)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        progress.report(progress.Progress("tuning", done=1, total=30))
        progress.report(progress.Progress("tuning", 2, 30, {"best CV AUC": "0.7412"}))
        progress.report(progress.Progress("batch rows", 500, 2000))
        logger.info("a record that carries no progress")
    finally:
        logger.removeHandler(bars)
        logger.setLevel(level)

    tasks = {task.description: task for task in display.tasks}
    assert set(tasks) == {"tuning", "batch rows"}
    assert (tasks["tuning"].completed, tasks["tuning"].total) == (2, 30)
    assert tasks["tuning"].fields["figures"] == "best CV AUC 0.7412"
    assert (tasks["batch rows"].completed, tasks["batch rows"].total) == (500, 2000)


def test_piped_output_holds_no_spinner_or_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    piped = io.StringIO()
    monkeypatch.setattr(cli_progress, "console", Console(file=piped, force_terminal=False))

    def work() -> str:
        progress.report(progress.Progress("tuning", done=1, total=3))
        return "done"

    assert cli_progress.run_with_status("training…", work) == "done"
    assert piped.getvalue() == ""


def test_a_terminal_sees_the_bar_and_then_only_the_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=100)
    monkeypatch.setattr(cli_progress, "console", terminal)

    def work() -> None:
        progress.report(progress.Progress("tuning", 3, 30, {"best CV AUC": "0.7493"}))
        terminal.print("the result")

    cli_progress.run_with_status("training…", work)

    drawn = screen.getvalue()
    assert "training…" in drawn and "3/30" in drawn and "best CV AUC 0.7493" in drawn
    assert "━" in drawn and "<Bar" not in drawn  # a drawn bar, not a renderable's repr
    assert "the result" in drawn
