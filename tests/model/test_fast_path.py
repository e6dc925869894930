"""The compiled fast path scores as the calibrated pipeline does, on trained models of each family.

Serving scores with `CompiledScorer` and falls back to the pipeline only when compiling fails,
so the two must agree: within `TOLERANCE` on every row of the frozen test split, and on the
inputs a pipeline treats specially (unseen, infrequent and missing categories, and the ends of
each number's range).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import SGDClassifier

from loanops.explain import Variant
from loanops.schema import FeatureSchema
from serving.scorer.compiled import CompiledScorer
from serving.scorer.parts import UnsupportedModelError
from tests.model.fitting import Fitted

TOLERANCE = 1e-6
"""Largest |compiled - pipeline| probability of default that serving accepts."""
MIN_FREQUENCY = 20
"""The one-hot encoder's `min_frequency` in `loanops.features.build_preprocessor`."""


def compile_scorer(fitted: Fitted) -> CompiledScorer:
    return CompiledScorer.compile(fitted.model.model, fitted.schema)


def assert_scores_match_pipeline(fitted: Fitted, frame: pd.DataFrame) -> None:
    """Every path of the compiled scorer against `predict_proba` on `schema.to_frame(frame)`."""
    scorer = compile_scorer(fitted)
    expected = fitted.score(frame)
    rows = frame.to_dict("records")
    paths = {
        "score_frame": scorer.score_frame(frame),
        "score_rows": scorer.score_rows(rows),
        "score_rows, one row per call": np.concatenate([scorer.score_rows([r]) for r in rows]),
    }
    for path, scores in paths.items():
        gap = float(np.max(np.abs(scores - expected)))
        assert gap <= TOLERANCE, f"{fitted.family} {path}: off by {gap:.3g}"


def cycle(values: list[Any], rows: int) -> np.ndarray:
    return np.resize(np.array(values, dtype=object), rows)


def test_fast_path_matches_the_pipeline_on_the_whole_test_split(
    lending_club_model: Fitted,
) -> None:
    assert_scores_match_pipeline(lending_club_model, lending_club_model.raw_test)


def test_rows_and_frames_score_alike(lending_club_model: Fitted) -> None:
    scorer = compile_scorer(lending_club_model)
    raw = lending_club_model.raw_test
    np.testing.assert_allclose(
        scorer.score_rows(raw.to_dict("records")), scorer.score_frame(raw), rtol=0, atol=1e-12
    )


def test_unseen_infrequent_and_unknown_categories(lending_club_model: Fitted) -> None:
    schema, train = lending_club_model.schema, lending_club_model.splits.train.X
    frame = lending_club_model.raw_test.iloc[:300].copy()
    rare_somewhere = False
    for name in schema.categorical_features:
        counts = train[name].value_counts()
        unseen = [c for c in schema.feature(name).categories or () if c not in counts]
        rare = [c for c in counts.index if counts[c] < MIN_FREQUENCY]
        rare_somewhere |= bool(rare)
        frame[name] = cycle([*unseen, *rare, "not-a-category", counts.index[0]], len(frame))
    assert rare_somewhere, "lending_club no longer has infrequent categories to test"
    assert_scores_match_pipeline(lending_club_model, frame)


def test_none_in_a_nullable_category(synthetic_model: Fitted) -> None:
    raw = synthetic_model.raw_test
    assert synthetic_model.schema.feature("emp_length").nullable
    assert raw["emp_length"].isna().any()
    assert_scores_match_pipeline(synthetic_model, raw)
    assert_scores_match_pipeline(synthetic_model, raw.iloc[:200].assign(emp_length=None))

    scorer = compile_scorer(synthetic_model)
    rows = raw.iloc[:50].to_dict("records")
    as_nan = [{**row, "emp_length": float("nan")} for row in rows]
    as_none = [{**row, "emp_length": None} for row in rows]
    np.testing.assert_array_equal(scorer.score_rows(as_nan), scorer.score_rows(as_none))


def test_every_category_none_and_unknown_on_the_synthetic_model(synthetic_model: Fitted) -> None:
    schema = synthetic_model.schema
    frame = synthetic_model.raw_test.iloc[:400].copy()
    for name in schema.categorical_features:
        feature = schema.feature(name)
        nullable = [None] if feature.nullable else []
        frame[name] = cycle([*(feature.categories or ()), *nullable, "unknown"], len(frame))
    assert_scores_match_pipeline(synthetic_model, frame)


def extreme_frame(schema: FeatureSchema, base: pd.DataFrame) -> pd.DataFrame:
    """`base`'s first row with all numbers at their minimum, then all at their maximum, then
    each number alone at either end; then `base` with every number at a random end."""
    bounds: dict[str, tuple[float, float]] = {}
    for name in schema.numeric_features:
        feature = schema.feature(name)
        if feature.minimum is not None and feature.maximum is not None:
            bounds[name] = (feature.minimum, feature.maximum)
    row = base.iloc[[0]]
    frames = [
        row.assign(**{name: low for name, (low, _) in bounds.items()}),
        row.assign(**{name: high for name, (_, high) in bounds.items()}),
    ]
    for name, (low, high) in bounds.items():
        frames += [row.assign(**{name: low}), row.assign(**{name: high})]
    rng = np.random.default_rng(0)
    ends = {
        name: np.where(rng.random(len(base)) < 0.5, low, high)
        for name, (low, high) in bounds.items()
    }
    frames.append(base.assign(**ends))
    return pd.concat(frames, ignore_index=True)


