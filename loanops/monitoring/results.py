"""The typed results of a monitor run: per-feature drift, score drift, data quality, summary."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from loanops.monitoring.thresholds import DriftFamily, DriftMethod, MonitorThresholds
from loanops.schema import FeatureKind


class FeatureDrift(BaseModel):
    """The drift test of one feature, on the sampled window."""

    model_config = ConfigDict(frozen=True)

    feature: str
    kind: Literal["numerical", "categorical"]
    method: DriftMethod
    score: float = Field(description="The distance, or the p-value for ks and chisquare.")
    threshold: float
    drifted: bool


class DriftReport(BaseModel):
    """Per-feature drift and the share of drifted features."""

    model_config = ConfigDict(frozen=True)

    family: DriftFamily = Field(
        description="distance on windows of at least min_rows_for_distance rows, else p_value."
    )
    current_rows: int = Field(description="Rows of the window compared (after sampling).")
    reference_rows: int = Field(description="Rows of the reference compared (after sampling).")
    features: tuple[FeatureDrift, ...]
    untested: tuple[str, ...] = Field(
        description="Features missing from the window or without any value in it."
    )
    drifted_features: tuple[str, ...]
    share_drifted: float = Field(description="Drifted features over tested features.")
    drift_share_threshold: float
    dataset_drift: bool

    def feature(self, name: str) -> FeatureDrift:
        for result in self.features:
            if result.feature == name:
                return result
        raise KeyError(name)


class PredictionDrift(BaseModel):
    """Drift of the score distribution: PSI and KS on every row, Evidently's test on the sample."""

    model_config = ConfigDict(frozen=True)

    rows: int
    psi: float = Field(description="PSI over the reference's score deciles.")
    psi_threshold: float
    ks_drift_statistic: float = Field(
        # Summaries written before the rename call it ks_statistic.
        validation_alias=AliasChoices("ks_drift_statistic", "ks_statistic"),
        description="Two-sample KS: the largest gap between the window's and the reference's "
        "score CDFs.",
    )
    current_mean: float
    reference_mean: float
    method: DriftMethod = Field(description="Evidently's ValueDrift test on the sample.")
    score: float = Field(description="Its distance, or its p-value for ks.")
    threshold: float
    test_drifted: bool = Field(description="Evidently's ValueDrift verdict on the sample.")
    drifted: bool = Field(description="psi >= psi_threshold: the flag that triggers.")


class FeatureQuality(BaseModel):
    """Data quality of one feature over every row of the window."""

    model_config = ConfigDict(frozen=True)

    feature: str
    kind: FeatureKind
    null_rate: float
    reference_null_rate: float
    null_rate_change: float
    invalid: int = Field(description="Values that are not of the feature's type, e.g. '13.5%'.")
    out_of_range: int = Field(description="Numeric values outside the schema's min/max.")
    unknown_categories: dict[str, int] = Field(
        description="Values not in the schema's categories, with their counts (top 20)."
    )
    unseen_categories: dict[str, int] = Field(
        description="Schema categories absent from the reference, with their counts (top 20)."
    )
    missingness_spike: bool


class DataQuality(BaseModel):
    """Null rates, out-of-range values and new categories against the reference, on all rows."""

    model_config = ConfigDict(frozen=True)

    rows: int
    features: tuple[FeatureQuality, ...]
    missing_columns: tuple[str, ...]
    missingness_spikes: tuple[str, ...]
    out_of_range: tuple[str, ...]
    invalid_values: tuple[str, ...]
    new_categories: tuple[str, ...]

    @property
    def flagged(self) -> bool:
        return bool(
            self.missing_columns
            or self.missingness_spikes
            or self.out_of_range
            or self.invalid_values
            or self.new_categories
        )

    def feature(self, name: str) -> FeatureQuality:
        for result in self.features:
            if result.feature == name:
                return result
        raise KeyError(name)


class MonitorSummary(BaseModel):
    """The typed result of one monitor run; its `metrics()` are the headline numbers."""

    model_config = ConfigDict(frozen=True)

    model_name: str | None
    model_version: str | None
    window_start: datetime | None
    window_end: datetime | None
    rows: int = Field(description="Rows in the window.")
    sample_rows: int = Field(description="Rows of the window given to Evidently.")
    reference_rows: int = Field(description="Rows in the reference sample.")
    seed: int
    drift: DriftReport
    prediction: PredictionDrift | None = Field(
        description="None when the window has no probability column (a file of applications)."
    )
    quality: DataQuality
    thresholds: MonitorThresholds
    evidently_version: str
    seconds: float

    @property
    def prediction_drift(self) -> bool:
        return self.prediction is not None and self.prediction.drifted

    @property
    def drifted(self) -> bool:
        """Dataset drift or prediction drift: what a retraining trigger looks at."""
        return self.drift.dataset_drift or self.prediction_drift

    def metrics(self) -> dict[str, float]:
        """Headline numbers for MLflow, so that they plot over time: flat names, float values."""
        metrics: dict[str, float] = {
            "rows": float(self.rows),
            "sample_rows": float(self.sample_rows),
            "share_drifted_features": self.drift.share_drifted,
            "drifted_features": float(len(self.drift.drifted_features)),
            "dataset_drift": float(self.drift.dataset_drift),
            "missingness_spikes": float(len(self.quality.missingness_spikes)),
            "max_null_rate_increase": max(
                (max(f.null_rate_change, 0.0) for f in self.quality.features), default=0.0
            ),
            "out_of_range_values": float(sum(f.out_of_range for f in self.quality.features)),
            "invalid_values": float(sum(f.invalid for f in self.quality.features)),
            "unknown_category_values": float(
                sum(sum(f.unknown_categories.values()) for f in self.quality.features)
            ),
            "missing_columns": float(len(self.quality.missing_columns)),
            "data_quality_flagged": float(self.quality.flagged),
        }
        if self.prediction is not None:
            metrics |= {
                "prediction_psi": self.prediction.psi,
                "prediction_ks": self.prediction.ks_drift_statistic,
                "prediction_drift_score": self.prediction.score,
                "prediction_mean": self.prediction.current_mean,
                "prediction_drift": float(self.prediction.drifted),
            }
        for result in self.drift.features:
            metrics[f"drift_score.{result.feature}"] = result.score
        for quality in self.quality.features:
            metrics[f"null_rate.{quality.feature}"] = quality.null_rate
        return metrics
