"""Drift monitoring: a window of logged decisions against the reference sample of its model.

Where it sits: `flows/train.py` builds a `Reference` for each new version (`build_reference`,
`save_reference`) and logs the folder as an artifact of that version; the `monitor` flow loads it
(`load_reference`), reads a window of the decision log
(`loanops.decisions.read.read_decisions`) or an offline file, calls `run_monitor`, saves the
reports (`write_reports`) and logs `MonitorSummary.metrics()`. This module runs no flow and logs
nothing itself.

What is computed where:

- **On every row of the window**, in vectorised pandas/numpy, because it is cheap and exact:
  null rates, values outside the schema's range, values that are not of the feature's type,
  categories unknown to the schema or never seen in the reference, and the drift of the score
  (`probability`): PSI over the reference's deciles, and the Kolmogorov-Smirnov statistic.
- **On a seeded random sample** (`sample_rows`, 50k by default) of the window and of the
  reference, with Evidently 0.7: the per-feature drift tests (`DataDriftPreset`, whose
  `DriftedColumnsCount` gives the share of drifted features), a `ValueDrift` on `probability`,
  and a `DataSummaryPreset` for the HTML. The distances used on large windows estimate a
  population quantity, so a 50k-row sample gives the same answer as a million rows to within a
  few thousandths, well inside the 0.1 threshold; a p-value on a million rows, by contrast,
  calls any shift significant, however small.
- **Once per model version**, in `reference_statistics`: null rates, ranges, category shares,
  the drift test chosen for each feature and the score deciles used by PSI. They are stored as
  JSON next to the Parquet sample and loaded, not recomputed, on each run.

Choice of drift test. Evidently picks a test from the *reference* size: KS / chi-square (p-values)
up to 1,000 reference rows, normed Wasserstein / Jensen-Shannon distances (threshold 0.1) above,
and a categorical test for numeric columns with at most 5 distinct values. A 100k-row reference
always gets distances, but a distance estimated from a small *current* window is biased upward:
Jensen-Shannon between two samples of the same 51-state distribution averages 0.08 at 1,000 rows
(0.20 at 200, 0.04 at 5,000), so a quiet night would raise a false alarm. Here the test is fixed
per feature from the reference (distance family: Wasserstein for numeric features with more
than 5 distinct values, Jensen-Shannon otherwise), and a window smaller than
`MonitorThresholds.min_rows_for_distance` (5,000) switches to the p-value family instead
(KS for numeric features, chi-square for categorical ones), whose false-alarm rate is the
significance level at any size. The choice is recorded in the summary.

Evidently 0.7.23's `Report.run` sends no telemetry (only its UI service and collector do, and
both honour ``DO_NOT_TRACK``); nothing here sets environment variables.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from loanops.decisions.read import InputKind
from loanops.schema import FeatureKind, FeatureSchema

if TYPE_CHECKING:
    from evidently import DataDefinition
    from evidently.core.report import Snapshot

__all__ = [
    "DEFAULT_REFERENCE_ROWS",
    "DEFAULT_SAMPLE_ROWS",
    "LABEL_COLUMN",
    "PREDICTION_COLUMN",
    "DataQuality",
    "DriftMethod",
    "DriftReport",
    "FeatureDrift",
    "FeatureQuality",
    "FeatureStatistics",
    "MonitorSummary",
    "MonitorThresholds",
    "PredictionDrift",
    "PredictionStatistics",
    "Reference",
    "ReferenceStatistics",
    "build_reference",
    "check_data_quality",
    "data_definition",
    "load_reference",
    "logged_inputs",
    "population_stability_index",
    "reference_statistics",
    "run_monitor",
    "save_reference",
    "write_reports",
]

PREDICTION_COLUMN: Final = "probability"
"""The model's default probability, as `read_decisions` returns it."""
LABEL_COLUMN: Final = "label"
"""Reference column holding the label where known: 1 defaulted, 0 repaid, <NA> unknown."""

DEFAULT_REFERENCE_ROWS: Final = 100_000
DEFAULT_SAMPLE_ROWS: Final = 50_000

