"""How the monitor talks to Evidently 0.7: the column mapping, the report's parts, its results.

Evidently is imported inside the functions, so importing `loanops.monitoring` stays cheap for
code that only reads references or summaries. Evidently 0.7.23's `Report.run` sends no telemetry
(only its UI service and collector do, and both honour ``DO_NOT_TRACK``); nothing here sets
environment variables.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from loanops.monitoring.reference import PREDICTION_COLUMN
from loanops.monitoring.thresholds import P_VALUE_METHODS, DriftMethod
from loanops.schema import FeatureSchema

if TYPE_CHECKING:
    from evidently import DataDefinition
    from evidently.core.report import Snapshot


def data_definition(
    schema: FeatureSchema,
    *,
    prediction: bool = True,
    target: str | None = None,
    columns: Sequence[str] | None = None,
) -> DataDefinition:
    """Evidently's column mapping, derived from the feature schema.

    Args:
        schema: The feature schema; int and float features are numerical, the rest categorical.
        prediction: Map `PREDICTION_COLUMN` as a numerical column (and, with a target, as the
            predicted probability of a binary classification).
        target: Name of a 0/1 label column (1 = default), for classification reports.
        columns: Keep only these features (e.g. the ones present in a window).

    Returns:
        The `evidently.DataDefinition`.
    """
    from evidently import BinaryClassification, DataDefinition

    kept = set(schema.feature_names if columns is None else columns)
    numerical = [name for name in schema.numeric_features if name in kept]
    categorical = [name for name in schema.categorical_features if name in kept]
    if prediction:
        numerical.append(PREDICTION_COLUMN)
    classification = None
    if target is not None:
        categorical.append(target)
        classification = [
            BinaryClassification(
                target=target,
                prediction_probas=PREDICTION_COLUMN if prediction else None,
                pos_label=1,
            )
        ]
    return DataDefinition(
        numerical_columns=numerical,
        categorical_columns=categorical,
        classification=classification,
    )


def summary_without_tests(columns: Sequence[str]) -> list[Any]:
    """What Evidently's DataSummaryPreset shows, with none of its tests.

    Its default tests compare the row count, minimum, maximum and quantiles of the sample with
    the reference's within 10 %, which sampling alone fails. `include_tests=False` is the obvious
    switch, but in 0.7.23 it breaks rendering (the widgets look up metrics under fingerprints
    that do not exist), and the preset cannot pass test lists to the row count of its inner
    `TextEvals`. So the preset's two parts, `DatasetStats` and one `ValueStats` per column, are
    built here with every test list given explicitly as empty.
    """
    from evidently.presets import DatasetStats, ValueStats

    dataset_tests = (
        "row_count_tests",
        "column_count_tests",
        "duplicated_row_count_tests",
        "duplicated_column_count_tests",
        "almost_duplicated_column_count_tests",
        "almost_constant_column_count_tests",
        "empty_row_count_tests",
        "empty_column_count_tests",
        "constant_columns_count_tests",
        "dataset_missing_value_count_tests",
        "dataset_missing_value_share_tests",
    )
    column_tests = (
        "row_count_tests",
        "missing_values_count_tests",
        "min_tests",
        "max_tests",
        "mean_tests",
        "std_tests",
        "q25_tests",
        "q50_tests",
        "q75_tests",
        "unique_values_count_tests",
    )
    return [
        DatasetStats(**{name: [] for name in dataset_tests}),
        *(ValueStats(column, **{name: [] for name in column_tests}) for column in columns),
    ]


def drift_result(
    snapshot: Snapshot, metric: Any, method: DriftMethod, threshold: float
) -> tuple[float, bool]:
    """A ValueDrift's score from the snapshot, and Evidently's verdict on it."""
    result = snapshot.context.get_metric_result(metric)
    score = float(result.value)
    if result.tests:
        # TestStatus is a str enum; FAIL is how a drift test reports drift.
        return score, any(test.status == "FAIL" for test in result.tests)
    if method in P_VALUE_METHODS:
        return score, score < threshold
    return score, score >= threshold
