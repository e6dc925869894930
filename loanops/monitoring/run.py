"""One monitor run: a window of decisions against the reference of the model that made them.

`monitor_window` reads as its steps: one pass over the window's batches (data quality, the
score's PSI and KS, a seeded sample; `streaming.WindowStatistics`), plan the drift tests on the
samples, run Evidently once, then read the per-feature and score drift out of its snapshot into
the typed summary. `run_monitor` is the same on a DataFrame.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import pandas as pd

from loanops.decisions.read import InputKind
from loanops.decisions.stream import ColumnBatch
from loanops.monitoring.drift_plan import DriftPlan, plan_drift_tests
from loanops.monitoring.evidently_mapping import (
    data_definition,
    drift_result,
    summary_without_tests,
)
from loanops.monitoring.quality import check_same_features, data_quality
from loanops.monitoring.reference import PREDICTION_COLUMN, Reference
from loanops.monitoring.results import DriftReport, FeatureDrift, MonitorSummary, PredictionDrift
from loanops.monitoring.streaming import WindowStatistics
from loanops.monitoring.thresholds import MonitorThresholds
from loanops.monitoring.window import frame_batches
from loanops.schema import FeatureSchema

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

DEFAULT_SAMPLE_ROWS: Final = 50_000


class EmptyWindowError(ValueError):
    """The window holds no rows to monitor."""


@dataclass(frozen=True)
class WindowLabels:
    """What the summary records about the window: its model and its time span."""

    model_name: str | None
    model_version: str | None
    window: tuple[datetime, datetime] | None

    def metadata(self) -> dict[str, str]:
        """The labels Evidently's report carries, without the unknown ones."""
        labels = {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "window_start": self.window[0].isoformat() if self.window else None,
            "window_end": self.window[1].isoformat() if self.window else None,
        }
        return {key: value for key, value in labels.items() if value is not None}


def logged_inputs(schema: FeatureSchema) -> dict[str, InputKind]:
    """How `loanops.decisions.read.read_decisions` should read the schema's inputs from the log."""
    return {f.name: "text" if f.is_categorical else "number" for f in schema.features}