REFERENCE_SAMPLE_FILE: Final = "reference.parquet"
REFERENCE_STATISTICS_FILE: Final = "statistics.json"
REFERENCE_SCHEMA_FILE: Final = "schema.json"
REPORT_HTML_FILE: Final = "report.html"
REPORT_JSON_FILE: Final = "report.json"
SUMMARY_FILE: Final = "summary.json"

DriftMethod = Literal["wasserstein", "jensenshannon", "ks", "chisquare"]
"""Evidently stat-test names: two distances (drift at >= threshold), two p-values (< threshold)."""
_P_VALUE_METHODS: Final = frozenset({"ks", "chisquare"})

# Numeric features with at most this many distinct reference values are compared as categories,
# as Evidently does: a Wasserstein distance normed by the std of a 0/1/2 count jumps about.
_FEW_VALUES: Final = 5
_PSI_BINS: Final = 10
# Floor on bin shares so an empty bin gives a large but finite PSI term.
_PSI_FLOOR: Final = 1e-4
# Most categories listed per feature in the data-quality findings.
_LISTED_CATEGORIES: Final = 20


# --- thresholds ------------------------------------------------------------------------------


class MonitorThresholds(BaseModel):
    """When a monitor run calls something drifted or flags it.

    The defaults are Evidently's distance threshold and the usual PSI reading (below 0.1 stable,
    0.1-0.25 moderate shift, above 0.25 major). On the synthetic generator a covariate shift
    (`z_shift=-0.5`) drifts 7 of 20 features (share 0.35) and moves the score's PSI to 0.15;
    no drift and the macro shock give a share of 0 and a PSI of about 0.001.
    """

    model_config = ConfigDict(frozen=True)

    distance: float = Field(
        default=0.1, gt=0, description="Drift when a Wasserstein (normed) or JS distance >= this."
    )
    p_value: float = Field(
        default=0.05, gt=0, lt=1, description="Drift when a KS or chi-square p-value < this."
    )
    min_rows_for_distance: int = Field(
        default=5_000,
        ge=1,
        description="Rows (in both compared samples) below which p-value tests replace distances.",
    )
    drift_share: float = Field(
        default=0.25, gt=0, le=1, description="Dataset drift when this share of features drifts."
    )
    prediction_psi: float = Field(
        default=0.1, gt=0, description="Prediction drift when the PSI of the score >= this."
    )
    null_rate_increase: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="Missingness spike when a null rate exceeds the reference's by more than this.",
    )
    out_of_range_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Flag a feature whose out-of-range share is above this.",
    )
    unseen_category_share: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Flag a feature whose rows in categories absent from the reference exceed "
        "this share. Categories unknown to the schema are flagged at any count.",
    )


# --- the reference ---------------------------------------------------------------------------


class FeatureStatistics(BaseModel):
    """One feature of the reference sample, as the monitor compares against it."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: FeatureKind
    rows: int = Field(description="Non-null values.")
    null_rate: float
    distinct: int = Field(description="Distinct non-null values.")
    drift_method: Literal["wasserstein", "jensenshannon"] = Field(
        description="Distance test used on large windows; fixed here once for the version."
    )
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    std: float | None = None
    category_shares: dict[str, float] | None = Field(
        default=None, description="Share of each category among non-null values (categorical)."
    )


class PredictionStatistics(BaseModel):
    """The reference's score distribution: its deciles are the PSI bins."""

    model_config = ConfigDict(frozen=True)

    rows: int
    mean: float
    std: float
    bin_edges: tuple[float, ...] = Field(description="Inner bin edges (the deciles, deduplicated).")
    bin_shares: tuple[float, ...] = Field(description="Share of reference rows in each bin.")


class ReferenceStatistics(BaseModel):
    """What a monitor run needs from the reference besides the sample itself; JSON-serialisable."""

    model_config = ConfigDict(frozen=True)

    schema_name: str
    schema_sha256: str
    rows: int = Field(description="Rows in the reference sample.")
    source_rows: int = Field(description="Rows the sample was drawn from.")
    sample_sha256: str = Field(description="Content hash of the sample these statistics describe.")
    features: dict[str, FeatureStatistics]
    prediction: PredictionStatistics
    labelled_rows: int
    default_rate: float | None = None


