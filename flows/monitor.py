"""Monitor: decision-log window → production version's reference → drift report → log → trigger.

Scheduled daily in prefect.yaml. The window is the last `LOANOPS_MONITOR_WINDOW_DAYS` of the
decision log, or a file for offline use. Reports land in MLflow (one run per monitor run in the
monitoring experiment, tagged with the model version, headline numbers as metrics so they plot
over time) and in the storage folder. A crossed threshold requests retraining
(`flows.triggers`); the new candidate still has to pass the promotion gate.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.entities.model_registry import ModelVersion
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.common import TRACKING_RETRIES, settings_for
from flows.triggers import TriggerOutcome, request_retraining
from loanops import registry
from loanops.data import frame_file_format, read_frame
from loanops.decisions.database import create_engine_for
from loanops.decisions.stream import ColumnBatch, stream_decisions
from loanops.monitoring.reference import Reference, load_reference
from loanops.monitoring.reports import write_reports
from loanops.monitoring.results import MonitorSummary
from loanops.monitoring.run import EmptyWindowError, logged_inputs, monitor_window
from loanops.monitoring.thresholds import monitor_thresholds
from loanops.monitoring.window import frame_batches, parquet_batches
from loanops.schema import FeatureSchema
from loanops.settings import Settings

if TYPE_CHECKING:
    from evidently.core.report import Snapshot


@dataclass(frozen=True)
class MonitorResult:
    """What a monitor run found, where its reports are, and what it triggered."""

    summary: MonitorSummary
    run_id: str
    report_dir: Path
    reasons: list[str]
    trigger: TriggerOutcome | None


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def production_version(settings: Settings) -> ModelVersion:
    """The version holding the production alias: the one whose decisions are monitored."""
    client = registry.connect(settings)
    version = registry.version_by_alias(client, settings.model_name, settings.production_alias)
    if version is None:
        raise ValueError(
            f"no version of {settings.model_name!r} holds {settings.production_alias!r}; "
            "there is nothing to monitor"
        )
    return version


def window_batches(
    settings: Settings,
    version: ModelVersion,
    schema: FeatureSchema,
    start: datetime,
    end: datetime,
    data_path: str | None,
) -> Iterator[ColumnBatch]:
    """The decisions of `version` in [start, end), or the rows of a file, batch by batch.

    Only the schema's inputs and the columns the summary needs are read, from the log's
    columnar segments (or a Parquet file's row groups), so memory stays bounded whatever the
    window holds. A CSV file is read whole.
    """
    if data_path is not None:
        path = Path(data_path)
        if frame_file_format(path) == "parquet" and path.exists():
            yield from parquet_batches(path, schema)
        else:
            yield from frame_batches(read_frame(path))
        return
    engine = create_engine_for(settings.decision_db_url)
    try:
        yield from stream_decisions(
            engine,
            start,
            end,
            model_name=version.name,
            model_version=str(version.version),
            inputs=logged_inputs(schema),
        )
    finally:
        engine.dispose()


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def fetch_reference(settings: Settings, version: ModelVersion) -> Reference:
    """The reference logged with the version's training run, statistics included."""
    client = registry.connect(settings)
    with tempfile.TemporaryDirectory(prefix="loanops-reference-") as tmp:
        return load_reference(registry.reference_folder(client, version, Path(tmp)))


@task(cache_policy=NO_CACHE)
def compare(
    reference: Reference,
    settings: Settings,
    version: ModelVersion,
    start: datetime,
    end: datetime,
    data_path: str | None,
) -> tuple[MonitorSummary, Snapshot]:
    """Drift, prediction drift and data quality of the window against the reference.

    The window is read as it is compared, one batch at a time (`window_batches`).
    """
    try:
        return monitor_window(
            window_batches(settings, version, reference.schema, start, end, data_path),
            reference,
            reference.schema,
            sample_rows=settings.monitor.sample_rows,
            seed=settings.training.seed,
            thresholds=monitor_thresholds(settings),
            model_name=version.name,
            model_version=str(version.version),
            window=(start, end),
        )
    except EmptyWindowError:
        if data_path is not None:
            raise
        raise EmptyWindowError(
            f"the decision log holds no decisions of {version.name} v{version.version} "
            f"between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC"
        ) from None


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def log_reports(
    settings: Settings, version: ModelVersion, summary: MonitorSummary, snapshot: Snapshot
) -> tuple[str, Path]:
    """One MLflow run per monitor run, and a copy of its reports in the storage folder."""
    folder = monitoring_folder(settings, version)
    write_reports(snapshot, folder, summary=summary)
    return record_monitoring_run(settings, version, "monitor", summary.metrics(), folder), folder


def monitoring_folder(settings: Settings, version: ModelVersion) -> Path:
    """A new folder for one run's reports, under the storage folder, by model and version.

    Never one that exists: a monitor and a performance run in the same second would otherwise
    share it, and each would log the other's files as its own artifacts.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    parent = settings.storage_path / "monitoring" / version.name / f"v{version.version}"
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        folder = parent / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"no free report folder for {stamp} under {parent}")


def record_monitoring_run(
    settings: Settings, version: ModelVersion, kind: str, metrics: dict[str, float], folder: Path
) -> str:
    """One finished run in the monitoring experiment: tags, metrics and the folder's files."""
    client = registry.connect(settings)
    experiment_id = registry.ensure_experiment(client, settings.monitor.experiment_name, settings)
    run = client.create_run(
        experiment_id,
        run_name=f"{kind} v{version.version} {folder.name}",
        tags={
            "loanops.kind": kind,
            "loanops.model_name": version.name,
            "loanops.model_version": str(version.version),
        },
    )
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    client.log_artifacts(run.info.run_id, str(folder), kind)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def crossed(summary: MonitorSummary, settings: Settings) -> list[str]:
    """Each threshold the summary crosses, with its numbers; empty when none is."""
    reasons = []
    if summary.drift.share_drifted >= settings.monitor.drift_share_threshold:
        reasons.append(
            f"{summary.drift.share_drifted:.0%} of features drifted "
            f"({', '.join(summary.drift.drifted_features)}) >= "
            f"{settings.monitor.drift_share_threshold:.0%}"
        )
    if (
        summary.prediction is not None
        and summary.prediction.psi >= settings.monitor.prediction_psi_threshold
    ):
        reasons.append(
            f"score PSI {summary.prediction.psi:.3f} >= {settings.monitor.prediction_psi_threshold}"
        )
    return reasons


@flow(name="monitor")
def monitor_flow(
    days: float | None = None,
    end: datetime | None = None,
    data_path: str | None = None,
) -> MonitorResult:
    """Compare recent decisions of the production model with its reference; retrain on drift.

    Args:
        days: length of the window (default: LOANOPS_MONITOR_WINDOW_DAYS).
        end: end of the window (default: now).
        data_path: monitor this CSV or Parquet file instead of the decision log.
    """
    settings = settings_for()
    end = end or datetime.now(UTC)
    start = end - timedelta(days=days or settings.monitor.window_days)
    version = production_version(settings)
    reference = fetch_reference(settings, version)
    summary, snapshot = compare(reference, settings, version, start, end, data_path)
    run_id, folder = log_reports(settings, version, summary, snapshot)
    reasons = crossed(summary, settings)
    logger = get_run_logger()
    if summary.quality.flagged:
        logger.warning("data quality flagged: %s", summary.quality.model_dump_json())
    trigger = None
    if reasons:
        trigger = request_retraining(settings, "monitor", reasons, summary.metrics())
    else:
        logger.info("no drift past the thresholds; nothing triggered")
    return MonitorResult(summary, run_id, folder, reasons, trigger)
