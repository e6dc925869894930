"""Direction: more debt burden does not lower the probability of default, on average.

lending_club has no debt-to-income column, so its burden checks move the nearest features across
the whole test split. The synthetic dataset does carry `dti`, so a model trained on it is checked
directly. Each check compares the mean PD of the same loans before and after the change.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from tests.model.fitting import Fitted

Change = Callable[[pd.DataFrame], pd.DataFrame]


def mean_pd_change(fitted: Fitted, change: Change) -> float:
    raw = fitted.raw_test
    return float(fitted.score(change(raw.copy())).mean() - fitted.score(raw).mean())


def more_inquiries(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(
        inq_last_6mths=frame["inq_last_6mths"] + 2, inq_last_12m=frame["inq_last_12m"] + 2
    )


def higher_revolving_utilisation(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(revol_util=np.minimum(frame["revol_util"] + 20, 300))


def more_past_delinquencies(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(delinq_2yrs=frame["delinq_2yrs"] + 2)


def halved_income(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(annual_inc=frame["annual_inc"] / 2)


def test_more_credit_inquiries_raise_mean_pd(lending_club_model: Fitted) -> None:
    assert mean_pd_change(lending_club_model, more_inquiries) > 0


@pytest.mark.parametrize(
    "change",
    [higher_revolving_utilisation, more_past_delinquencies, halved_income],
    ids=["revol_util+20", "delinq_2yrs+2", "annual_inc/2"],
)
def test_more_burden_does_not_lower_mean_pd_on_lending_club(
    lending_club_model: Fitted, change: Change
) -> None:
    # With sub-grade and rate held fixed, an unconstrained logistic regression learns a PD that
    # falls slightly as these burdens rise (the grade already prices them); every family is
    # bound by the schema's risk directions, so the PD may stay flat but must not fall.
    assert mean_pd_change(lending_club_model, change) >= 0


def test_higher_dti_does_not_lower_mean_pd(synthetic_model: Fitted) -> None:
    change = mean_pd_change(
        synthetic_model, lambda frame: frame.assign(dti=np.minimum(frame["dti"] + 10, 100))
    )
    assert change > 0


@pytest.mark.parametrize(
    "change",
    [
        halved_income,
        lambda f: f.assign(revol_util=np.minimum(f["revol_util"] + 20, 150)),
        lambda f: f.assign(fico_range_low=np.maximum(f["fico_range_low"] - 40, 660)),
    ],
    ids=["annual_inc/2", "revol_util+20", "fico-40"],
)
def test_other_burdens_raise_mean_pd_on_synthetic(synthetic_model: Fitted, change: Change) -> None:
    assert mean_pd_change(synthetic_model, change) > 0