@dataclass(frozen=True, eq=False)
class Reference:
    """The reference sample of a model version and its precomputed statistics.

    Attributes:
        frame: The schema's features (its dtypes, in its order), `PREDICTION_COLUMN` and
            `LABEL_COLUMN` (nullable Int8), one row per reference loan.
        schema: The feature schema the model was trained on.
        statistics: `reference_statistics(frame, schema)`, computed once.
    """

    frame: pd.DataFrame
    schema: FeatureSchema
    statistics: ReferenceStatistics

    @property
    def rows(self) -> int:
        return len(self.frame)

    @property
    def labels(self) -> pd.Series:
        """The labels (1 default, 0 repaid, <NA> unknown)."""
        return self.frame[LABEL_COLUMN]


def build_reference(
    frame: pd.DataFrame,
    probabilities: npt.ArrayLike,
    labels: npt.ArrayLike | None,
    schema: FeatureSchema,
    *,
    max_rows: int = DEFAULT_REFERENCE_ROWS,
    seed: int = 0,
) -> Reference:
    """The reference of a model version: its validation or test rows, scores and labels.

    Args:
        frame: Rows holding at least the schema's features (other columns are ignored).
        probabilities: The model's default probability for each row, in [0, 1].
        labels: 1 for default and 0 for repaid per row (e.g. `schema.labels(frame)`), NaN where
            unknown; None when no label is known.
        schema: The model's feature schema.
        max_rows: Most rows kept; larger inputs are sampled uniformly without replacement.
        seed: Seed of that sample.

    Returns:
        The sample (index reset) and its statistics.

    Raises:
        KeyError: A feature column is missing.
        ValueError: Lengths differ, a probability is outside [0, 1] or not finite, a label is
            not 0, 1 or missing, or `frame` is empty.
    """
    rows = len(frame)
    if rows == 0:
        raise ValueError("a reference needs at least one row")
    if max_rows < 1:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    scores = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if len(scores) != rows:
        raise ValueError(f"{len(scores)} probabilities for {rows} rows")
    if not (np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()):
        raise ValueError("probabilities must be finite and lie in [0, 1]")
    if labels is None:
        label_values = pd.array([pd.NA] * rows, dtype="Int8")
    else:
        raw = pd.Series(np.asarray(labels, dtype=np.float64).reshape(-1))
        if len(raw) != rows:
            raise ValueError(f"{len(raw)} labels for {rows} rows")
        if not raw.dropna().isin([0.0, 1.0]).all():
            raise ValueError("labels must be 0, 1 or missing")
        label_values = raw.astype("Int8").array
    sample = schema.to_frame(frame).reset_index(drop=True)
    sample[PREDICTION_COLUMN] = scores
    sample[LABEL_COLUMN] = label_values
    if rows > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(rows, size=max_rows, replace=False))
        sample = sample.iloc[keep].reset_index(drop=True)
    return Reference(
        frame=sample,
        schema=schema,
        statistics=reference_statistics(sample, schema, source_rows=rows),
    )


