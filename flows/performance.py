"""Performance: decisions joined to their delayed outcomes → metrics by vintage → log → trigger.

Scheduled weekly in prefect.yaml. Defaults are known months after a loan is issued, so this is
the monitor that catches what feature drift cannot: a recession that moves the default rate
with no feature moving (calibration gap), and a changed relation between features and risk
(AUC drop against the model's own test AUC).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.common import TRACKING_RETRIES, settings_for
from flows.monitor import monitoring_folder, production_version, record_monitoring_run
from flows.triggers import TriggerOutcome, request_retraining
from loanops import registry
from loanops.decisions.database import create_engine_for
from loanops.outcomes import read_labelled
from loanops.performance import PerformanceSummary, classification_report, performance_summary
from loanops.settings import Settings

DEFAULT_DAYS = 365.0


@dataclass(frozen=True)
class PerformanceResult:
    """The summary, its MLflow run, and what it triggered."""

    summary: PerformanceSummary
    run_id: str
    reasons: list[str]
    trigger: TriggerOutcome | None


@task(cache_policy=NO_CACHE)
def load_labelled(
    settings: Settings, version: ModelVersion, start: datetime, end: datetime
) -> pd.DataFrame:
    """The version's decisions in [start, end) that have an outcome."""
    engine = create_engine_for(settings.decision_db_url)
    try:
        labelled = read_labelled(
            engine,
            start,
            end,
            model_name=version.name,
            model_version=str(version.version),
            # The vintage is the only input the performance report reads.
            inputs={"issue_d": "text"},
            reasons=False,
        )
    finally:
        engine.dispose()
    return labelled[labelled["defaulted"].notna()]


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def reference_auc(settings: Settings, version: ModelVersion) -> float | None:
    """The version's AUC on its frozen test split: what a labelled AUC is compared with."""
    if version.run_id is None:
        return None
    metrics = registry.connect(settings).get_run(version.run_id).data.metrics
    return metrics.get("test_roc_auc")


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def log_performance(
    settings: Settings,
    version: ModelVersion,
    summary: PerformanceSummary,
    labelled: pd.DataFrame,
) -> str:
    """One MLflow run with the overall metrics, the vintage table and Evidently's report."""
    folder = monitoring_folder(settings, version)
    summary.table().to_csv(folder / "performance_by_vintage.csv")  # the index names the slice
    threshold = float(labelled["threshold"].iloc[0]) if len(labelled) else None
    report = classification_report(labelled, threshold=threshold, seed=settings.training.seed)
    if report is not None:
        report.save_html(str(folder / "classification.html"))
    return record_monitoring_run(settings, version, "performance", summary.as_metrics(), folder)


def crossed(
    summary: PerformanceSummary, reference_auc: float | None, settings: Settings
) -> list[str]:
    """Each performance threshold crossed, with its numbers."""
    overall = summary.overall
    reasons = []
    if (
        overall.calibration_z is not None
        and abs(overall.calibration_z) >= settings.monitor.calibration_z_threshold
    ):
        reasons.append(
            f"mean PD {overall.mean_pd:.4f} vs default rate {overall.default_rate:.4f} over "
            f"{overall.labelled} loans: {overall.calibration_z:+.1f} standard errors, beyond "
            f"±{settings.monitor.calibration_z_threshold:g}"
        )
    if overall.auc is not None and reference_auc is not None:
        drop = reference_auc - overall.auc
        if drop >= settings.monitor.auc_drop_threshold:
            reasons.append(
                f"AUC {overall.auc:.4f} on outcomes vs {reference_auc:.4f} on the test split: "
                f"down {drop:.4f} >= {settings.monitor.auc_drop_threshold}"
            )
    return reasons


@flow(name="performance")
def performance_flow(days: float | None = None, end: datetime | None = None) -> PerformanceResult:
    """Score the production model against the outcomes recorded so far; retrain if it decayed.

    Args:
        days: how far back decisions are taken (default: a year, since labels arrive late).
        end: end of the window (default: now).
    """
    settings = settings_for()
    end = end or datetime.now(UTC)
    start = end - timedelta(days=days or DEFAULT_DAYS)
    version = production_version(settings)
    labelled = load_labelled(settings, version, start, end)
    summary = performance_summary(labelled)
    run_id = log_performance(settings, version, summary, labelled)
    reasons = crossed(summary, reference_auc(settings, version), settings)
    trigger = None
    if reasons:
        trigger = request_retraining(settings, "performance", reasons, summary.as_metrics())
    else:
        get_run_logger().info(
            "performance within thresholds on %d labelled decisions; nothing triggered",
            summary.overall.labelled,
        )
    return PerformanceResult(summary, run_id, reasons, trigger)
