"""Fast scoring: a calibrated pipeline compiled into plain Python for one row, numpy for many.

`model.predict_proba` on a one-row DataFrame spends most of its time in pandas and the
ColumnTransformer. `CompiledScorer.compile` reads the fitted parameters out of a calibrated
pipeline built by `loanops.features.build_model` once, and then scores without either:

- logistic regression: imputer fill, log1p, standard scaling and weight per number, and the
  weight of the one-hot column each category value lights up (infrequent bucket included);
- HistGradientBoosting: each category value's final ordinal code (through our OrdinalEncoder and
  the one the classifier adds internally), and the trees flattened into lists;
- either: Platt's sigmoid `expit(-(a * f + b))` on the pipeline's `decision_function` f, as
  `sklearn.calibration._CalibratedClassifier.predict_proba` does.

The tree part reads scikit-learn internals (`_predictors`, `_preprocessor`, `_bin_mapper`,
`_baseline_prediction`, the `TreePredictor` node records), last checked against 1.9.1. Anything
the compiler does not recognise raises `UnsupportedModelError`, and so does any disagreement with
the pipeline on probe rows drawn from the schema at compile time. Serving then refuses the version
(`serving.model.load_version` raises `ModelLoadError`, and the current model keeps serving), so
a scikit-learn upgrade can stop a new version from loading but never makes it mis-score.

It lives beside its only user: the API and the batch workers load models through
`serving.model`, which compiles each version once.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV, _SigmoidCalibration
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
)
from sklearn.utils import check_array

from loanops.schema import FeatureSchema

__all__ = ["VERIFY_TOLERANCE", "CompiledScorer", "UnsupportedModelError"]

FloatArray = npt.NDArray[np.float64]

VERIFY_TOLERANCE = 1e-9
"""Largest |compiled - pipeline| probability accepted on the probe rows at compile time."""

_NAN = float("nan")
_UNSEEN = "\x00unseen"  # a probe category no schema allows, to exercise the unknown path
_PROBE_ROWS = 256


class UnsupportedModelError(Exception):
    """The model holds something the compiler cannot reproduce exactly: score with the pipeline."""


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


# --- inputs: one row, or columns of many --------------------------------------------------------


@dataclass(frozen=True)
class _CategoryTable:
    """The number each value of one categorical feature becomes: a weight, or a code for trees."""

    name: str
    values: dict[str, float]
    unknown: float
    """For a value the encoder never saw."""
    missing: float
    """For None (and NaN, which `FeatureSchema.to_frame` turns into None)."""

    def of(self, value: Any) -> float:
        if value is None or value != value:
            return self.missing
        return self.values.get(value, self.unknown)


class _Columns(Protocol):
    """Feature columns of n rows, as the vectorised evaluators read them."""

    def number(self, name: str) -> FloatArray:
        """A fresh float column, NaN where missing."""
        ...

    def category(self, table: _CategoryTable) -> FloatArray:
        """The column's values looked up in `table`."""
        ...