def reference_statistics(
    frame: pd.DataFrame, schema: FeatureSchema, *, source_rows: int | None = None
) -> ReferenceStatistics:
    """The statistics a monitor run compares against, computed once per model version.

    Args:
        frame: A reference sample, as `Reference.frame` holds it.
        schema: The model's feature schema.
        source_rows: Rows the sample was drawn from (default: its own length).

    Returns:
        Null rates, ranges, moments and category shares per feature, the drift test chosen for
        each, the score's deciles and bin shares, and the default rate where labels are known.

    Raises:
        ValueError: The frame has no `PREDICTION_COLUMN` values.
    """
    features: dict[str, FeatureStatistics] = {}
    for feature in schema.features:
        column = frame[feature.name]
        present = column.dropna()
        distinct = int(present.nunique())
        common: dict[str, Any] = {
            "name": feature.name,
            "kind": feature.kind,
            "rows": len(present),
            "null_rate": _share(len(column) - len(present), len(column)),
            "distinct": distinct,
        }
        if feature.is_categorical:
            counts = present.value_counts()
            features[feature.name] = FeatureStatistics(
                **common,
                drift_method="jensenshannon",
                category_shares={
                    str(value): float(count) / len(present) for value, count in counts.items()
                },
            )
        else:
            values = present.to_numpy(dtype=np.float64)
            features[feature.name] = FeatureStatistics(
                **common,
                drift_method="wasserstein" if distinct > _FEW_VALUES else "jensenshannon",
                minimum=float(values.min()) if len(values) else None,
                maximum=float(values.max()) if len(values) else None,
                mean=float(values.mean()) if len(values) else None,
                std=float(values.std()) if len(values) else None,
            )
    scores = frame[PREDICTION_COLUMN].dropna().to_numpy(dtype=np.float64)
    if len(scores) == 0:
        raise ValueError(f"the reference has no {PREDICTION_COLUMN!r} values")
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, _PSI_BINS + 1)[1:-1]))
    shares = np.bincount(np.searchsorted(edges, scores, side="right"), minlength=len(edges) + 1)
    labels = frame[LABEL_COLUMN].dropna() if LABEL_COLUMN in frame else pd.Series(dtype="Int8")
    return ReferenceStatistics(
        schema_name=schema.name,
        schema_sha256=_schema_sha256(schema),
        rows=len(frame),
        source_rows=len(frame) if source_rows is None else source_rows,
        sample_sha256=_frame_sha256(frame),
        features=features,
        prediction=PredictionStatistics(
            rows=len(scores),
            mean=float(scores.mean()),
            std=float(scores.std()),
            bin_edges=tuple(float(edge) for edge in edges),
            bin_shares=tuple(float(share) for share in shares / len(scores)),
        ),
        labelled_rows=len(labels),
        default_rate=float(labels.astype(np.float64).mean()) if len(labels) else None,
    )


