"""Compare: a window of paired decisions → the compare report → MLflow under the challenger.

Scheduled weekly in prefect.yaml, after the performance run, so that outcomes recorded in the
week are in it. The window is the decision log's last `days` (or from `since`); its decisions
scored by both the champion and a challenger (shadow or share) are compared on what each
decided and, once outcomes arrive, on how each ranked and calibrated the same loans. The report
is logged as a `live_comparison` run, whose headline numbers the maker-checker's approval
request shows, and written to the storage folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.common import TRACKING_RETRIES, settings_for
from loanops import registry
from loanops.comparison.paired import NoPairedDecisionsError
from loanops.comparison.record import record_comparison
from loanops.comparison.render import render_html
from loanops.comparison.report import ComparisonReport, compare_pairs
from loanops.comparison.window import read_paired, segment_inputs
from loanops.data import get_dataset, read_frame
from loanops.decisions.database import create_engine_for
from loanops.evaluate import CostMatrix
from loanops.schema import FeatureSchema
from loanops.settings import Settings

DEFAULT_DAYS = 30.0


@dataclass(frozen=True)
class CompareResult:
    """The report, its MLflow run, and the folder holding its JSON and HTML."""

    report: ComparisonReport
    run_id: str
    report_dir: Path


@task(cache_policy=NO_CACHE)
def load_window(
    settings: Settings, schema: FeatureSchema, start: datetime, end: datetime
) -> pd.DataFrame:
    """The window's decisions of the configured model, outcomes joined where recorded."""
    engine = create_engine_for(settings.decision_db_url)
    try:
        return read_paired(
            engine, start, end, model_name=settings.model_name, inputs=segment_inputs(schema)
        )
    finally:
        engine.dispose()


@task(cache_policy=NO_CACHE)
def load_file(path: str, start: datetime, end: datetime) -> pd.DataFrame:
    """The paired decisions of a CSV or Parquet file (the log's column names) in the window.

    For comparing offline: two models' scores of a historical book, exported with the paired
    columns and ``defaulted``.
    """
    frame = read_frame(Path(path), text_columns=["model_version", "challenger_version"])
    if "decided_at" not in frame:
        raise ValueError(f"{path} has no decided_at column: the window cannot be chosen")
    frame["decided_at"] = pd.to_datetime(frame["decided_at"], utc=True)
    inside = (frame["decided_at"] >= start) & (frame["decided_at"] < end)
    return frame[inside].reset_index(drop=True)


@task(cache_policy=NO_CACHE)
def build_report(
    settings: Settings,
    schema: FeatureSchema,
    window: pd.DataFrame,
    start: datetime,
    end: datetime,
    challenger_version: str | None,
) -> ComparisonReport:
    """The compare report of the window; fails saying why when nothing in it is paired."""
    training = settings.training
    try:
        return compare_pairs(
            window,
            model_name=settings.model_name,
            segments=schema.segments,
            costs=CostMatrix(training.cost_false_approve, training.cost_false_decline),
            challenger_version=challenger_version,
            window=(start, end),
            bootstrap_samples=training.bootstrap_samples,
            seed=training.seed,
        )
    except NoPairedDecisionsError as error:
        raise NoPairedDecisionsError(
            f"nothing to compare between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC: "
            f"{error}; attach a challenger (shadow or share) and let it score first"
        ) from None


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def log_report(settings: Settings, report: ComparisonReport) -> str:
    """The report as a `live_comparison` run under the challenger's version."""
    client = registry.connect(settings)
    return record_comparison(
        client, settings, report, recorded_by=flow_run.get_name() or "compare flow"
    )


def write_report(settings: Settings, report: ComparisonReport, run_id: str) -> Path:
    """The report's JSON and HTML in the storage folder, by model, challenger and run."""
    folder = (
        settings.storage_path
        / "comparison"
        / report.model_name
        / f"v{report.challenger_version}"
        / run_id
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")
    (folder / "report.html").write_text(render_html(report), encoding="utf-8")
    return folder


@flow(name="compare")
def compare_flow(
    days: float | None = None,
    since: datetime | None = None,
    end: datetime | None = None,
    challenger_version: str | None = None,
    data_path: str | None = None,
) -> CompareResult:
    """Compare champion and challenger on the paired decisions of a window.

    Args:
        days: length of the window, ending at `end` (default 30); ignored when `since` is given.
        since: start of the window (timezone-aware).
        end: end of the window (default: now).
        challenger_version: which challenger (default: the one that scored most recently).
        data_path: compare the paired decisions of this CSV or Parquet file instead of the
            decision log's.
    """
    settings = settings_for()
    end = end or datetime.now(UTC)
    start = since or end - timedelta(days=days or DEFAULT_DAYS)
    if start >= end:
        raise ValueError(f"the window is empty: it starts {start:%Y-%m-%d %H:%M} after its end")
    schema = get_dataset(settings.training.dataset).schema
    if data_path is None:
        window = load_window(settings, schema, start, end)
    else:
        window = load_file(data_path, start, end)
    report = build_report(settings, schema, window, start, end, challenger_version)
    run_id = log_report(settings, report)
    folder = write_report(settings, report, run_id)
    get_run_logger().info(
        "v%s against v%s on %d paired decisions: agreement %.1f%%, %d swapped in, %d out",
        report.challenger_version,
        ", v".join(report.champion_versions),
        report.paired,
        100 * report.agreement_rate,
        report.swap_set.swap_in,
        report.swap_set.swap_out,
    )
    return CompareResult(report, run_id, folder)
