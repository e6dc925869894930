"""`CompiledScorer`: a calibrated pipeline compiled into plain Python for one row, numpy for many,
and verified against the pipeline before it may score.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV, _SigmoidCalibration
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from loanops.explain import Variant, score_variant_frames
from loanops.schema import FeatureSchema
from serving.scorer.linear import compile_linear
from serving.scorer.parts import (
    Additive,
    Block,
    Change,
    DecisionFunction,
    FloatArray,
    FrameColumns,
    RowColumns,
    UnsupportedModelError,
)
from serving.scorer.scorecard import compile_scorecard, is_scorecard_block
from serving.scorer.trees import Forest, compile_forest

VERIFY_TOLERANCE = 1e-9
"""Largest |compiled - pipeline| probability accepted on the probe rows at compile time."""

_UNSEEN = "\x00unseen"  # a probe category no schema allows, to exercise the unknown path
_PROBE_ROWS = 256


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


def _blocks(preprocess: Any, schema: FeatureSchema) -> list[Block]:
    if not isinstance(preprocess, ColumnTransformer):
        raise UnsupportedModelError(f"expected a ColumnTransformer, got {preprocess!r}")
    blocks = []
    for name, transformer, columns in preprocess.transformers_:
        if (isinstance(transformer, str) and transformer == "drop") or len(columns) == 0:
            continue
        if not all(isinstance(c, str) and c in schema.feature_names for c in columns):
            raise UnsupportedModelError(f"transformer {name!r} reads columns {columns!r}")
        blocks.append(Block(transformer, list(columns), preprocess.output_indices_[name]))
    return blocks


def _compile_decision(model: Any, schema: FeatureSchema) -> tuple[DecisionFunction, float, float]:
    pipeline, a, b = _unwrap_calibrated(model)
    if len(pipeline.steps) != 2:
        raise UnsupportedModelError("expected a pipeline of a ColumnTransformer and a classifier")
    (_, preprocess), (_, classifier) = pipeline.steps
    blocks = _blocks(preprocess, schema)
    decision: DecisionFunction
    if isinstance(classifier, LogisticRegression) and is_scorecard_block(blocks):
        decision = compile_scorecard(blocks, classifier)
    elif isinstance(classifier, LogisticRegression):
        decision = compile_linear(blocks, classifier)
    elif isinstance(classifier, HistGradientBoostingClassifier):
        decision = compile_forest(blocks, classifier)
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

    def __init__(
        self, schema: FeatureSchema, decision: DecisionFunction, a: float, b: float
    ) -> None:
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
                the model (and variants of them, as the reasons ask), and refuse the compilation
                when they differ by more than `VERIFY_TOLERANCE`. Costs a few tens of
                milliseconds.

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
            decisions = self._decision.columns(RowColumns(rows), n_rows)
        return self._calibrate(decisions)

    def score_row_variants(self, row: Mapping[str, Any], changes: Sequence[Change]) -> FloatArray:
        """Probability of default of each variant of one row: `row` with one feature changed.

        What `Explainer.reasons` asks for a single application: the probabilities `score_rows`
        gives each changed row, to the same bits as `score_rows` of one row. An additive model
        (logistic regression, scorecard) evaluates only the term that changed; a forest re-walks
        only the trees whose path reads the changed feature.

        Args:
            row: one validated application, as for `score_rows`.
            changes: per variant, the feature to change and its new value.

        Returns:
            One probability per change, in order.
        """
        if isinstance(self._decision, Additive | Forest):
            return self._calibrate(np.array(self._decision.row_variants(row, changes)))
        return self.score_rows([{**row, name: value} for name, value in changes])

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
        return self._calibrate(self._decision.columns(FrameColumns(features), len(features)))

    def score_variants(
        self, frame: pd.DataFrame, variants: Sequence[Variant], *, cast: bool = True
    ) -> FloatArray:
        """Probability of default of each variant: rows of `frame` with one feature changed.

        What `Explainer.rank_reasons` asks for its adverse-action reasons. A forest re-walks a
        tree only for the rows whose path in it splits on the variant's feature and keeps the
        other leaves of the row; the other families score the variants built as frames. Either
        way the probabilities are those of `score_frame` on the variant rows, to the last bit.

        Args:
            frame: validated rows holding at least the schema's feature columns.
            variants: which rows to change, which feature, and to what value.
            cast: as in `score_frame`.

        Returns:
            The variants' probabilities, concatenated in the order of `variants`.
        """
        features = self.schema.to_frame(frame) if cast else frame
        if isinstance(self._decision, Forest):
            raw = self._decision.variants(FrameColumns(features), len(features), variants)
            return self._calibrate(raw)
        score = functools.partial(self.score_frame, cast=False)
        return np.asarray(score_variant_frames(score, features, variants), dtype=np.float64)

    def _calibrate(self, decisions: FloatArray) -> FloatArray:
        # _SigmoidCalibration.predict, term for term.
        return np.asarray(expit(-(self._a * decisions + self._b)), dtype=np.float64)

    def _verify(self, model: Any) -> None:
        probe = _probe_frame(self.schema)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Found unknown categories"
            expected = model.predict_proba(self.schema.to_frame(probe))[:, 1]
            # Each feature of a quarter of the probe rows set to another probe row's value.
            cast = self.schema.to_frame(probe)
            variants = [
                Variant(name, cast[name].iloc[k], np.arange(k % 4, len(probe), 4))
                for k, name in enumerate(self.schema.feature_names)
            ]
            moved = pd.concat([cast.iloc[v.rows].assign(**{v.feature: v.value}) for v in variants])
            expected_variants = model.predict_proba(self.schema.to_frame(moved))[:, 1]
        rows = probe.to_dict("records")
        one_change = [(v.feature, v.value) for v in variants]
        # score_rows is checked against the pipeline below; the one-row variants match it.
        changed_rows = [[{**r, f: value} for f, value in one_change] for r in rows[:16]]
        for path, scores, wanted in (
            (
                "score_row_variants",
                np.concatenate([self.score_row_variants(r, one_change) for r in rows[:16]]),
                np.concatenate([self.score_rows(changed) for changed in changed_rows]),
            ),
            ("score_frame", self.score_frame(probe), expected),
            ("score_frame uncast", self.score_frame(cast, cast=False), expected),
            ("score_rows", self.score_rows(rows), expected),
            (
                "score_rows one by one",
                np.concatenate([self.score_rows([r]) for r in rows]),
                expected,
            ),
            ("score_variants", self.score_variants(cast, variants, cast=False), expected_variants),
        ):
            gap = float(np.max(np.abs(scores - wanted)))
            if not gap <= VERIFY_TOLERANCE:  # also catches NaN
                raise UnsupportedModelError(
                    f"{path} differs from the pipeline by {gap:.3g} on probe rows; "
                    "the compiler misreads this model"
                )
