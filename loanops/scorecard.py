"""The scorecard family: monotone optimal binning, weight of evidence, a logistic regression.

`WoEEncoder` bins every feature with optbinning's `BinningProcess` (numbers get the monotonic
trend the schema's `risk` declares, so each bin is riskier than the one before it) and replaces
each value with its bin's weight of evidence, signed so that a larger value means more risk:
ln(share of defaults in the bin / share of repayments in the bin). The logistic regression after
it has non-negative coefficients, so a declared direction holds for the whole model.

Only the fitted bin edges, category groups and weights are kept (numpy arrays and lists): the
fitted optbinning objects hold solver state that skops cannot load, and importing optbinning
costs seconds that serving must not pay. The bins then feed `points_table`, the points a
reviewer reads, scaled the usual way (a base score at given odds, points to double the odds),
and computed from the calibrated model so that the points add up to its PD exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from loanops.schema import FeatureSchema

BASE_SCORE = 600.0
BASE_ODDS = 50.0
"""The score of an applicant whose odds of repaying are 50 to 1."""
POINTS_TO_DOUBLE_ODDS = 20.0

_TRENDS = {"increasing": "ascending", "decreasing": "descending", None: "auto_asc_desc"}


@dataclass(frozen=True)
class FeatureBins:
    """One feature's fitted bins: edges (numbers) or category groups, and their risk WoE."""

    name: str
    categorical: bool
    edges: tuple[float, ...]
    """Numbers: bin i holds [edges[i-1], edges[i]), the first from -inf, the last to +inf."""
    groups: tuple[tuple[str, ...], ...]
    """Categories: the values of each bin."""
    woe: tuple[float, ...]
    """Risk weight of evidence per bin, in bin order."""
    missing_woe: float
    """For a missing value; 0 (no evidence) when training saw none."""
    information_value: float
    best_value: float | str | None = None
    """A training value in the least risky bin: at the low end of it where risk increases, the
    high end where it decreases, its median (or commonest category) otherwise."""

    def labels(self) -> list[str]:
        if self.categorical:
            return [", ".join(group) for group in self.groups]
        bounds = [-math.inf, *self.edges, math.inf]
        return [f"[{_num(lo)}, {_num(hi)})" for lo, hi in zip(bounds, bounds[1:], strict=False)]

    def bin_of(self, values: pd.Series) -> np.ndarray:
        """Each value's bin index; -1 for missing, -2 for a category no bin holds."""
        if self.categorical:
            lookup = {v: i for i, group in enumerate(self.groups) for v in group}
            index = values.map(lambda v: -1 if v is None or v != v else lookup.get(v, -2))
            return index.to_numpy(dtype=np.int64)
        numbers = values.to_numpy(dtype=np.float64)
        index = np.searchsorted(np.asarray(self.edges), numbers, side="right")
        return np.where(np.isnan(numbers), -1, index).astype(np.int64)

    def woe_of(self, values: pd.Series) -> np.ndarray:
        index = self.bin_of(values)
        # Appended: -1 picks the missing value's WoE, -2 an unseen category's (no evidence, 0).
        table = np.array([*self.woe, 0.0, self.missing_woe])
        return table[index]


def _num(value: float) -> str:
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.4g}"


class WoEEncoder(TransformerMixin, BaseEstimator):
    """Bin each feature (optbinning, monotone where risk is declared) and encode it as risk WoE.

    Args:
        numeric: number columns, in input order.
        categorical: category columns, after the numbers.
        risks: each number's declared direction ("increasing", "decreasing" or None).
        max_n_bins: most bins per feature.
        min_bin_size: smallest share of the training rows a bin may hold.
    """

    def __init__(
        self,
        numeric: Sequence[str] = (),
        categorical: Sequence[str] = (),
        risks: Sequence[str | None] = (),
        max_n_bins: int = 6,
        min_bin_size: float = 0.05,
    ) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.risks = risks
        self.max_n_bins = max_n_bins
        self.min_bin_size = min_bin_size

    def fit(self, X: pd.DataFrame, y: Any) -> WoEEncoder:
        from optbinning import BinningProcess  # seconds to import: only fitting needs it

        names = [*self.numeric, *self.categorical]
        trends = {
            name: {"monotonic_trend": _TRENDS[risk]}
            for name, risk in zip(self.numeric, self.risks, strict=True)
        }
        process = BinningProcess(
            variable_names=names,
            categorical_variables=list(self.categorical),
            max_n_bins=self.max_n_bins,
            min_bin_size=self.min_bin_size,
            binning_fit_params=trends,
        )
        process.fit(X[names], np.asarray(y))
        risks = dict(zip(self.numeric, self.risks, strict=True))
        self.bins_ = [
            _with_best_value(
                _fitted_bins(name, process.get_binned_variable(name), name in self.categorical),
                X[name],
                risks.get(name),
            )
            for name in names
        ]
        self.n_features_in_ = len(names)
        self.feature_names_in_ = np.array(names, dtype=object)
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "bins_")
        return np.column_stack([bins.woe_of(X[bins.name]) for bins in self.bins_])

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.array([f"{bins.name}_woe" for bins in self.bins_], dtype=object)

    def best_values(self, schema: FeatureSchema) -> dict[str, Any]:
        """Each feature's `FeatureBins.best_value`, JSON-ready in the schema's kinds."""
        check_is_fitted(self, "bins_")
        best: dict[str, Any] = {}
        for bins in self.bins_:
            if bins.best_value is None:
                continue
            kind = schema.feature(bins.name).kind
            value = bins.best_value
            best[bins.name] = (
                int(value) if kind == "int" else float(value) if kind == "float" else value
            )
        return best


