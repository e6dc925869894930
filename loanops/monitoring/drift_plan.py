"""Which drift tests a monitor run asks Evidently for, on which samples (see `loanops.monitoring`).

The window's sample was drawn as its batches passed (`streaming.WindowStatistics`); the
reference's is drawn here. Each feature's test comes from the reference's statistics and the
family (distances or p-values) from the samples' size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from loanops.monitoring.reference import PREDICTION_COLUMN, FeatureStatistics, Reference
from loanops.monitoring.streaming import WindowStatistics
from loanops.monitoring.thresholds import DriftFamily, DriftMethod, MonitorThresholds
from loanops.schema import FeatureSchema


@dataclass(frozen=True, eq=False)
class DriftPlan:
    """Which drift tests a run asks Evidently for, on which samples, judged by which thresholds.

    Attributes:
        family: Distances when both samples have `min_rows_for_distance` rows, else p-values.
        current_sample: The seeded sample of the coerced window (`sample.WindowSample`).
        reference_sample: The seeded sample of the reference.
        tested: Features with values on both sides, in schema order.
        untested: Features missing from the window or without any value in it.
        methods: The test of each tested feature.
        limits: The threshold of each tested feature's test.
        has_prediction: The window holds scores, so the score's drift is tested too.
        prediction_method: The test on the score.
    """

    family: DriftFamily
    current_sample: pd.DataFrame
    reference_sample: pd.DataFrame
    tested: tuple[str, ...]
    untested: tuple[str, ...]
    methods: dict[str, DriftMethod]
    limits: dict[str, float]
    has_prediction: bool
    prediction_method: DriftMethod

    @property
    def columns(self) -> list[str]:
        """The columns given to Evidently: the tested features, then the score if any."""
        return [*self.tested, *([PREDICTION_COLUMN] if self.has_prediction else [])]


def plan_drift_tests(
    counted: WindowStatistics,
    reference: Reference,
    schema: FeatureSchema,
    thresholds: MonitorThresholds,
    *,
    sample_rows: int,
    seed: int,
) -> DriftPlan:
    """Sample both sides and choose each feature's test (see `loanops.monitoring`).

    Args:
        counted: The window, every batch added.
        reference: The reference of the model version.
        schema: The model's feature schema.
        thresholds: The drift thresholds.
        sample_rows: Most rows of the reference given to Evidently (the window's sample was
            drawn as its batches were added).
        seed: The run's seed; the reference's sample uses `seed + 1`.

    Returns:
        The samples, the tested features with their tests and thresholds, and the score's test.
    """
    stats = reference.statistics
    current_sample = counted.sample_frame()
    reference_sample = _sample(reference.frame, sample_rows, seed + 1)
    compared_rows = min(len(current_sample), len(reference_sample))
    family: DriftFamily = (
        "distance" if compared_rows >= thresholds.min_rows_for_distance else "p_value"
    )
    present = counted.present_features
    methods = {name: _drift_method(stats.features[name], family) for name in present}
    for name in present:
        if methods[name] == "chisquare":
            # Chi-square cannot expect a category the reference sample lacks (scipy refuses the
            # totals); such values are new categories, which data quality reports on every row.
            known = reference_sample[name].dropna().unique()
            column = current_sample[name]
            current_sample[name] = column.where(column.isin(known), None)
    # Evidently refuses a drift test on a column with no values on either side.
    tested = tuple(
        name
        for name in present
        if current_sample[name].notna().any() and reference_sample[name].notna().any()
    )
    return DriftPlan(
        family=family,
        current_sample=current_sample,
        reference_sample=reference_sample,
        tested=tested,
        untested=tuple(name for name in schema.feature_names if name not in tested),
        methods={name: methods[name] for name in tested},
        limits={name: thresholds.for_method(methods[name]) for name in tested},
        has_prediction=counted.scores.rows > 0,
        prediction_method="wasserstein" if family == "distance" else "ks",
    )


def _sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """At most `rows` rows of `frame`, uniformly without replacement, in their original order."""
    if len(frame) <= rows:
        return frame.copy()
    keep = np.sort(np.random.default_rng(seed).choice(len(frame), size=rows, replace=False))
    return frame.iloc[keep].copy()


def _drift_method(statistics: FeatureStatistics, family: DriftFamily) -> DriftMethod:
    if family == "distance":
        return statistics.drift_method
    return "chisquare" if statistics.kind == "category" else "ks"
