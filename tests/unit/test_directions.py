"""The finite-difference direction test: steps, moves toward risk inside the range, and effects."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from loanops.directions import direction_effects, step_for, toward_risk
from loanops.schema import Feature, FeatureSchema, Target

UTIL = Feature(
    name="util", kind="float", minimum=0, maximum=150, description="u", risk="increasing"
)
INCOME = Feature(name="income", kind="float", minimum=0, description="i", risk="decreasing")
DELINQ = Feature(
    name="delinq", kind="int", minimum=0, maximum=5, description="d", risk="increasing"
)
TENURE = Feature(name="tenure", kind="float", description="no direction")
SCHEMA = FeatureSchema(
    name="directions",
    target=Target(name="y", positive=1, negative=0),
    features=(UTIL, INCOME, DELINQ, TENURE),
)


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "util": [10.0, 80.0, 145.0, np.nan],
            "income": [20_000.0, 50_000.0, 90_000.0, 150_000.0],
            "delinq": np.array([0, 0, 1, 5], dtype=np.int64),
            "tenure": [1.0, 2.0, 3.0, 4.0],
        }
    )


def logistic_pd(X: pd.DataFrame) -> np.ndarray:
    """A PD that rises with utilisation and income, and ignores delinquencies."""
    logit = -3 + 0.02 * X["util"].fillna(50) + 0.00001 * X["income"]
    return np.asarray(1 / (1 + np.exp(-logit)))


def test_the_step_is_a_standard_deviation_and_whole_for_counts() -> None:
    X = frame()
    assert step_for(UTIL, X["util"]) == pytest.approx(X["util"].std())
    assert step_for(DELINQ, X["delinq"]) == math.ceil(X["delinq"].std()) == 3
    assert step_for(DELINQ, pd.Series([0, 0, 0])) == 1  # no spread: one whole unit
    assert step_for(UTIL, pd.Series([np.nan, np.nan])) == 1.0


def test_moves_go_toward_risk_stay_in_range_and_leave_missing_values_alone() -> None:
    X = frame()
    up = toward_risk(UTIL, X["util"], 20.0)
    assert up.iloc[:3].tolist() == [30.0, 100.0, 150.0] and np.isnan(up.iloc[3])
    assert toward_risk(INCOME, X["income"], 30_000.0).tolist() == [0.0, 20_000, 60_000, 120_000]
    counts = toward_risk(DELINQ, X["delinq"], 3.0)
    assert counts.tolist() == [3, 3, 4, 5] and counts.dtype == np.int64
    with pytest.raises(ValueError, match="'tenure' declares no direction"):
        toward_risk(TENURE, X["tenure"], 1.0)


def test_effects_name_each_declared_feature_and_the_sign_of_its_mean_pd_change() -> None:
    effects = {e.feature: e for e in direction_effects(logistic_pd, frame(), SCHEMA)}
    assert list(effects) == ["util", "income", "delinq"]  # schema order, declared ones only
    assert effects["util"].mean_change > 0  # obeys
    assert effects["income"].mean_change < 0  # PD falls as income falls: contradicts
    assert effects["delinq"].mean_change == 0.0  # ignored: flat is no contradiction
    assert effects["income"].moved == "falls" and effects["util"].moved == "rises"
    assert {e.rows for e in effects.values()} == {4}


def test_no_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one row"):
        direction_effects(logistic_pd, frame().iloc[:0], SCHEMA)
