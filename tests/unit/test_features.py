"""Splits and pipelines: the frozen content-hashed test split, and both model families."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from loanops.data import synthetic as syn
from loanops.features import Splits, build_model, holdout_mask, split_frame
from loanops.schema import Feature, FeatureSchema, Target
from loanops.settings import ModelFamily
from tests.factories import (
    LENDING_CLUB,
    TINY,
    applicants_frame,
    lending_club_applicant,
    lending_club_frame,
    lending_club_sample,
    tiny_frame,
)

PARAMS: dict[ModelFamily, dict[str, Any]] = {
    "logreg": {"C": 0.1, "log_amounts": True},
    "hist_gbt": {
        "learning_rate": 0.1,
        "max_leaf_nodes": 8,
        "min_samples_leaf": 20,
        "l2_regularization": 1.0,
        "max_iter": 50,
    },
}


@pytest.fixture(scope="module")
def lending_club() -> tuple[pd.DataFrame, np.ndarray]:
    frame = lending_club_frame()
    return LENDING_CLUB.to_frame(frame), LENDING_CLUB.labels(frame)


def random_frame(
    rows: int, seed: int, positive_share: float = 0.1
) -> tuple[pd.DataFrame, np.ndarray]:
    """Distinct rows of mixed dtypes, with labels independent of the features."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "amount": rng.integers(0, 10**9, rows),
            "rate": rng.random(rows),
            "grade": rng.choice(np.array(list("ABCDEFG"), dtype=object), rows),
        }
    )
    y = (rng.random(rows) < positive_share).astype(np.int8)
    return X, y


# --- holdout_mask -----------------------------------------------------------------------------


def test_holdout_membership_is_a_function_of_row_content(
    lending_club: tuple[pd.DataFrame, np.ndarray],
) -> None:
    X, y = lending_club
    mask = pd.Series(holdout_mask(X, y, 0.2), index=X.index)
    rng = np.random.default_rng(0)
    for rows in (500, 3_000):
        subsample = rng.choice(len(X), rows, replace=False)
        sub_mask = holdout_mask(X.iloc[subsample], y[subsample], 0.2)
        np.testing.assert_array_equal(sub_mask, mask.iloc[subsample].to_numpy())
    shuffled = rng.permutation(len(X))
    np.testing.assert_array_equal(
        holdout_mask(X.iloc[shuffled].reset_index(drop=True), y[shuffled], 0.2),
        mask.iloc[shuffled].to_numpy(),
    )


def test_holdout_membership_ignores_the_label_and_the_index(
    lending_club: tuple[pd.DataFrame, np.ndarray],
) -> None:
    X, y = lending_club
    mask = holdout_mask(X, y, 0.2)
    shifted = X.set_axis(X.index * 7 + 3)
    flipped = y.copy()
    flipped[:2_000] = 1 - flipped[:2_000]
    np.testing.assert_array_equal(holdout_mask(shifted, flipped, 0.2), mask)


def test_holdout_membership_moves_with_a_changed_value(
    lending_club: tuple[pd.DataFrame, np.ndarray],
) -> None:
    X, y = lending_club
    mask = holdout_mask(X, y, 0.2)
    nudged = X.assign(funded_amnt=X["funded_amnt"] + 25)
    moved = holdout_mask(nudged, y, 0.2) != mask
    # Rehashed rows are redrawn: about 2 x 0.2 x 0.8 of them change side.
    assert 0.25 < moved.mean() < 0.39


def test_duplicate_rows_land_on_the_same_side() -> None:
    X, y = random_frame(2_000, seed=1)
    duplicated = pd.concat([X, X.iloc[:500], X.iloc[::-3]], ignore_index=True)
    labels = np.concatenate([y, 1 - y[:500], y[::-3]])
    mask = holdout_mask(duplicated, labels, 0.3)
    groups = pd.Series(mask).groupby(pd.util.hash_pandas_object(duplicated, index=False).values)
    assert (groups.size() > 1).sum() >= 500  # the duplicates are really there
    assert (groups.nunique() == 1).all()
    np.testing.assert_array_equal(mask[2_000:2_500], mask[:500])


@pytest.mark.parametrize("share", [0.1, 0.2, 0.35])
def test_holdout_share_is_approximately_the_requested_share(share: float) -> None:
    X, y = random_frame(40_000, seed=2)
    mask = holdout_mask(X, y, share)
    standard_error = math.sqrt(share * (1 - share) / len(X))
    assert abs(mask.mean() - share) < 4 * standard_error


def test_holdout_is_stratified_in_expectation() -> None:
    X, y = random_frame(40_000, seed=3, positive_share=0.05)
    mask = holdout_mask(X, y, 0.2)
    for label in (0, 1):
        in_class = y == label
        standard_error = math.sqrt(0.2 * 0.8 / in_class.sum())
        assert abs(mask[in_class].mean() - 0.2) < 4 * standard_error


