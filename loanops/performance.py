"""Performance on delayed labels: how the scores of decided loans held up once outcomes arrived.

`performance_summary` takes labelled decisions (`loanops.outcomes.read_labelled`: one row per
decision with an outcome, with its ``probability`` and ``defaulted``) and measures, overall and
per vintage:

- ranking: ROC AUC and KS (`loanops.evaluate.ks_separation`);
- calibration: ECE over equal-count bins (`loanops.evaluate.expected_calibration_error`), and
  calibration in the large: the mean predicted PD against the observed default rate, their gap,
  the ratio of observed to expected defaults, and the gap in standard errors. That z-score is the
  promotion gate's O/E test (`loanops.promotion.GateScores.calibration_z`), with the same sign:
  negative when more loans default than the PDs predict, as in a recession.

A vintage is the month a loan was issued. Decisions carry no issue date of their own, so a row's
vintage is the month of its ``issue_d`` where the frame has one (an input column, or one joined
in from the loan book), else the month (UTC) of the decision's ``decided_at``; a loan is issued
soon after it is approved, so the two rarely differ by more than a month.

A metric is computed only where enough labels back it, else it is None and ``note`` says why:
calibration needs ``min_labels`` labelled decisions; AUC, KS and ECE also need ``min_defaults``
loans of each outcome.

`classification_report` builds the Evidently classification report on the same rows, where
there are enough labels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from loanops.evaluate import expected_calibration_error, ks_separation

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

__all__ = [
    "DEFAULT_MIN_DEFAULTS",
    "DEFAULT_MIN_LABELS",
    "DEFAULT_REPORT_ROWS",
    "OVERALL",
    "PerformanceSummary",
    "SliceMetrics",
    "classification_report",
    "performance_summary",
    "vintages",
]

DEFAULT_MIN_LABELS: Final = 200
"""Fewest labelled decisions a slice needs for any metric."""
DEFAULT_MIN_DEFAULTS: Final = 20
"""Fewest defaults, and fewest repaid loans, a slice needs for AUC, KS and ECE."""
DEFAULT_REPORT_ROWS: Final = 200_000
"""Largest sample of labelled decisions `classification_report` gives to Evidently."""
OVERALL: Final = "overall"
"""Name of the slice holding every labelled decision."""

_REQUIRED: Final = ("probability", "defaulted", "decided_at")
# Headline metrics, in the order `PerformanceSummary.as_metrics` and `table` give them.
_METRICS: Final = (
    "auc",
    "ks",
    "ece",
    "mean_pd",
    "default_rate",
    "calibration_gap",
    "observed_to_expected",
    "calibration_z",
)


@dataclass(frozen=True)
class SliceMetrics:
    """Performance of one slice of labelled decisions: all of them, or one vintage.

    Attributes:
        name: ``"overall"``, or the vintage as ``"YYYY-MM"``.
        labelled: Decisions with an outcome in the slice.
        defaults: How many of them defaulted.
        auc: ROC AUC of the predicted PD against the outcome.
        ks: Kolmogorov-Smirnov separation (largest TPR - FPR).
        ece: Expected calibration error over 10 equal-count bins.
        mean_pd: Mean predicted PD (the expected default rate).
        default_rate: Observed default rate.
        calibration_gap: ``mean_pd - default_rate``; negative when defaults exceed predictions.
        observed_to_expected: Observed defaults over the sum of the predicted PDs.
        calibration_z: The gap in standard errors of the default rate the PDs predict.
        note: Why any metric above is None; None when all are computed.
    """

    name: str
    labelled: int
    defaults: int
    auc: float | None = None
    ks: float | None = None
    ece: float | None = None
    mean_pd: float | None = None
    default_rate: float | None = None
    calibration_gap: float | None = None
    observed_to_expected: float | None = None
    calibration_z: float | None = None
    note: str | None = None


@dataclass(frozen=True)
class PerformanceSummary:
    """Performance of the labelled decisions, overall and by vintage.

    Attributes:
        overall: Every labelled decision.
        vintages: One slice per vintage month, oldest first.
        vintage_basis: Where vintages came from: ``"issue_d"``, ``"decided_at"``, or
            ``"issue_d, else decided_at"`` when only some rows had an issue date.
        model_versions: Model versions among the decisions, sorted.
        first_decided_at: Earliest decision; None when there are none.
        last_decided_at: Latest decision; None when there are none.
        min_labels: Fewest labelled decisions a slice needed for any metric.
        min_defaults: Fewest loans of each outcome a slice needed for AUC, KS and ECE.
    """

    overall: SliceMetrics
    vintages: tuple[SliceMetrics, ...]
    vintage_basis: str
    model_versions: tuple[str, ...]
    first_decided_at: datetime | None
    last_decided_at: datetime | None
    min_labels: int
    min_defaults: int

    def as_metrics(self, prefix: str = "perf_") -> dict[str, float]:
        """The overall numbers that were computed, for logging as MLflow metrics.

        Args:
            prefix: Put before each metric name.

        Returns:
            ``{prefix + name: value}`` for the counts and every non-None overall metric.
        """
        metrics = {
            f"{prefix}labelled": float(self.overall.labelled),
            f"{prefix}defaults": float(self.overall.defaults),
        }
        for name in _METRICS:
            value = getattr(self.overall, name)
            if value is not None:
                metrics[f"{prefix}{name}"] = float(value)
        return metrics

    def table(self) -> pd.DataFrame:
        """One row per slice, overall first, then each vintage: counts, metrics and notes."""
        rows = [asdict(item) for item in (self.overall, *self.vintages)]
        columns = ["name", "labelled", "defaults", *_METRICS, "note"]
        return pd.DataFrame(rows, columns=columns).set_index("name")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (timestamps as ISO 8601), e.g. for a report artifact."""
        data = asdict(self)
        for key in ("first_decided_at", "last_decided_at"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        data["vintages"] = list(data["vintages"])
        data["model_versions"] = list(data["model_versions"])
        return data


def vintages(labelled: pd.DataFrame) -> tuple[pd.Series, str]:
    """The vintage month (``"YYYY-MM"``) of each row, and where it came from.

    Args:
        labelled: Rows with ``decided_at`` (timezone-aware), and optionally ``issue_d``
            (``"YYYY-MM"``, a date, or a timestamp).

    Returns:
        The months, aligned with ``labelled``; and ``"issue_d"``, ``"decided_at"`` or
        ``"issue_d, else decided_at"``.
    """
    decided = pd.to_datetime(labelled["decided_at"], utc=True).dt.strftime("%Y-%m")
    if "issue_d" not in labelled:
        return decided.rename("vintage"), "decided_at"
    issued = _months(labelled["issue_d"])
    if issued.isna().all():
        return decided.rename("vintage"), "decided_at"
    if issued.notna().all():
        return issued.rename("vintage"), "issue_d"
    return issued.fillna(decided).rename("vintage"), "issue_d, else decided_at"


def _months(values: pd.Series) -> pd.Series:
    """``"YYYY-MM"`` of each value that reads as a date, else NA."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = values
    else:
        text = values.astype("string").str.strip()
        # "YYYY-MM" alone is read as the first of the month.
        stamps = pd.to_datetime(text, errors="coerce", format="mixed")
    months = stamps.dt.strftime("%Y-%m")
    return months.where(stamps.notna()).astype(object)


def _slice(
    name: str, y: np.ndarray, p: np.ndarray, *, min_labels: int, min_defaults: int
) -> SliceMetrics:
    labelled, defaults = len(y), int(y.sum())
    if labelled < min_labels:
        note = f"{labelled} labelled decisions; every metric needs at least {min_labels}"
        return SliceMetrics(name, labelled, defaults, note=note)
    mean_pd, default_rate = float(p.mean()), float(y.mean())
    expected = float(p.sum())
    # If the PDs were right, the default count would have mean Σp and variance Σp(1 - p).
    spread = math.sqrt(max(float(np.mean(p * (1 - p))), 1e-12) / labelled)
    calibrated = SliceMetrics(
        name,
        labelled,
        defaults,
        mean_pd=mean_pd,
        default_rate=default_rate,
        calibration_gap=mean_pd - default_rate,
        observed_to_expected=defaults / expected if expected > 0 else None,
        calibration_z=(mean_pd - default_rate) / spread,
    )
    repaid = labelled - defaults
    if min(defaults, repaid) < min_defaults:
        note = (
            f"{defaults} defaults and {repaid} repaid; AUC, KS and ECE need at least "
            f"{min_defaults} of each"
        )
        return replace(calibrated, note=note)
    return replace(
        calibrated,
        auc=float(roc_auc_score(y, p)),
        ks=ks_separation(y, p),
        ece=expected_calibration_error(y, p),
    )


def _labels_and_scores(labelled: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    missing = [name for name in _REQUIRED if name not in labelled]
    if missing:
        raise ValueError(f"labelled decisions lack the columns {missing}")
    outcome = labelled["defaulted"]
    if outcome.isna().any():
        raise ValueError("defaulted has missing values; labelled decisions all have an outcome")
    y = outcome.astype("int64").to_numpy()
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError("defaulted must be true/false (or 0/1)")
    p = labelled["probability"].astype("float64").to_numpy()
    if not np.all(np.isfinite(p) & (p >= 0) & (p <= 1)):
        raise ValueError("probability must lie in [0, 1]")
    return y, p


def performance_summary(
    labelled: pd.DataFrame,
    *,
    min_labels: int = DEFAULT_MIN_LABELS,
    min_defaults: int = DEFAULT_MIN_DEFAULTS,
) -> PerformanceSummary:
    """Measure ranking and calibration of labelled decisions, overall and by vintage.

    Args:
        labelled: One row per decision with an outcome, as `loanops.outcomes.read_labelled`
            returns: at least ``probability``, ``defaulted`` and ``decided_at``, and optionally
            ``issue_d`` and ``model_version``.
        min_labels: Fewest labelled decisions a slice needs for any metric.
        min_defaults: Fewest defaults, and fewest repaid loans, a slice needs for AUC, KS and
            ECE.

    Returns:
        The summary; metrics a slice has too few labels for are None, with a note.

    Raises:
        ValueError: A required column is missing, ``defaulted`` is missing or not binary, or a
            probability lies outside [0, 1]; or a minimum is below 1.
    """
    if min_labels < 1 or min_defaults < 1:
        raise ValueError("min_labels and min_defaults must be at least 1")
    y, p = _labels_and_scores(labelled)
    months, basis = vintages(labelled)
    month_of_row = months.to_numpy()
    per_vintage = tuple(
        _slice(
            month,
            y[month_of_row == month],
            p[month_of_row == month],
            min_labels=min_labels,
            min_defaults=min_defaults,
        )
        for month in sorted(set(month_of_row))
    )
    decided = pd.to_datetime(labelled["decided_at"], utc=True)
    versions = labelled["model_version"].dropna().astype(str) if "model_version" in labelled else []
    return PerformanceSummary(
        overall=_slice(OVERALL, y, p, min_labels=min_labels, min_defaults=min_defaults),
        vintages=per_vintage,
        vintage_basis=basis,
        model_versions=tuple(sorted(set(versions))),
        first_decided_at=decided.min().to_pydatetime() if len(decided) else None,
        last_decided_at=decided.max().to_pydatetime() if len(decided) else None,
        min_labels=min_labels,
        min_defaults=min_defaults,
    )


def classification_report(
    labelled: pd.DataFrame,
    *,
    threshold: float | None = None,
    min_labels: int = DEFAULT_MIN_LABELS,
    min_defaults: int = DEFAULT_MIN_DEFAULTS,
    max_rows: int | None = DEFAULT_REPORT_ROWS,
    seed: int = 0,
) -> Snapshot | None:
    """Run Evidently's classification report (``ClassificationPreset``) on labelled decisions.

    The target is ``defaulted`` (1 for a default, the positive class) and the prediction the
    ``probability``; a PD at or above ``threshold`` counts as a predicted default, which is the
    rule the API declines by, so the confusion matrix, precision and recall are those of the
    decisions actually made. Only those two columns go to Evidently.

    Args:
        labelled: As for `performance_summary`, with a ``threshold`` column unless ``threshold``
            is given.
        threshold: Decline threshold; defaults to the one value of the ``threshold`` column.
        min_labels: Fewest labelled decisions needed.
        min_defaults: Fewest defaults, and fewest repaid loans, needed.
        max_rows: Largest sample given to Evidently, whose time grows with the rows; None for
            every row.
        seed: Seeds the sample.

    Returns:
        The evaluated report (``.save_html``, ``.json``, ``.dict``), or None when there are too
        few labels.

    Raises:
        ValueError: As for `performance_summary`; or no ``threshold`` is given and the rows hold
            several (decisions of several model versions: report one at a time).
    """
    y, p = _labels_and_scores(labelled)
    defaults = int(y.sum())
    if len(y) < min_labels or min(defaults, len(y) - defaults) < min_defaults:
        return None
    if threshold is None:
        if "threshold" not in labelled:
            raise ValueError("give a threshold: the labelled decisions have no threshold column")
        thresholds = labelled["threshold"].dropna().unique()
        if len(thresholds) != 1:
            raise ValueError(
                f"the decisions hold {len(thresholds)} thresholds; give one, or report one "
                "model version at a time"
            )
        threshold = float(thresholds[0])
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    frame = pd.DataFrame({"defaulted": y, "probability": p})
    if max_rows is not None and len(frame) > max_rows:
        frame = frame.sample(max_rows, random_state=seed).reset_index(drop=True)
    definition = DataDefinition(
        classification=[
            BinaryClassification(target="defaulted", prediction_probas="probability", pos_label=1)
        ],
        numerical_columns=["probability"],
    )
    report = Report([ClassificationPreset(probas_threshold=threshold)])
    return report.run(current_data=Dataset.from_pandas(frame, data_definition=definition))
