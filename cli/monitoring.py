"""`loanops monitor`, `performance` and `outcomes load`: the production model after release."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.console import console, summary_table
from cli.errors import clear_errors, fail, settings
from cli.options import setting_default
from cli.progress import run_with_status
from loanops.settings import MonitorSettings

if TYPE_CHECKING:
    from flows.monitor import MonitorResult

outcomes_app = typer.Typer(
    help="Delayed labels: whether decided loans defaulted.", no_args_is_help=True
)


MonitorDataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        exists=True,
        dir_okay=False,
        help="Compare this CSV or Parquet file of applications with the reference, instead of "
        "the decision log's window; it must follow the dataset's schema.",
        show_default="the decision log's window",
    ),
]


def monitor(
    days: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            help="Window length in days, ending now.",
            show_default=setting_default("window_days", group=MonitorSettings),
        ),
    ] = None,
    data: MonitorDataOption = None,
) -> None:
    """Drift of the production model's recent decisions (or a file) against its reference.

    Example: loanops monitor --days 1
    """
    settings()
    from flows.monitor import monitor_flow

    data_path = str(data) if data else None
    result = run_with_status(
        "comparing decisions with the reference…",
        lambda: monitor_flow(days=days, data_path=data_path),
    )
    print_monitor(result)


def print_monitor(result: MonitorResult, *, with_report: bool = True) -> None:
    """The headline table of a monitor run and, unless told not to, where its report is."""
    summary = result.summary
    table = summary_table(f"monitor: {summary.model_name} v{summary.model_version}")
    table.add_row("rows (sampled for tests)", f"{summary.rows:,} ({summary.sample_rows:,})")
    table.add_row(
        "drifted features",
        f"{summary.drift.share_drifted:.0%}: {', '.join(summary.drift.drifted_features) or '-'}",
    )
    if summary.prediction is not None:
        table.add_row("score PSI", f"{summary.prediction.psi:.4f}")
    table.add_row(
        "data quality",
        "flagged" if summary.quality.flagged else "ok",
    )
    table.add_row("triggered", "; ".join(result.reasons) or "nothing")
    console.print(table)
    if with_report:
        console.print(
            f"Report: {result.report_dir / 'report.html'} (MLflow run {result.run_id})",
            highlight=False,
            soft_wrap=True,
        )


def performance(
    days: Annotated[
        float | None,
        typer.Option(min=1, help="How far back decisions are taken, in days.", show_default="365"),
    ] = None,
) -> None:
    """AUC, KS, calibration and default rate of the production model on recorded outcomes.

    Example: loanops performance --days 90
    """
    settings()
    import pandas as pd

    from flows.performance import performance_flow

    result = run_with_status("joining outcomes to decisions…", lambda: performance_flow(days=days))
    frame = result.summary.table()
    table = Table(title="performance by vintage")
    for column in frame.columns:
        table.add_column(str(column))
    for row in frame.itertuples(index=False):
        table.add_row(
            *("-" if pd.isna(v) else f"{v:.4f}" if isinstance(v, float) else str(v) for v in row)
        )
    console.print(table)
    console.print(
        f"Triggered: {'; '.join(result.reasons) or 'nothing'} (MLflow run {result.run_id})"
    )


@outcomes_app.command("load")
def load_outcomes(
    path: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="CSV or Parquet with request_id (or job_id and row), defaulted, [observed_at].",
        ),
    ],
    skip_unknown: Annotated[
        bool, typer.Option(help="Record the known ids and list the unknown ones, not refuse all.")
    ] = False,
) -> None:
    """Record which decided loans defaulted; the whole file or nothing, unless told otherwise.

    Example: loanops outcomes load outcomes.csv
    """
    config = settings()
    from loanops.decisions.database import create_engine_for, migrate
    from loanops.outcome_files import load_outcomes_file
    from loanops.outcomes import record_outcomes

    with clear_errors():
        outcomes = load_outcomes_file(path)
        migrate(config.decision_db_url)
        engine = create_engine_for(config.decision_db_url)
        try:
            report = record_outcomes(engine, outcomes, source="file", skip_unknown=skip_unknown)
        finally:
            engine.dispose()
    if report.refused:
        raise fail(report.summary)
    console.print(report.summary, highlight=False, soft_wrap=True)