def test_a_larger_share_only_adds_rows_to_the_test_split() -> None:
    X, y = random_frame(5_000, seed=4)
    small, large = holdout_mask(X, y, 0.1), holdout_mask(X, y, 0.3)
    assert not (small & ~large).any()
    assert large.sum() > small.sum()


def test_holdout_without_a_class_in_the_test_split_is_refused() -> None:
    X, y = random_frame(500, seed=5)
    with pytest.raises(ValueError, match="no rows of class 0; use more data"):
        holdout_mask(X, y, 1e-9)


# --- split_frame ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def splits() -> tuple[pd.DataFrame, Splits]:
    frame = lending_club_sample(4_000, seed=6)
    return frame, split_frame(frame, LENDING_CLUB, test_size=0.2, validation_size=0.25, seed=0)


def test_split_sizes(splits: tuple[pd.DataFrame, Splits]) -> None:
    frame, parts = splits
    test_rows = int(
        holdout_mask(LENDING_CLUB.to_frame(frame), LENDING_CLUB.labels(frame), 0.2).sum()
    )
    development = len(frame) - test_rows
    assert len(parts.test) == test_rows
    assert abs(test_rows / len(frame) - 0.2) < 4 * math.sqrt(0.2 * 0.8 / len(frame))
    assert len(parts.validation) == math.ceil(0.25 * development)
    assert len(parts.train) == development - len(parts.validation)
    assert len(parts.development) == development


def test_splits_are_disjoint_and_cover_the_frame(splits: tuple[pd.DataFrame, Splits]) -> None:
    frame, parts = splits
    indices = [set(part.X.index) for part in (parts.train, parts.validation, parts.test)]
    assert not (indices[0] & indices[1] or indices[0] & indices[2] or indices[1] & indices[2])
    assert set().union(*indices) == set(frame.index)


def test_split_labels_follow_their_rows(splits: tuple[pd.DataFrame, Splits]) -> None:
    frame, parts = splits
    for part in (parts.train, parts.validation, parts.test, parts.development):
        expected = LENDING_CLUB.labels(frame.loc[part.X.index])
        np.testing.assert_array_equal(part.y, expected)
        assert list(part.X.columns) == LENDING_CLUB.feature_names
        assert part.positives == int(expected.sum())


def test_validation_split_is_stratified(splits: tuple[pd.DataFrame, Splits]) -> None:
    _, parts = splits
    development_rate = parts.development.y.mean()
    assert abs(parts.validation.y.mean() - development_rate) < 1 / len(parts.validation) + 1e-9


def test_only_the_train_validation_split_moves_with_the_seed(
    splits: tuple[pd.DataFrame, Splits],
) -> None:
    frame, parts = splits
    other = split_frame(frame, LENDING_CLUB, test_size=0.2, validation_size=0.25, seed=1)
    pd.testing.assert_frame_equal(other.test.X, parts.test.X)
    assert set(other.validation.X.index) != set(parts.validation.X.index)
    again = split_frame(frame, LENDING_CLUB, test_size=0.2, validation_size=0.25, seed=0)
    pd.testing.assert_frame_equal(again.validation.X, parts.validation.X)


# --- build_model ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["logreg", "hist_gbt"])
def test_build_model_fits_and_scores_a_small_lending_club_frame(family: ModelFamily) -> None:
    frame = lending_club_sample(1_500, seed=7)
    X, y = LENDING_CLUB.to_frame(frame), LENDING_CLUB.labels(frame)
    model = build_model(LENDING_CLUB, family, PARAMS[family], seed=0).fit(X, y)
    scores = model.predict_proba(X)
    assert scores.shape == (len(X), 2)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0)
    assert scores[y == 1, 1].mean() > scores[y == 0, 1].mean()


@pytest.mark.parametrize("family", ["logreg", "hist_gbt"])
def test_unseen_categories_at_predict_time_do_not_raise(family: ModelFamily) -> None:
    frame = lending_club_sample(1_500, seed=8)
    model = build_model(LENDING_CLUB, family, PARAMS[family], seed=0)
    model.fit(LENDING_CLUB.to_frame(frame), LENDING_CLUB.labels(frame))
    unseen = applicants_frame(
        lending_club_applicant(addr_state="PR"),
        lending_club_applicant(sub_grade="H9", term="term_48"),
        lending_club_applicant(emp_length="emp_unknown", verification_status="Maybe"),
        lending_club_applicant(addr_state=None, sub_grade=None),
    )
    scores = model.predict_proba(LENDING_CLUB.to_frame(unseen))[:, 1]
    assert np.isfinite(scores).all() and ((scores > 0) & (scores < 1)).all()


