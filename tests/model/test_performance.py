"""Test-split performance: ranking, calibration, and a decision worth more than approving all."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

from loanops.evaluate import expected_calibration_error, expected_cost
from tests.model.fitting import COSTS, Fitted


def test_test_auc_is_above_the_floor(lending_club_model: Fitted) -> None:
    test = lending_club_model.splits.test
    assert roc_auc_score(test.y, lending_club_model.model.predict_pd(test.X)) > 0.68


def test_mean_pd_is_close_to_the_observed_default_rate(lending_club_model: Fitted) -> None:
    test = lending_club_model.splits.test
    observed = test.y.mean()
    standard_error = math.sqrt(observed * (1 - observed) / len(test))
    mean_pd = lending_club_model.model.predict_pd(test.X).mean()
    assert abs(mean_pd - observed) < 3 * standard_error


def test_calibration_error_is_under_the_promotion_ceiling(lending_club_model: Fitted) -> None:
    test = lending_club_model.splits.test
    assert expected_calibration_error(test.y, lending_club_model.model.predict_pd(test.X)) < 0.05


def test_decisions_cost_less_than_approving_or_declining_everyone(
    lending_club_model: Fitted,
) -> None:
    test = lending_club_model.splits.test
    p = lending_club_model.model.predict_pd(test.X)
    cost = expected_cost(test.y, p, lending_club_model.model.threshold, COSTS)
    approve_all = expected_cost(test.y, p, np.inf, COSTS)
    decline_all = expected_cost(test.y, p, -np.inf, COSTS)
    assert cost < min(approve_all, decline_all)


def test_threshold_declines_a_minority(lending_club_model: Fitted) -> None:
    p = lending_club_model.model.predict_pd(lending_club_model.splits.test.X)
    declined = np.mean(p >= lending_club_model.model.threshold)
    assert 0 < declined < 0.5