def save_reference(reference: Reference, folder: str | Path) -> Path:
    """Write a reference as a folder the flow logs as one MLflow artifact directory.

    The folder gets `reference.parquet` (the sample), `statistics.json` and `schema.json`.

    Args:
        reference: The reference to write.
        folder: Folder to write into; created if missing, files in it replaced.

    Returns:
        The folder.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    reference.frame.to_parquet(root / REFERENCE_SAMPLE_FILE, index=False)
    (root / REFERENCE_STATISTICS_FILE).write_text(
        reference.statistics.model_dump_json(indent=2) + "\n"
    )
    (root / REFERENCE_SCHEMA_FILE).write_text(reference.schema.model_dump_json(indent=2) + "\n")
    return root


def load_reference(folder: str | Path, *, verify: bool = True) -> Reference:
    """Read a reference written by `save_reference`, with its cached statistics.

    Args:
        folder: The folder (e.g. the downloaded MLflow artifact directory).
        verify: Check that the statistics describe this sample and this schema (hashing the
            sample takes about 0.1 s per 100k rows).

    Returns:
        The reference; its statistics are read, not recomputed.

    Raises:
        FileNotFoundError: A file is missing.
        ValueError: `verify` is set and the statistics belong to another sample or schema.
    """
    root = Path(folder)
    schema = FeatureSchema.model_validate_json((root / REFERENCE_SCHEMA_FILE).read_text())
    statistics = ReferenceStatistics.model_validate_json(
        (root / REFERENCE_STATISTICS_FILE).read_text()
    )
    frame = pd.read_parquet(root / REFERENCE_SAMPLE_FILE)
    if verify:
        if statistics.schema_sha256 != _schema_sha256(schema):
            raise ValueError(f"{root}: the statistics were computed for another schema")
        if statistics.sample_sha256 != _frame_sha256(frame):
            raise ValueError(f"{root}: the statistics do not describe this reference sample")
    return Reference(frame=frame, schema=schema, statistics=statistics)


# --- Evidently's column mapping ---------------------------------------------------------------


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


# --- results ---------------------------------------------------------------------------------


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

    family: Literal["distance", "p_value"] = Field(
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
    ks_statistic: float = Field(description="Largest gap between the two score CDFs.")
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
                "prediction_ks": self.prediction.ks_statistic,
                "prediction_drift_score": self.prediction.score,
                "prediction_mean": self.prediction.current_mean,
                "prediction_drift": float(self.prediction.drifted),
            }
        for result in self.drift.features:
            metrics[f"drift_score.{result.feature}"] = result.score
        for quality in self.quality.features:
            metrics[f"null_rate.{quality.feature}"] = quality.null_rate
        return metrics


# --- the run ---------------------------------------------------------------------------------


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
    """Compare a window of decisions with the reference of the model that made them.

    Data quality and the score's PSI/KS use every row; Evidently's drift tests and summary use a
    seeded sample of `sample_rows` rows of the window and of the reference (see the module
    docstring for why that loses nothing that matters).

    Args:
        current: The window, e.g. `read_decisions(...)`: the feature columns (extra columns are
            ignored; missing ones are reported), and `probability` when the rows were scored.
        reference: The reference of the model version.
        schema: The model's feature schema; its features must match the reference's.
        sample_rows: Rows of the window (and of the reference) given to Evidently.
        seed: Seed of those samples.
        thresholds: Drift and data-quality thresholds (default: `MonitorThresholds()`).
        model_name: Recorded in the summary; default: the window's `model_name` if it has one.
        model_version: Recorded in the summary; default: the window's `model_version` if it has
            exactly one.
        window: (start, end) recorded in the summary; default: the window's first and last
            `decided_at`, if it has that column.

    Returns:
        The typed summary, and the Evidently snapshot (for `write_reports`).

    Raises:
        ValueError: The window is empty, `sample_rows` is not positive, or the schema's
            features differ from the reference's.
    """
    from evidently import Dataset, Report
    from evidently import __version__ as evidently_version
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    started = time.perf_counter()
    thresholds = thresholds or MonitorThresholds()
    if len(current) == 0:
        raise ValueError("the window holds no rows to monitor")
    if sample_rows < 1:
        raise ValueError(f"sample_rows must be positive, got {sample_rows}")
    _check_same_features(schema, reference.schema)
    stats = reference.statistics

    prepared, invalid, missing = _coerce(current, schema)
    quality = _data_quality(prepared, invalid, missing, stats, schema, thresholds)
    has_prediction = PREDICTION_COLUMN in prepared and prepared[PREDICTION_COLUMN].notna().any()

    current_sample = _sample(prepared, sample_rows, seed)
    reference_sample = _sample(reference.frame, sample_rows, seed + 1)
    compared_rows = min(len(current_sample), len(reference_sample))
    family: Literal["distance", "p_value"] = (
        "distance" if compared_rows >= thresholds.min_rows_for_distance else "p_value"
    )
    present = [name for name in schema.feature_names if name not in missing]
    methods = {name: _drift_method(stats.features[name], family) for name in present}
    for name in present:
        if methods[name] == "chisquare":
            # Chi-square cannot expect a category the reference sample lacks (scipy refuses the
            # totals); such values are new categories, which data quality reports on every row.
            known = reference_sample[name].dropna().unique()
            column = current_sample[name]
            current_sample[name] = column.where(column.isin(known), None)
    # Evidently refuses a drift test on a column with no values on either side.
    tested = [
        name
        for name in present
        if current_sample[name].notna().any() and reference_sample[name].notna().any()
    ]
    untested = tuple(name for name in schema.feature_names if name not in tested)
    limits = {name: _threshold(methods[name], thresholds) for name in tested}

    if window is None and "decided_at" in current and current["decided_at"].notna().any():
        decided = pd.to_datetime(current["decided_at"], utc=True)
        window = (decided.min().to_pydatetime(), decided.max().to_pydatetime())
    model_name = model_name if model_name is not None else _unique(current, "model_name")
    model_version = (
        model_version if model_version is not None else _unique(current, "model_version")
    )
    metadata = {
        "model_name": model_name,
        "model_version": model_version,
        "window_start": window[0].isoformat() if window else None,
        "window_end": window[1].isoformat() if window else None,
    }

    evidently_columns = [*tested, *([PREDICTION_COLUMN] if has_prediction else [])]
    definition = data_definition(schema, prediction=has_prediction, columns=tested)
    prediction_method: DriftMethod = "wasserstein" if family == "distance" else "ks"
    prediction_metric = ValueDrift(
        column=PREDICTION_COLUMN,
        method=prediction_method,
        threshold=_threshold(prediction_method, thresholds),
    )
    drift_preset = DataDriftPreset(
        columns=tested,
        drift_share=thresholds.drift_share,
        per_column_method={name: methods[name] for name in tested},
        per_column_threshold=limits,
    )
    report = Report(
        [
            *([drift_preset] if tested else []),
            *([prediction_metric] if has_prediction else []),
            *_summary_without_tests(evidently_columns),
        ],
        include_tests=True,
        metadata={key: value for key, value in metadata.items() if value is not None},
    )
    snapshot = report.run(
        current_data=Dataset.from_pandas(
            current_sample[evidently_columns].reset_index(drop=True), data_definition=definition
        ),
        reference_data=Dataset.from_pandas(
            reference_sample[evidently_columns].reset_index(drop=True), data_definition=definition
        ),
    )

    features: list[FeatureDrift] = []
    for name in tested:
        metric = ValueDrift(column=name, method=methods[name], threshold=limits[name])
        score, drifted = _drift_result(snapshot, metric, methods[name], limits[name])
        features.append(
            FeatureDrift(
                feature=name,
                kind="categorical" if schema.feature(name).is_categorical else "numerical",
                method=methods[name],
                score=score,
                threshold=limits[name],
                drifted=drifted,
            )
        )
    drifted_features = tuple(result.feature for result in features if result.drifted)
    share = len(drifted_features) / len(features) if features else 0.0
    drift = DriftReport(
        family=family,
        current_rows=len(current_sample),
        reference_rows=len(reference_sample),
        features=tuple(features),
        untested=untested,
        drifted_features=drifted_features,
        share_drifted=share,
        drift_share_threshold=thresholds.drift_share,
        dataset_drift=bool(features) and share >= thresholds.drift_share,
    )

    prediction = None
    if has_prediction:
        scores = prepared[PREDICTION_COLUMN].dropna().to_numpy(dtype=np.float64)
        reference_scores = reference.frame[PREDICTION_COLUMN].dropna().to_numpy(dtype=np.float64)
        psi = population_stability_index(scores, stats.prediction)
        threshold = _threshold(prediction_method, thresholds)
        score, test_drifted = _drift_result(
            snapshot, prediction_metric, prediction_method, threshold
        )
        prediction = PredictionDrift(
            rows=len(scores),
            psi=psi,
            psi_threshold=thresholds.prediction_psi,
            ks_statistic=_ks_statistic(reference_scores, scores),
            current_mean=float(scores.mean()),
            reference_mean=stats.prediction.mean,
            method=prediction_method,
            score=score,
            threshold=threshold,
            test_drifted=test_drifted,
            drifted=psi >= thresholds.prediction_psi,
        )

    summary = MonitorSummary(
        model_name=model_name,
        model_version=model_version,
        window_start=window[0] if window else None,
        window_end=window[1] if window else None,
        rows=len(current),
        sample_rows=len(current_sample),
        reference_rows=reference.rows,
        seed=seed,
        drift=drift,
        prediction=prediction,
        quality=quality,
        thresholds=thresholds,
        evidently_version=evidently_version,
        seconds=time.perf_counter() - started,
    )
    return summary, snapshot


def check_data_quality(
    current: pd.DataFrame,
    reference: Reference,
    schema: FeatureSchema,
    *,
    thresholds: MonitorThresholds | None = None,
) -> DataQuality:
    """The data-quality part of `run_monitor` alone: every row, no sampling, no Evidently.

    It takes about 2 s per million rows, so a flow can afford it on any window.

    Args:
        current: The window (see `run_monitor`).
        reference: The reference of the model version.
        schema: The model's feature schema; its features must match the reference's.
        thresholds: Flag thresholds (default: `MonitorThresholds()`).

    Returns:
        Null rates against the reference's, out-of-range and invalid values, and categories
        unknown to the schema or absent from the reference, per feature, with the flags.

    Raises:
        ValueError: The schema's features differ from the reference's.
    """
    _check_same_features(schema, reference.schema)
    prepared, invalid, missing = _coerce(current, schema)
    return _data_quality(
        prepared, invalid, missing, reference.statistics, schema, thresholds or MonitorThresholds()
    )


def write_reports(
    result: Snapshot, folder: str | Path, *, summary: MonitorSummary | None = None
) -> tuple[Path, Path]:
    """Save Evidently's HTML and JSON reports (and the summary, if given) into a folder.

    Args:
        result: The snapshot `run_monitor` returned.
        folder: Folder to write into; created if missing, files in it replaced.
        summary: Also write it as `summary.json`.

    Returns:
        The paths of `report.html` and `report.json`.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    html_path, json_path = root / REPORT_HTML_FILE, root / REPORT_JSON_FILE
    result.save_html(str(html_path))
    json_path.write_text(result.json())
    if summary is not None:
        (root / SUMMARY_FILE).write_text(summary.model_dump_json(indent=2) + "\n")
    return html_path, json_path