@pytest.mark.parametrize("family", ["logreg", "hist_gbt"])
def test_none_in_nullable_categories_is_handled_at_fit_and_predict(family: ModelFamily) -> None:
    frame = tiny_frame(600, seed=9)
    X, y = TINY.to_frame(frame), TINY.labels(frame)
    assert X["tenure"].isna().any() and X["late_payments"].isna().any()
    model = build_model(TINY, family, PARAMS[family], seed=0).fit(X, y)
    blank = X.head(5).assign(tenure=None, late_payments=np.nan)
    scores = model.predict_proba(TINY.to_frame(blank))[:, 1]
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("family", ["logreg", "hist_gbt"])
def test_none_never_seen_in_training_is_handled_at_predict(family: ModelFamily) -> None:
    frame = syn.generate(3_000, seed=2)
    frame = frame[frame["emp_length"].notna()]
    X, y = syn.SCHEMA.to_frame(frame), syn.SCHEMA.labels(frame)
    model = build_model(syn.SCHEMA, family, PARAMS[family], seed=0).fit(X, y)
    blank = syn.SCHEMA.to_frame(frame.head(20).assign(emp_length=np.nan))
    assert blank["emp_length"].tolist() == [None] * 20
    scores = model.predict_proba(blank)[:, 1]
    assert np.isfinite(scores).all()


def test_build_model_refuses_an_unknown_family() -> None:
    with pytest.raises(ValueError, match="unknown model family 'forest'"):
        build_model(LENDING_CLUB, "forest", {}, seed=0)  # type: ignore[arg-type]


def test_build_model_does_not_consume_the_callers_params() -> None:
    params = dict(PARAMS["logreg"])
    build_model(LENDING_CLUB, "logreg", params, seed=0)
    assert params == PARAMS["logreg"]


def preprocessor_columns(schema: FeatureSchema, *, log_amounts: bool) -> dict[str, list[str]]:
    model = build_model(schema, "logreg", {"C": 1.0, "log_amounts": log_amounts}, seed=0)
    return {name: cols for name, _, cols in model.named_steps["preprocess"].transformers}


def test_logreg_never_log_compresses_features_that_may_be_negative() -> None:
    schema = FeatureSchema(
        name="signs",
        target=Target(name="y", positive=1, negative=0),
        features=(
            Feature(name="amount", kind="int", minimum=100, description="positive"),
            Feature(name="margin", kind="float", minimum=-5, description="may be negative"),
            Feature(name="score", kind="float", description="unbounded"),
        ),
    )
    assert preprocessor_columns(schema, log_amounts=True) == {
        "num": ["margin", "score"],
        "num_log": ["amount"],
        "cat": [],
    }
    assert preprocessor_columns(schema, log_amounts=False) == {
        "num": ["amount", "margin", "score"],
        "cat": [],
    }


def test_logreg_log_compresses_features_whose_minimum_is_zero() -> None:
    assert LENDING_CLUB.feature("annual_inc").minimum == 0
    columns = preprocessor_columns(LENDING_CLUB, log_amounts=True)
    assert columns["num_log"] == LENDING_CLUB.numeric_features
    assert "num" not in columns


def directions_schema() -> FeatureSchema:
    return FeatureSchema(
        name="directions",
        target=Target(name="y", positive=1, negative=0),
        features=(
            Feature(name="amount", kind="float", minimum=0, description="log", risk="increasing"),
            Feature(
                name="margin", kind="float", minimum=-5, description="plain", risk="decreasing"
            ),
            Feature(name="score", kind="float", description="no direction"),
            Feature(name="grade", kind="category", categories=("A", "B"), description="free"),
        ),
    )


@pytest.mark.parametrize("log_amounts", [True, False])
def test_logreg_bounds_each_declared_number_by_its_name(log_amounts: bool) -> None:
    # The data contradicts both declared directions, so both coefficients sit at zero.
    rng = np.random.default_rng(0)
    rows = 4000
    X = pd.DataFrame(
        {
            "amount": rng.lognormal(8, 1, rows),
            "margin": rng.uniform(-5, 5, rows),
            "score": rng.standard_normal(rows),
            "grade": rng.choice(np.array(["A", "B"], dtype=object), rows),
        }
    )
    logit = -2 - 0.8 * np.log(X["amount"] / 3000) + 0.3 * X["margin"] + 0.5 * X["score"]
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).to_numpy().astype(int)
    params = {"C": 1.0, "log_amounts": log_amounts}
    model = build_model(directions_schema(), "logreg", params, seed=0).fit(X, y)
    names = model.named_steps["preprocess"].get_feature_names_out()
    classifier = model.named_steps["classifier"]
    signs = dict(zip(names, classifier.monotonic_cst, strict=False))
    assert signs == {"amount": 1, "margin": -1, "score": 0}
    coef = dict(zip(names, classifier.coef_[0], strict=True))
    assert coef["amount"] == 0.0 and coef["margin"] == 0.0
    assert coef["score"] > 0.3
    assert {n for n in names if n.startswith("grade")} <= set(names[len(signs) :])