def _fitted_bins(name: str, optimal: Any, categorical: bool) -> FeatureBins:
    table = optimal.binning_table.build()
    rows = table.drop(index="Totals")
    count = len(optimal.splits) + (0 if categorical else 1)
    # optbinning's WoE is ln(share of non-events / share of events): larger is safer.
    woe = tuple(-float(w) for w in rows["WoE"].iloc[:count])
    # After the bins come the "Special" and "Missing" rows.
    missing = rows.iloc[count + 1]
    missing_woe = -float(missing["WoE"]) if int(missing["Count"]) else 0.0
    if categorical:
        groups = tuple(tuple(str(v) for v in group) for group in optimal.splits)
        edges: tuple[float, ...] = ()
    else:
        groups, edges = (), tuple(float(s) for s in optimal.splits)
    return FeatureBins(
        name=name,
        categorical=categorical,
        edges=edges,
        groups=groups,
        woe=woe,
        missing_woe=missing_woe,
        information_value=float(table.loc["Totals", "IV"]),
    )


def _with_best_value(bins: FeatureBins, values: pd.Series, risk: str | None) -> FeatureBins:
    best = int(np.argmin(bins.woe))
    inside = values[bins.bin_of(values) == best]
    if inside.empty:
        return bins
    if bins.categorical:
        value: float | str = str(inside.value_counts().index[0])
    else:
        end = {"increasing": 0.05, "decreasing": 0.95}.get(risk or "", 0.5)
        value = float(np.quantile(inside.to_numpy(dtype=np.float64), end, method="nearest"))
    return replace(bins, best_value=value)


def build_encoder(schema: FeatureSchema, max_n_bins: int, min_bin_size: float) -> WoEEncoder:
    numeric = schema.numeric_features
    return WoEEncoder(
        numeric=numeric,
        categorical=schema.categorical_features,
        risks=[schema.feature(n).risk for n in numeric],
        max_n_bins=max_n_bins,
        min_bin_size=min_bin_size,
    )


@dataclass(frozen=True)
class PointsRow:
    """One bin of the scorecard: what an applicant in it scores for that feature."""

    feature: str
    bin: str
    points: float
    woe: float


@dataclass(frozen=True)
class Scorecard:
    """The points table of a fitted scorecard, exact for its calibrated PD."""

    base_points: float
    rows: tuple[PointsRow, ...]
    information_values: dict[str, float]

    def pd_of_score(self, score: float) -> float:
        """The PD an applicant with this total score has."""
        factor = POINTS_TO_DOUBLE_ODDS / math.log(2)
        offset = BASE_SCORE - factor * math.log(BASE_ODDS)
        return 1.0 / (1.0 + math.exp((score - offset) / factor))


def is_scorecard(model: Any) -> bool:
    """Whether a calibrated loanops model is a scorecard."""
    try:
        _parts(model)
    except (AttributeError, IndexError, TypeError, ValueError):
        return False
    return True


def _parts(model: Any) -> tuple[WoEEncoder, Any, float, float]:
    # CalibratedClassifierCV(FrozenEstimator(Pipeline[ColumnTransformer[WoEEncoder], LR])).
    calibrated = model.calibrated_classifiers_[0]
    (calibrator,) = calibrated.calibrators
    pipeline = getattr(calibrated.estimator, "estimator", calibrated.estimator)
    preprocess, classifier = pipeline.named_steps["preprocess"], pipeline.named_steps["classifier"]
    ((_, encoder, _),) = [t for t in preprocess.transformers_ if t[0] != "remainder"]
    if not isinstance(encoder, WoEEncoder):
        raise TypeError(f"not a scorecard: {type(encoder).__name__}")
    return encoder, classifier, float(calibrator.a_), float(calibrator.b_)


def points_table(model: Any) -> Scorecard:
    """The points of each bin of a calibrated scorecard.

    The calibrated PD is expit(-(a·f + b)) with f = β0 + Σ βj·woe; a score of
    offset + factor·ln(odds of repaying) then splits into base points plus factor·a·βj·woe per
    feature, so an applicant's points sum to the score whose PD (`Scorecard.pd_of_score`) is the
    model's.

    Raises:
        TypeError: for a model that is not a scorecard.
    """
    encoder, classifier, a, b = _parts(model)
    factor = POINTS_TO_DOUBLE_ODDS / math.log(2)
    offset = BASE_SCORE - factor * math.log(BASE_ODDS)
    beta = np.ravel(classifier.coef_)
    rows = []
    for bins, coefficient in zip(encoder.bins_, beta, strict=True):
        for label, woe in zip(bins.labels(), bins.woe, strict=True):
            rows.append(PointsRow(bins.name, label, factor * a * coefficient * woe, woe))
        rows.append(
            PointsRow(
                bins.name,
                "missing",
                factor * a * coefficient * bins.missing_woe,
                bins.missing_woe,
            )
        )
    base = offset + factor * (a * float(np.ravel(classifier.intercept_)[0]) + b)
    values = {bins.name: bins.information_value for bins in encoder.bins_}
    return Scorecard(base_points=base, rows=tuple(rows), information_values=values)


def best_values(model: Any, schema: FeatureSchema) -> dict[str, Any]:
    """A value in each feature's least risky bin: the favourable values of a scorecard, so that
    an applicant's reason for a feature is exactly what its bin costs them."""
    encoder, _, _, _ = _parts(model)
    return encoder.best_values(schema)