def population_stability_index(
    scores: npt.ArrayLike, reference: PredictionStatistics, *, floor: float = _PSI_FLOOR
) -> float:
    """PSI of scores against the reference's decile bins: sum of (c - r) * ln(c / r).

    Args:
        scores: Current scores (NaNs must be dropped first).
        reference: The reference's cached bin edges and shares.
        floor: Least share given to a bin, so an empty bin adds a large but finite term.

    Returns:
        The PSI; 0 when the distributions agree, about 0.1 for a moderate shift.
    """
    values = np.asarray(scores, dtype=np.float64)
    edges = np.asarray(reference.bin_edges, dtype=np.float64)
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    current = np.maximum(counts / max(len(values), 1), floor)
    expected = np.maximum(np.asarray(reference.bin_shares, dtype=np.float64), floor)
    return float(np.sum((current - expected) * np.log(current / expected)))


# --- helpers ---------------------------------------------------------------------------------


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _schema_sha256(schema: FeatureSchema) -> str:
    return hashlib.sha256(schema.model_dump_json().encode()).hexdigest()


def _frame_sha256(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    digest.update(repr([(str(name), str(dtype)) for name, dtype in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _check_same_features(schema: FeatureSchema, reference: FeatureSchema) -> None:
    ours = [(f.name, f.kind) for f in schema.features]
    theirs = [(f.name, f.kind) for f in reference.features]
    if ours != theirs:
        raise ValueError(
            f"schema {schema.name!r} does not match the reference's ({reference.name!r}): "
            "features or kinds differ"
        )


def _coerce(
    current: pd.DataFrame, schema: FeatureSchema
) -> tuple[pd.DataFrame, dict[str, int], tuple[str, ...]]:
    """The window's features as monitoring compares them, with counts of values of the wrong type.

    Numeric features become float64 (a value that is not a number becomes NaN and is counted as
    invalid); categorical ones become objects holding str or None. Only the needed columns are
    copied, never the whole window.
    """
    columns: dict[str, npt.NDArray[Any]] = {}
    invalid: dict[str, int] = {}
    missing = tuple(name for name in schema.feature_names if name not in current)
    for feature in schema.features:
        if feature.name in missing:
            continue
        column = current[feature.name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            column = column.astype(object)
        invalid[feature.name] = 0
        if feature.is_categorical:
            present = column.notna()
            if pd.api.types.infer_dtype(column, skipna=True) not in ("string", "empty"):
                column = column.where(~present, column.astype(str))
            columns[feature.name] = column.astype(object).where(present, None).to_numpy()
        elif pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            columns[feature.name] = column.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            numbers = pd.to_numeric(column, errors="coerce").astype(np.float64)
            invalid[feature.name] = int((column.notna() & numbers.isna()).sum())
            columns[feature.name] = numbers.to_numpy()
    if PREDICTION_COLUMN in current:
        scores = pd.to_numeric(current[PREDICTION_COLUMN], errors="coerce")
        columns[PREDICTION_COLUMN] = scores.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(current))), invalid, missing


def _top(counts: Mapping[str, int]) -> dict[str, int]:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return dict(ranked[:_LISTED_CATEGORIES])


def _data_quality(
    prepared: pd.DataFrame,
    invalid: Mapping[str, int],
    missing: Sequence[str],
    stats: ReferenceStatistics,
    schema: FeatureSchema,
    thresholds: MonitorThresholds,
) -> DataQuality:
    rows = len(prepared)
    results: list[FeatureQuality] = []
    for feature in schema.features:
        reference = stats.features[feature.name]
        unknown: dict[str, int] = {}
        unseen: dict[str, int] = {}
        out_of_range = 0
        if feature.name in missing:
            null_rate = 1.0
        else:
            column = prepared[feature.name]
            nulls = int(column.isna().sum()) - invalid[feature.name]
            null_rate = _share(nulls, rows)
            if feature.is_categorical:
                allowed = set(feature.categories or ())
                seen = set(reference.category_shares or {})
                for value, count in column.value_counts().items():
                    if value not in allowed:
                        unknown[str(value)] = int(count)
                    elif value not in seen:
                        unseen[str(value)] = int(count)
            else:
                values = column.to_numpy()
                outside = np.zeros(rows, dtype=np.bool_)
                if feature.minimum is not None:
                    outside |= values < feature.minimum
                if feature.maximum is not None:
                    outside |= values > feature.maximum
                out_of_range = int(outside.sum())
        change = null_rate - reference.null_rate
        results.append(
            FeatureQuality(
                feature=feature.name,
                kind=feature.kind,
                null_rate=null_rate,
                reference_null_rate=reference.null_rate,
                null_rate_change=change,
                invalid=invalid.get(feature.name, 0),
                out_of_range=out_of_range,
                unknown_categories=_top(unknown),
                unseen_categories=_top(unseen),
                missingness_spike=change > thresholds.null_rate_increase,
            )
        )
    return DataQuality(
        rows=rows,
        features=tuple(results),
        missing_columns=tuple(missing),
        missingness_spikes=tuple(r.feature for r in results if r.missingness_spike),
        out_of_range=tuple(
            r.feature
            for r in results
            if r.out_of_range and _share(r.out_of_range, rows) > thresholds.out_of_range_share
        ),
        invalid_values=tuple(r.feature for r in results if r.invalid),
        new_categories=tuple(
            r.feature
            for r in results
            if r.unknown_categories
            or _share(sum(r.unseen_categories.values()), rows) > thresholds.unseen_category_share
        ),
    )


def _sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """At most `rows` rows of `frame`, uniformly without replacement, in their original order."""
    if len(frame) <= rows:
        return frame.copy()
    keep = np.sort(np.random.default_rng(seed).choice(len(frame), size=rows, replace=False))
    return frame.iloc[keep].copy()


def _summary_without_tests(columns: Sequence[str]) -> list[Any]:
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


def _drift_method(
    statistics: FeatureStatistics, family: Literal["distance", "p_value"]
) -> DriftMethod:
    if family == "distance":
        return statistics.drift_method
    return "chisquare" if statistics.kind == "category" else "ks"


def _threshold(method: DriftMethod, thresholds: MonitorThresholds) -> float:
    return thresholds.p_value if method in _P_VALUE_METHODS else thresholds.distance


def _drift_result(
    snapshot: Snapshot, metric: Any, method: DriftMethod, threshold: float
) -> tuple[float, bool]:
    """A ValueDrift's score from the snapshot, and Evidently's verdict on it."""
    result = snapshot.context.get_metric_result(metric)
    score = float(result.value)
    if result.tests:
        # TestStatus is a str enum; FAIL is how a drift test reports drift.
        return score, any(test.status == "FAIL" for test in result.tests)
    if method in _P_VALUE_METHODS:
        return score, score < threshold
    return score, score >= threshold


def _ks_statistic(reference: npt.NDArray[np.float64], current: npt.NDArray[np.float64]) -> float:
    """The two-sample Kolmogorov-Smirnov statistic, by merging the sorted samples."""
    reference, current = np.sort(reference), np.sort(current)
    points = np.concatenate([reference, current])
    below_reference = np.searchsorted(reference, points, side="right") / len(reference)
    below_current = np.searchsorted(current, points, side="right") / len(current)
    return float(np.max(np.abs(below_reference - below_current)))


def _unique(frame: pd.DataFrame, column: str) -> str | None:
    if column not in frame:
        return None
    values = frame[column].dropna().unique()
    return str(values[0]) if len(values) == 1 else None