def run_monitor(
    current: pd.DataFrame,
    reference: Reference,
    schema: FeatureSchema,
    *,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    seed: int = 0,
    thresholds: MonitorThresholds | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> tuple[MonitorSummary, Snapshot]:
    """`monitor_window` on a window held as one DataFrame (a file, a test, a notebook).

    Args:
        current: The window, e.g. `read_decisions(...)`: the feature columns (extra columns are
            ignored; missing ones are reported), and `probability` when the rows were scored.
        reference, schema, sample_rows, seed, thresholds, model_name, model_version, window:
            As `monitor_window` takes them.

    Returns:
        The typed summary, and the Evidently snapshot (for `write_reports`).

    Raises:
        ValueError: As `monitor_window`.
    """
    return monitor_window(
        frame_batches(current),
        reference,
        schema,
        sample_rows=sample_rows,
        seed=seed,
        thresholds=thresholds,
        model_name=model_name,
        model_version=model_version,
        window=window,
    )


def monitor_window(
    batches: Iterable[ColumnBatch],
    reference: Reference,
    schema: FeatureSchema,
    *,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    seed: int = 0,
    thresholds: MonitorThresholds | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> tuple[MonitorSummary, Snapshot]:
    """Compare a window of decisions, given batch by batch, with its model's reference.

    Data quality and the score's PSI/KS use every row; Evidently's drift tests and summary use a
    seeded sample of `sample_rows` rows of the window and of the reference (see the package
    docstring, `loanops.monitoring`, for why that loses nothing that matters). The batches are
    read once and let go, so memory does not grow with the window (`streaming`); the result
    is the same however the window is cut into batches.

    Args:
        batches: The window in order, e.g. `stream_decisions(...)`, `parquet_batches(...)`:
            the feature columns (extra columns are ignored; missing ones are reported), and
            `probability` when the rows were scored.
        reference: The reference of the model version.
        schema: The model's feature schema; its features must match the reference's.
        sample_rows: Rows of the window (and of the reference) given to Evidently.
        seed: Seed of those samples.
        thresholds: Drift and data-quality thresholds (default: `MonitorThresholds()`).
        model_name: Recorded in the summary; default: the window's model, if it has one.
        model_version: Recorded in the summary; default: the window's model version, if it has
            exactly one.
        window: (start, end) recorded in the summary; default: the window's first and last
            `decided_at`, if it has that column.

    Returns:
        The typed summary, and the Evidently snapshot (for `write_reports`).

    Raises:
        EmptyWindowError: The window holds no rows.
        ValueError: `sample_rows` is not positive, or the schema's features differ from the
            reference's.
    """
    from evidently import __version__ as evidently_version

    started = time.perf_counter()
    thresholds = thresholds or MonitorThresholds()
    if sample_rows < 1:
        raise ValueError(f"sample_rows must be positive, got {sample_rows}")
    check_same_features(schema, reference.schema)

    counted = WindowStatistics(reference, schema, sample_rows=sample_rows, seed=seed)
    counted.add_all(batches)
    if counted.rows == 0:
        raise EmptyWindowError("the window holds no rows to monitor")
    quality = data_quality(counted.quality, reference.statistics, schema, thresholds)
    plan = plan_drift_tests(
        counted, reference, schema, thresholds, sample_rows=sample_rows, seed=seed
    )
    labels = WindowLabels(
        model_name=model_name if model_name is not None else _unique(counted.model_names),
        model_version=(
            model_version if model_version is not None else _unique(counted.model_versions)
        ),
        window=window if window is not None else counted.time_span,
    )
    snapshot = run_evidently(plan, schema, thresholds, labels)
    prediction = (
        prediction_drift(snapshot, plan, counted, reference, thresholds)
        if plan.has_prediction
        else None
    )
    summary = MonitorSummary(
        model_name=labels.model_name,
        model_version=labels.model_version,
        window_start=labels.window[0] if labels.window else None,
        window_end=labels.window[1] if labels.window else None,
        rows=counted.rows,
        sample_rows=len(plan.current_sample),
        reference_rows=reference.rows,
        seed=seed,
        drift=feature_drift(snapshot, plan, schema, thresholds),
        prediction=prediction,
        quality=quality,
        thresholds=thresholds,
        evidently_version=evidently_version,
        seconds=time.perf_counter() - started,
    )
    return summary, snapshot


def run_evidently(
    plan: DriftPlan, schema: FeatureSchema, thresholds: MonitorThresholds, labels: WindowLabels
) -> Snapshot:
    """One Evidently report on the two samples: the drift tests, the score's, and the summary."""
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    tested = list(plan.tested)
    columns = plan.columns
    definition = data_definition(schema, prediction=plan.has_prediction, columns=tested)
    drift_preset = DataDriftPreset(
        columns=tested,
        drift_share=thresholds.drift_share,
        per_column_method=plan.methods,
        per_column_threshold=plan.limits,
    )
    report = Report(
        [
            *([drift_preset] if tested else []),
            *([_score_drift_metric(plan, thresholds)] if plan.has_prediction else []),
            *summary_without_tests(columns),
        ],
        include_tests=True,
        metadata=labels.metadata(),
    )
    return report.run(
        current_data=Dataset.from_pandas(
            plan.current_sample[columns].reset_index(drop=True), data_definition=definition
        ),
        reference_data=Dataset.from_pandas(
            plan.reference_sample[columns].reset_index(drop=True), data_definition=definition
        ),
    )


def feature_drift(
    snapshot: Snapshot, plan: DriftPlan, schema: FeatureSchema, thresholds: MonitorThresholds
) -> DriftReport:
    """Each tested feature's drift as Evidently judged it, and the share of drifted features."""
    from evidently.metrics import ValueDrift

    features: list[FeatureDrift] = []
    for name in plan.tested:
        method, limit = plan.methods[name], plan.limits[name]
        # Evidently finds a metric's result by the metric's parameters, so an equal one reads it.
        metric = ValueDrift(column=name, method=method, threshold=limit)
        score, drifted = drift_result(snapshot, metric, method, limit)
        features.append(
            FeatureDrift(
                feature=name,
                kind="categorical" if schema.feature(name).is_categorical else "numerical",
                method=method,
                score=score,
                threshold=limit,
                drifted=drifted,
            )
        )
    drifted_features = tuple(result.feature for result in features if result.drifted)
    share = len(drifted_features) / len(features) if features else 0.0
    return DriftReport(
        family=plan.family,
        current_rows=len(plan.current_sample),
        reference_rows=len(plan.reference_sample),
        features=tuple(features),
        untested=plan.untested,
        drifted_features=drifted_features,
        share_drifted=share,
        drift_share_threshold=thresholds.drift_share,
        dataset_drift=bool(features) and share >= thresholds.drift_share,
    )


def prediction_drift(
    snapshot: Snapshot,
    plan: DriftPlan,
    counted: WindowStatistics,
    reference: Reference,
    thresholds: MonitorThresholds,
) -> PredictionDrift:
    """The score's drift: PSI and two-sample KS on every row, Evidently's test on the sample."""
    scores = counted.scores
    psi = scores.psi
    threshold = thresholds.for_method(plan.prediction_method)
    score, test_drifted = drift_result(
        snapshot, _score_drift_metric(plan, thresholds), plan.prediction_method, threshold
    )
    return PredictionDrift(
        rows=scores.rows,
        psi=psi,
        psi_threshold=thresholds.prediction_psi,
        ks_drift_statistic=scores.ks_drift_statistic,
        current_mean=scores.mean,
        reference_mean=reference.statistics.prediction.mean,
        method=plan.prediction_method,
        score=score,
        threshold=threshold,
        test_drifted=test_drifted,
        drifted=psi >= thresholds.prediction_psi,
    )


def _score_drift_metric(plan: DriftPlan, thresholds: MonitorThresholds) -> Any:
    from evidently.metrics import ValueDrift

    return ValueDrift(
        column=PREDICTION_COLUMN,
        method=plan.prediction_method,
        threshold=thresholds.for_method(plan.prediction_method),
    )


def _unique(values: set[str]) -> str | None:
    return next(iter(values)) if len(values) == 1 else None
