"""`loanops compare`: champion against challenger on the paired decisions of a window."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.console import console
from cli.errors import settings
from cli.progress import run_with_status

if TYPE_CHECKING:
    from loanops.comparison.report import ComparisonReport

DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]


def compare(
    days: Annotated[
        float | None,
        typer.Option(
            "--days",
            "--window",
            min=0.01,
            help="Window length in days, ending now.",
            show_default="30",
        ),
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(
            formats=DATE_FORMATS,
            help="Start of the window instead (UTC unless it names its zone); it ends now.",
        ),
    ] = None,
    challenger: Annotated[
        str | None,
        typer.Option(help="The challenger version to compare.", show_default="the latest to score"),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            exists=True,
            dir_okay=False,
            help="Compare the paired decisions of this CSV or Parquet file (the decision log's "
            "column names, with defaulted), instead of the decision log's.",
            show_default="the decision log's window",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole report as JSON instead of the table.")
    ] = False,
) -> None:
    """Compare champion and challenger on the decisions both scored, and on their outcomes.

    Example: loanops compare --days 90
    """
    settings()
    from flows.compare import compare_flow

    start = None if since is None else since if since.tzinfo else since.replace(tzinfo=UTC)
    result = run_with_status(
        "comparing champion and challenger…",
        lambda: compare_flow(
            days=days,
            since=start,
            challenger_version=challenger,
            data_path=str(data) if data else None,
        ),
    )
    if as_json:
        typer.echo(result.report.model_dump_json(indent=2))
        return
    print_compare(result.report)
    console.print(
        f"Report: {result.report_dir / 'report.html'} (MLflow run {result.run_id})",
        highlight=False,
        soft_wrap=True,
    )


def print_compare(report: ComparisonReport) -> None:
    """The compare table: one row per finding, the champion's and the challenger's side by side."""
    from loanops.comparison.render import compare_table

    table = Table(title=f"[bold]compare: {report.model_name}[/]", title_justify="left", box=None)
    for column in ("", "champion", "challenger"):
        table.add_column(column, style="bold" if not column else None)
    for row in compare_table(report):
        table.add_row(*row)
    console.print(table)