def test_extreme_numbers_within_the_schema_ranges(lending_club_model: Fitted) -> None:
    frame = extreme_frame(lending_club_model.schema, lending_club_model.raw_test.iloc[:100])
    assert_scores_match_pipeline(lending_club_model, frame)


def test_extreme_numbers_on_the_synthetic_model(synthetic_model: Fitted) -> None:
    frame = extreme_frame(synthetic_model.schema, synthetic_model.raw_test.iloc[:100])
    assert_scores_match_pipeline(synthetic_model, frame)


def test_models_the_compiler_does_not_know_are_refused(lending_club_model: Fitted) -> None:
    calibrated = lending_club_model.model.model
    pipeline = calibrated.calibrated_classifiers_[0].estimator.estimator
    train, validation = lending_club_model.splits.train, lending_club_model.splits.validation

    isotonic = CalibratedClassifierCV(FrozenEstimator(pipeline), method="isotonic")
    isotonic.fit(validation.X, validation.y)
    with pytest.raises(UnsupportedModelError, match="sigmoid"):
        CompiledScorer.compile(isotonic, lending_club_model.schema)

    other = clone(pipeline).set_params(classifier=SGDClassifier(loss="log_loss", random_state=0))
    other.fit(train.X, train.y)
    sgd = CalibratedClassifierCV(FrozenEstimator(other), method="sigmoid")
    sgd.fit(validation.X, validation.y)
    with pytest.raises(UnsupportedModelError, match="SGDClassifier"):
        CompiledScorer.compile(sgd, lending_club_model.schema)


def some_variants(schema: FeatureSchema, n_rows: int) -> list[Variant]:
    """Per feature, a few values (each category, None, an unknown category, each number's ends
    and a whole middle value) on a different third of the rows each."""
    rng = np.random.default_rng(0)
    variants = []
    for feature in schema.features:
        values: list[Any]
        if feature.is_categorical:
            values = [*(feature.categories or ()), None, "not-a-category"]
        else:
            low = feature.minimum if feature.minimum is not None else -1.0
            high = feature.maximum if feature.maximum is not None else low + 1e4
            middle = (low + high) / 2
            middle = float(round(middle)) if feature.kind == "int" else middle
            values = [low, high, middle, *([None] if feature.nullable else [])]
        for value in values:
            rows = np.flatnonzero(rng.random(n_rows) < 1 / 3)
            variants.append(Variant(feature.name, value, rows))
    return variants


def variant_frames(frame: pd.DataFrame, variants: list[Variant]) -> pd.DataFrame:
    return pd.concat(
        [frame.iloc[v.rows].assign(**{v.feature: v.value}) for v in variants], ignore_index=True
    )


def assert_variants_score_as_their_rows(fitted: Fitted) -> None:
    # Adverse-action reasons rank features by these scores, so they must equal scoring the
    # variant rows themselves, to the last bit: trees reuse the leaves of trees a variant's
    # feature cannot move.
    scorer = compile_scorer(fitted)
    raw = fitted.raw_test.iloc[:400]
    frame = fitted.schema.to_frame(raw).reset_index(drop=True)
    variants = some_variants(fitted.schema, len(frame))
    expected = scorer.score_frame(variant_frames(frame, variants))

    np.testing.assert_array_equal(scorer.score_variants(frame, variants, cast=False), expected)
    np.testing.assert_array_equal(scorer.score_variants(raw, variants), expected)
    assert len(scorer.score_variants(frame, [])) == 0


def test_variants_score_as_their_rows(lending_club_model: Fitted) -> None:
    assert_variants_score_as_their_rows(lending_club_model)


def test_variants_score_as_their_rows_with_null_categories(synthetic_model: Fitted) -> None:
    assert_variants_score_as_their_rows(synthetic_model)


def assert_row_variants_score_as_their_rows(fitted: Fitted) -> None:
    # A single application's reasons come from `score_row_variants`, which an additive model
    # answers by re-evaluating one term: it must equal scoring each changed row, to the last bit.
    scorer = compile_scorer(fitted)
    rows = fitted.raw_test.iloc[:40].to_dict("records")
    changes = [(v.feature, v.value) for v in some_variants(fitted.schema, 1)]
    for row in rows:
        changed = [{**row, name: value} for name, value in changes]
        expected = np.concatenate([scorer.score_rows([one]) for one in changed])
        np.testing.assert_array_equal(scorer.score_row_variants(row, changes), expected)


def test_row_variants_score_as_their_rows(lending_club_model: Fitted) -> None:
    assert_row_variants_score_as_their_rows(lending_club_model)


def test_row_variants_score_as_their_rows_with_null_categories(synthetic_model: Fitted) -> None:
    assert_row_variants_score_as_their_rows(synthetic_model)