class _RowColumns:
    """Columns gathered from rows (mappings) without pandas."""

    def __init__(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._rows = rows

    def number(self, name: str) -> FloatArray:
        # dtype=float turns None into NaN.
        return np.array([row[name] for row in self._rows], dtype=np.float64)

    def category(self, table: _CategoryTable) -> FloatArray:
        return np.array([table.of(row[table.name]) for row in self._rows], dtype=np.float64)


class _FrameColumns:
    """Columns of a frame already cast by `FeatureSchema.to_frame`."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame

    def number(self, name: str) -> FloatArray:
        return self._frame[name].to_numpy(dtype=np.float64, copy=True)

    def category(self, table: _CategoryTable) -> FloatArray:
        # to_frame has turned NaN into None. get_indexer gives -1 for a value not in the index,
        # which picks the last entry: unknown.
        positions = pd.Index([*table.values, None]).get_indexer(self._frame[table.name])
        looked_up = [*table.values.values(), table.missing, table.unknown]
        return np.array(looked_up, dtype=np.float64)[positions]


@dataclass(frozen=True)
class _Block:
    """One fitted transformer of a ColumnTransformer: its input columns and output slice."""

    transformer: Any
    columns: list[str]
    output: slice


class _Decision(Protocol):
    """The classifier's decision_function, with the preprocessing before it folded in."""

    family: str
    one_by_one: int
    """Up to this many rows, plain Python one row at a time beats numpy columns (measured)."""

    def row(self, row: Mapping[str, Any]) -> float: ...

    def columns(self, columns: _Columns, n_rows: int) -> FloatArray: ...


# --- logistic regression ------------------------------------------------------------------------


@dataclass(frozen=True)
class _NumericTerm:
    """One number's way into the logit: impute, maybe log1p, standardise, weigh."""

    name: str
    fill: float
    """The imputer's statistic; NaN when there is no imputer (and so NaN stays NaN)."""
    log: bool
    mean: float
    scale: float
    weight: float


@dataclass(frozen=True)
class _Linear:
    """The logit of a logistic regression as a sum of per-feature terms."""

    intercept: float
    numbers: tuple[_NumericTerm, ...]
    categories: tuple[_CategoryTable, ...]
    """Each maps a category value to the weight of the one-hot column it sets."""

    family = "logreg"
    one_by_one = 24

    def row(self, row: Mapping[str, Any]) -> float:
        total = self.intercept
        for term in self.numbers:
            value = row[term.name]
            value = term.fill if value is None or value != value else float(value)
            if term.log:
                value = math.log1p(value)
            total += term.weight * ((value - term.mean) / term.scale)
        for table in self.categories:
            total += table.of(row[table.name])
        return total

    def columns(self, columns: _Columns, n_rows: int) -> FloatArray:
        total = np.full(n_rows, self.intercept)
        for term in self.numbers:
            values = columns.number(term.name)
            values[np.isnan(values)] = term.fill
            if term.log:
                np.log1p(values, out=values)
            total += term.weight * ((values - term.mean) / term.scale)
        for table in self.categories:
            total += columns.category(table)
        return total


def _is_identity(step: Any) -> bool:
    if isinstance(step, str) or step is None:
        return step in ("passthrough", None)
    return isinstance(step, FunctionTransformer) and step.func is None


def _is_log1p(step: Any) -> bool:
    return isinstance(step, FunctionTransformer) and step.func is np.log1p and not step.kw_args


def _steps(transformer: Any) -> list[Any]:
    if isinstance(transformer, Pipeline):
        return [step for _, step in transformer.steps]
    return [transformer]


def _numeric_terms(steps: list[Any], columns: list[str], weights: FloatArray) -> list[_NumericTerm]:
    """Terms for a block of numbers: [impute] → [log1p] → [standardise], each step optional."""
    n = len(columns)
    fill, log = [_NAN] * n, False
    mean, scale = [0.0] * n, [1.0] * n
    stage = 0  # each kind of step may come once, in the order above
    for step in steps:
        if _is_identity(step):
            continue
        if isinstance(step, SimpleImputer) and stage < 1:
            fill, stage = _numeric_fill(step, n), 1
        elif _is_log1p(step) and stage < 2:
            log, stage = True, 2
        elif isinstance(step, StandardScaler) and stage < 3:
            if step.with_mean:
                mean = [float(m) for m in step.mean_]
            if step.with_std:
                scale = [float(s) for s in step.scale_]
            stage = 3
        else:
            raise UnsupportedModelError(f"cannot compile {step!r} in a block of numbers")
    if len(weights) != n:
        raise UnsupportedModelError(f"numbers {columns} give {len(weights)} columns, not {n}")
    return [
        _NumericTerm(name, fill[j], log, mean[j], scale[j], float(weights[j]))
        for j, name in enumerate(columns)
    ]


def _numeric_fill(imputer: SimpleImputer, n: int) -> list[float]:
    statistics = np.asarray(imputer.statistics_, dtype=np.float64)
    if not _is_nan(imputer.missing_values) or imputer.add_indicator:
        raise UnsupportedModelError(f"cannot compile {imputer!r}: only NaN imputation is known")
    if len(statistics) != n or not np.isfinite(statistics).all():
        # A NaN statistic means an all-missing training column, which the imputer drops.
        raise UnsupportedModelError(f"{imputer!r} has statistics {statistics}")
    return [float(s) for s in statistics]


def _one_hot_tables(
    steps: list[Any], columns: list[str], weights: FloatArray
) -> list[_CategoryTable]:
    """Per category feature, the weight of the one-hot column each value sets.

    `[impute None → constant] → OneHotEncoder(drop=None)`. The encoder's columns per feature are
    its frequent categories in order, then one infrequent column when some categories had fewer
    than `min_frequency` rows. An unknown value sets the infrequent column under
    `handle_unknown="infrequent_if_exist"` when there is one, and no column otherwise.
    """
    *before, encoder = steps
    fills: list[Any] = [None] * len(columns)
    for step in before:
        if _is_identity(step):
            continue
        if (
            isinstance(step, SimpleImputer)
            and step.strategy == "constant"
            and step.missing_values is None
            and not step.add_indicator
        ):
            fills = list(step.statistics_)
        else:
            raise UnsupportedModelError(f"cannot compile {step!r} before a one-hot encoder")
    if not isinstance(encoder, OneHotEncoder):
        raise UnsupportedModelError(f"cannot compile {encoder!r} as a category encoder")
    if encoder.drop_idx_ is not None:
        raise UnsupportedModelError(f"cannot compile {encoder!r}: only drop=None is known")
    if encoder.handle_unknown not in ("ignore", "infrequent_if_exist", "warn"):
        raise UnsupportedModelError(f"cannot compile {encoder!r}: unknown values would raise")
    try:
        infrequent = encoder.infrequent_categories_
    except AttributeError:  # neither min_frequency nor max_categories was set
        infrequent = [None] * len(columns)

    rares = [[] if r is None else list(r) for r in infrequent]
    widths = [
        len(categories) - len(rare) + (1 if rare else 0)
        for categories, rare in zip(encoder.categories_, rares, strict=True)
    ]
    if sum(widths) != len(weights):
        raise UnsupportedModelError(f"categories {columns} give {len(weights)} columns")

    tables, offset = [], 0
    for name, categories, rare, width, fill in zip(
        columns, encoder.categories_, rares, widths, fills, strict=True
    ):
        block = [float(w) for w in weights[offset : offset + width]]
        offset += width
        frequent = [c for c in categories if c not in rare]
        weight_of = {c: block[i] for i, c in enumerate(frequent)}
        weight_of.update(dict.fromkeys(rare, block[-1]))  # the infrequent column comes last
        unknown = block[-1] if rare and encoder.handle_unknown != "ignore" else 0.0
        values: dict[str, float] = {}
        missing = unknown
        for category, weight in weight_of.items():
            if category is None:  # seen in training, None is a category like any other
                missing = weight
            elif isinstance(category, str):
                values[category] = weight
            elif not _is_nan(category):  # NaN cannot arrive: to_frame turns it into None
                raise UnsupportedModelError(f"{name!r} has a non-string category {category!r}")
        if fill is not None:
            # The imputer turned None into its fill value before the encoder saw it.
            missing = values.get(fill, unknown)
        tables.append(_CategoryTable(name, values, unknown, missing))
    return tables


def _compile_linear(blocks: list[_Block], classifier: LogisticRegression) -> _Linear:
    coef = np.asarray(classifier.coef_, dtype=np.float64)
    if coef.shape[0] != 1 or len(classifier.classes_) != 2:
        raise UnsupportedModelError("only a binary logistic regression is supported")
    weights = coef[0]
    numbers: list[_NumericTerm] = []
    categories: list[_CategoryTable] = []
    for block in blocks:
        steps = _steps(block.transformer)
        block_weights = weights[block.output]
        if isinstance(steps[-1], OneHotEncoder):
            categories += _one_hot_tables(steps, block.columns, block_weights)
        else:
            numbers += _numeric_terms(steps, block.columns, block_weights)
    return _Linear(float(classifier.intercept_[0]), tuple(numbers), tuple(categories))


# --- histogram gradient boosting ----------------------------------------------------------------


@dataclass(frozen=True)
class _TreeInput:
    """One column of the trees' input: a number, or a category's final ordinal code."""

    name: str
    codes: _CategoryTable | None


@dataclass(frozen=True)
class _Forest:
    """A HistGradientBoostingClassifier's raw score, its trees flattened into parallel lists.

    Node i is a leaf when `feature[i] < 0`. Otherwise a missing value goes left when
    `missing_left[i]`, a category code goes left when it is in `left_codes[i]`, and a number goes
    left when it is <= `threshold[i]`, as `_predictor._predict_one_from_raw_data` does. The
    lists hold every tree, one after another; `roots` are their first nodes.
    """

    inputs: tuple[_TreeInput, ...]
    baseline: float
    roots: tuple[int, ...]
    feature: list[int]
    threshold: list[float]
    missing_left: list[bool]
    left_codes: list[frozenset[int] | None]
    left: list[int]
    right: list[int]
    value: list[float]
    predictors: tuple[Any, ...]
    """The TreePredictors, for the vectorised path."""
    known_cat_bitsets: Any
    f_idx_map: Any

    family = "hist_gbt"
    one_by_one = 8

    def row(self, row: Mapping[str, Any]) -> float:
        x = []
        for item in self.inputs:
            value = row[item.name]
            if item.codes is not None:
                x.append(item.codes.of(value))
            else:
                x.append(_NAN if value is None else float(value))
        feature, threshold, missing_left = self.feature, self.threshold, self.missing_left
        left_codes, left, right, leaf_value = self.left_codes, self.left, self.right, self.value
        total = self.baseline
        for node in self.roots:
            while (f := feature[node]) >= 0:
                v = x[f]
                codes = left_codes[node]
                if v != v:
                    go_left = missing_left[node]
                elif codes is None:
                    go_left = v <= threshold[node]
                else:  # a negative code counts as missing
                    go_left = v in codes if v >= 0 else missing_left[node]
                node = left[node] if go_left else right[node]
            total += leaf_value[node]
        return total

    def columns(self, columns: _Columns, n_rows: int) -> FloatArray:
        X = np.empty((n_rows, len(self.inputs)))
        for j, item in enumerate(self.inputs):
            X[:, j] = (
                columns.number(item.name) if item.codes is None else columns.category(item.codes)
            )
        # As HistGradientBoostingClassifier._raw_predict: baseline, then each tree in turn. One
        # OpenMP thread: with two, single-row predictions stalled now and then on 2-core nodes.
        raw = np.zeros(n_rows) + self.baseline
        for predictor in self.predictors:
            raw += predictor.predict(X, self.known_cat_bitsets, self.f_idx_map, 1)
        return raw


@dataclass(frozen=True)
class _Ordinal:
    """What one OrdinalEncoder column does to a value."""

    codes: dict[Any, float]
    """Known categories; None among them when seen in training, as an ordinary category."""
    unknown: float
    nan: float
    """Only NaN counts as missing: `encoded_missing_value` when seen in training, else unknown."""

    def of(self, value: Any) -> float:
        if _is_nan(value):
            return self.nan
        return self.codes.get(value, self.unknown)


def _ordinals(encoder: Any) -> list[_Ordinal]:
    if not isinstance(encoder, OrdinalEncoder):
        raise UnsupportedModelError(f"cannot compile {encoder!r} as a category encoder for trees")
    if encoder.handle_unknown != "use_encoded_value":
        raise UnsupportedModelError(f"cannot compile {encoder!r}: unknown values would raise")
    if encoder.min_frequency is not None or encoder.max_categories is not None:
        raise UnsupportedModelError(f"cannot compile {encoder!r}: infrequent grouping")
    unknown = float(encoder.unknown_value)
    encoded_missing = float(encoder.encoded_missing_value)
    columns = []
    for categories in encoder.categories_:
        codes: dict[Any, float] = {}
        nan = unknown
        for code, category in enumerate(categories):
            if _is_nan(category):
                nan = encoded_missing
            else:
                codes[category] = float(code)
        columns.append(_Ordinal(codes, unknown, nan))
    return columns


def _outer_inputs(blocks: list[_Block], n_features: int) -> list[_TreeInput]:
    """The pipeline's ColumnTransformer output, column by column: numbers and ordinal codes."""
    inputs: list[_TreeInput | None] = [None] * n_features
    for block in blocks:
        positions = range(n_features)[block.output]
        if len(positions) != len(block.columns):
            raise UnsupportedModelError(f"{block.transformer!r} changes the number of columns")
        steps = [step for step in _steps(block.transformer) if not _is_identity(step)]
        if not steps:
            for position, name in zip(positions, block.columns, strict=True):
                inputs[position] = _TreeInput(name, None)
        elif len(steps) == 1:
            ordinals = _ordinals(steps[0])
            for position, name, ordinal in zip(positions, block.columns, ordinals, strict=True):
                values = {c: code for c, code in ordinal.codes.items() if c is not None}
                if not all(isinstance(c, str) for c in values):
                    raise UnsupportedModelError(f"{name!r} has a non-string category")
                # to_frame hands the encoder None for a missing category, never NaN.
                table = _CategoryTable(name, values, ordinal.unknown, ordinal.of(None))
                inputs[position] = _TreeInput(name, table)
        else:
            raise UnsupportedModelError(f"cannot compile {block.transformer!r} before trees")
    if any(item is None for item in inputs):
        raise UnsupportedModelError("the column transformer leaves output columns unexplained")
    return [item for item in inputs if item is not None]


def _is_check_array(step: Any) -> bool:
    func = getattr(step, "func", None)
    return isinstance(func, functools.partial) and func.func is check_array


def _inner_inputs(
    classifier: HistGradientBoostingClassifier, outer: list[_TreeInput]
) -> list[_TreeInput]:
    """The trees' input order and codes, through the classifier's own preprocessing.

    With `categorical_features` set, scikit-learn 1.9 puts the categorical columns first and
    ordinal-encodes them again (our codes become its categories), in `_preprocessor`.
    """
    inner = classifier._preprocessor
    if inner is None:
        return outer
    inputs: list[_TreeInput | None] = [None] * len(outer)
    for name, transformer, mask in inner.transformers_:
        selected = np.arange(len(outer))[mask]
        if (isinstance(transformer, str) and transformer == "drop") or len(selected) == 0:
            continue
        positions = range(len(outer))[inner.output_indices_[name]]
        if _is_check_array(transformer):
            for position, j in zip(positions, selected, strict=True):
                inputs[position] = outer[j]
            continue
        for position, j, ordinal in zip(positions, selected, _ordinals(transformer), strict=True):
            item = outer[j]
            if item.codes is None:
                raise UnsupportedModelError(f"{item.name!r} is a number coded as a category")
            table = _CategoryTable(
                item.name,
                {value: ordinal.of(code) for value, code in item.codes.values.items()},
                ordinal.of(item.codes.unknown),
                ordinal.of(item.codes.missing),
            )
            inputs[position] = _TreeInput(item.name, table)
    if any(item is None for item in inputs):
        raise UnsupportedModelError("the classifier's own preprocessing is not understood")
    return [item for item in inputs if item is not None]


def _in_bitset(bitset: Any, value: int) -> bool:
    return bool((int(bitset[value >> 5]) >> (value & 31)) & 1)


def _compile_forest(blocks: list[_Block], classifier: HistGradientBoostingClassifier) -> _Forest:
    if len(classifier.classes_) != 2 or classifier.n_trees_per_iteration_ != 1:
        raise UnsupportedModelError("only a binary HistGradientBoostingClassifier is supported")
    outer = _outer_inputs(blocks, classifier.n_features_in_)
    inputs = _inner_inputs(classifier, outer)
    known_cat_bitsets, f_idx_map = classifier._bin_mapper.make_known_categories_bitsets()

    roots: list[int] = []
    feature: list[int] = []
    threshold: list[float] = []
    missing_left: list[bool] = []
    left_codes: list[frozenset[int] | None] = []
    left: list[int] = []
    right: list[int] = []
    value: list[float] = []
    predictors = []
    for (predictor,) in classifier._predictors:
        predictors.append(predictor)
        offset = len(feature)
        roots.append(offset)
        for node in predictor.nodes:
            is_leaf, f = bool(node["is_leaf"]), int(node["feature_idx"])
            goes_left = bool(node["missing_go_to_left"])
            feature.append(-1 if is_leaf else f)
            threshold.append(float(node["num_threshold"]))
            missing_left.append(goes_left)
            left.append(int(node["left"]) + offset)
            right.append(int(node["right"]) + offset)
            value.append(float(node["value"]))
            if is_leaf or not node["is_categorical"]:
                left_codes.append(None)
                continue
            # Left: in the split's bitset; right: another known category; else as missing.
            split = predictor.raw_left_cat_bitsets[node["bitset_idx"]]
            known = known_cat_bitsets[f_idx_map[f]]
            left_codes.append(
                frozenset(
                    code
                    for code in range(256)
                    if _in_bitset(split, code) or (goes_left and not _in_bitset(known, code))
                )
            )
    baseline = np.asarray(classifier._baseline_prediction, dtype=np.float64)
    if baseline.size != 1:
        raise UnsupportedModelError("expected one baseline for a binary classifier")
    return _Forest(
        inputs=tuple(inputs),
        baseline=float(baseline.ravel()[0]),
        roots=tuple(roots),
        feature=feature,
        threshold=threshold,
        missing_left=missing_left,
        left_codes=left_codes,
        left=left,
        right=right,
        value=value,
        predictors=tuple(predictors),
        known_cat_bitsets=known_cat_bitsets,
        f_idx_map=f_idx_map,
    )


# --- the pipeline around them -------------------------------------------------------------------


def _unwrap_calibrated(model: Any) -> tuple[Pipeline, float, float]:
    """The fitted pipeline and Platt's (a, b) of a sigmoid-calibrated model.

    `_CalibratedClassifier.predict_proba` takes the estimator's `decision_function` (its first
    choice over `predict_proba`), which for a binary problem is the positive class's raw score,
    and sets P(class 1) = `_SigmoidCalibration.predict` = expit(-(a * f + b)).
    """
    if not isinstance(model, CalibratedClassifierCV):
        raise UnsupportedModelError(
            f"expected a CalibratedClassifierCV, got {type(model).__name__}"
        )
    if model.method != "sigmoid":
        raise UnsupportedModelError(f"only sigmoid calibration is supported, not {model.method!r}")
    if len(model.classes_) != 2 or len(model.calibrated_classifiers_) != 1:
        raise UnsupportedModelError(
            "expected one binary calibrated classifier (a FrozenEstimator or ensemble=False), "
            f"got {len(model.calibrated_classifiers_)}"
        )
    calibrated = model.calibrated_classifiers_[0]
    (calibrator,) = calibrated.calibrators  # one for a binary problem
    if not isinstance(calibrator, _SigmoidCalibration):
        raise UnsupportedModelError(f"unexpected calibrator {calibrator!r}")
    estimator = calibrated.estimator
    if isinstance(estimator, FrozenEstimator):
        estimator = estimator.estimator
    if not np.array_equal(estimator.classes_, model.classes_):
        raise UnsupportedModelError("the classifier's classes differ from the calibrator's")
    if not isinstance(estimator, Pipeline) or not hasattr(estimator, "decision_function"):
        raise UnsupportedModelError(f"expected a Pipeline with a decision_function: {estimator!r}")
    return estimator, float(calibrator.a_), float(calibrator.b_)


def _blocks(preprocess: Any, schema: FeatureSchema) -> list[_Block]:
    if not isinstance(preprocess, ColumnTransformer):
        raise UnsupportedModelError(f"expected a ColumnTransformer, got {preprocess!r}")
    blocks = []
    for name, transformer, columns in preprocess.transformers_:
        if (isinstance(transformer, str) and transformer == "drop") or len(columns) == 0:
            continue
        if not all(isinstance(c, str) and c in schema.feature_names for c in columns):
            raise UnsupportedModelError(f"transformer {name!r} reads columns {columns!r}")
        blocks.append(_Block(transformer, list(columns), preprocess.output_indices_[name]))
    return blocks


def _compile_decision(model: Any, schema: FeatureSchema) -> tuple[_Decision, float, float]:
    pipeline, a, b = _unwrap_calibrated(model)
    if len(pipeline.steps) != 2:
        raise UnsupportedModelError("expected a pipeline of a ColumnTransformer and a classifier")
    (_, preprocess), (_, classifier) = pipeline.steps
    blocks = _blocks(preprocess, schema)
    decision: _Decision
    if isinstance(classifier, LogisticRegression):
        decision = _compile_linear(blocks, classifier)
    elif isinstance(classifier, HistGradientBoostingClassifier):
        decision = _compile_forest(blocks, classifier)
    else:
        raise UnsupportedModelError(f"no compiler for {type(classifier).__name__}")
    return decision, a, b


def _probe_frame(schema: FeatureSchema, rows: int = _PROBE_ROWS) -> pd.DataFrame:
    """Rows covering every category, None, an unseen value, and numbers up to the schema's ends."""
    rng = np.random.default_rng(0)
    columns: dict[str, Any] = {}
    for f in schema.features:
        if f.is_categorical:
            values = [*(f.categories or ()), _UNSEEN, *([None] if f.nullable else [])]
            columns[f.name] = np.resize(rng.permutation(np.array(values, dtype=object)), rows)
            continue
        low = f.minimum if f.minimum is not None else min(0.0, f.maximum or 0.0) - 1e3
        high = f.maximum if f.maximum is not None else low + 2e3
        # Cubed uniforms crowd the low end, where most real values are, and reach the top.
        numbers = low + (high - low) * rng.random(rows) ** 3
        numbers[:2] = low, high
        if f.kind == "int":
            numbers = np.round(numbers)
        if f.nullable:
            numbers[rng.random(rows) < 0.15] = np.nan
        columns[f.name] = numbers
    return pd.DataFrame(columns)


class CompiledScorer:
    """A calibrated loanops model that scores without pandas or the ColumnTransformer.

    Build it once per loaded model with `CompiledScorer.compile(model, schema)`. It is immutable,
    so one instance can serve concurrent requests.
    """

    def __init__(self, schema: FeatureSchema, decision: _Decision, a: float, b: float) -> None:
        self.schema = schema
        self._decision = decision
        self._a = a
        self._b = b

    @property
    def family(self) -> str:
        """The model family compiled: `logreg` or `hist_gbt`."""
        return self._decision.family

    @classmethod
    def compile(cls, model: Any, schema: FeatureSchema, *, verify: bool = True) -> CompiledScorer:
        """Compile a fitted model built by `build_model` and calibrated by `loanops.train.fit`.

        Args:
            model: a `CalibratedClassifierCV` with one sigmoid calibrator around a (frozen)
                `Pipeline` of a `ColumnTransformer` and a `LogisticRegression` or
                `HistGradientBoostingClassifier`, as `mlflow.sklearn.load_model` returns it.
            schema: the feature schema the model was trained on (its `ModelCard.schema`).
            verify: score probe rows drawn from the schema with both the compiled scorer and
                the model, and refuse the compilation when they differ by more than
                `VERIFY_TOLERANCE`. Costs a few tens of milliseconds.

        Returns:
            The compiled scorer.

        Raises:
            UnsupportedModelError: when the model holds anything the compiler does not know, or
                when verification finds a difference. Serve with the pipeline instead.
        """
        try:
            decision, a, b = _compile_decision(model, schema)
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            # Typically a private attribute or record field that another scikit-learn moved.
            raise UnsupportedModelError(f"cannot read the fitted model: {error!r}") from error
        scorer = cls(schema, decision, a, b)
        if verify:
            scorer._verify(model)
        return scorer

    def score_rows(self, rows: Sequence[Mapping[str, Any]]) -> FloatArray:
        """Probability of default per row, for validated applications.

        Args:
            rows: mappings from feature name to value: numbers as int or float (None or NaN when
                missing), categories as str or None (NaN counts as None).

        Returns:
            One probability per row, equal to the model's `predict_proba(...)[:, 1]` on the same
            rows cast by `FeatureSchema.to_frame`.

        Raises:
            KeyError: when a row lacks a feature.
        """
        n_rows = len(rows)
        if n_rows <= self._decision.one_by_one:
            decisions = np.empty(n_rows)
            for i, row in enumerate(rows):
                decisions[i] = self._decision.row(row)
        else:
            decisions = self._decision.columns(_RowColumns(rows), n_rows)
        return self._calibrate(decisions)

    def score_frame(self, frame: pd.DataFrame, *, cast: bool = True) -> FloatArray:
        """Probability of default per row of a frame, vectorised.

        Args:
            frame: validated rows holding at least the schema's feature columns.
            cast: pass the frame through `FeatureSchema.to_frame` first. A caller whose frame is
                already in that form (numbers as floats with NaN for missing, categories as str
                or None, never NaN) may skip it: on a batch worker's chunks the cast is a third
                of the time.

        Returns:
            One probability per row, equal to `model.predict_proba(schema.to_frame(frame))[:, 1]`.

        Raises:
            KeyError: when a feature column is missing.
        """
        features = self.schema.to_frame(frame) if cast else frame
        return self._calibrate(self._decision.columns(_FrameColumns(features), len(features)))

    def _calibrate(self, decisions: FloatArray) -> FloatArray:
        # _SigmoidCalibration.predict, term for term.
        return np.asarray(expit(-(self._a * decisions + self._b)), dtype=np.float64)

    def _verify(self, model: Any) -> None:
        probe = _probe_frame(self.schema)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Found unknown categories"
            expected = model.predict_proba(self.schema.to_frame(probe))[:, 1]
        rows = probe.to_dict("records")
        for path, scores in (
            ("score_frame", self.score_frame(probe)),
            ("score_frame uncast", self.score_frame(self.schema.to_frame(probe), cast=False)),
            ("score_rows", self.score_rows(rows)),
            ("score_rows one by one", np.concatenate([self.score_rows([r]) for r in rows])),
        ):
            gap = float(np.max(np.abs(scores - expected)))
            if not gap <= VERIFY_TOLERANCE:  # also catches NaN
                raise UnsupportedModelError(
                    f"{path} differs from the pipeline by {gap:.3g} on probe rows; "
                    "the compiler misreads this model"
                )
