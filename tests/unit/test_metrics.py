"""Metrics and the cost-minimising threshold, checked against brute force and reference code."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
from scipy.stats import ks_2samp
from sklearn.metrics import average_precision_score, roc_auc_score

from loanops.evaluate import (
    CostMatrix,
    Evaluation,
    bootstrap_auc_interval,
    choose_threshold,
    evaluate,
    expected_calibration_error,
    expected_cost,
    ks_separation,
)
from tests.factories import calibrated_scores

COSTS = CostMatrix(false_approve=5.0, false_decline=1.0)


def brute_force_threshold(y: np.ndarray, p: np.ndarray, costs: CostMatrix) -> tuple[float, float]:
    """Evaluate every expressible threshold; among the cheapest, the one declining fewest."""
    candidates = np.append(np.unique(p), np.nextafter(p.max(), np.inf))
    cost = np.array([expected_cost(y, p, t, costs) for t in candidates])
    cheapest = np.flatnonzero(np.isclose(cost, cost.min(), rtol=0, atol=1e-12))
    return float(candidates[cheapest.max()]), float(cost.min())


def random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A small labelled sample whose scores often tie (rounded to one or two decimals)."""
    rows = int(rng.integers(1, 60))
    p = np.round(rng.random(rows), int(rng.integers(1, 3)))
    y = (rng.random(rows) < rng.uniform(0, 1) * (0.5 + p)).astype(np.int64)
    return y, p


# --- expected_cost ----------------------------------------------------------------------------


def test_expected_cost_by_hand() -> None:
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.8, 0.2, 0.1])
    # Declines 0.9 (a default, avoided) and 0.8 (a repayer, lost); approves the 0.2 default.
    assert expected_cost(y, p, 0.5, COSTS) == pytest.approx((5 + 1) / 4)


def test_expected_cost_declines_scores_at_the_threshold() -> None:
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.8, 0.2, 0.1])
    assert expected_cost(y, p, 0.8, COSTS) == expected_cost(y, p, 0.5, COSTS)
    assert expected_cost(y, p, 0.0, COSTS) == pytest.approx(2 * 1 / 4)  # decline everyone
    assert expected_cost(y, p, 1.5, COSTS) == pytest.approx(2 * 5 / 4)  # approve everyone


# --- choose_threshold -------------------------------------------------------------------------


def test_choose_threshold_matches_brute_force_on_random_samples() -> None:
    rng = np.random.default_rng(20240601)
    for _ in range(300):
        y, p = random_case(rng)
        costs = CostMatrix(float(rng.integers(1, 10)), float(rng.integers(1, 10)))
        expected, cheapest = brute_force_threshold(y, p, costs)
        chosen = choose_threshold(y, p, costs)
        assert expected_cost(y, p, chosen, costs) == pytest.approx(cheapest, abs=1e-12)
        assert chosen == expected, (y.tolist(), p.tolist(), costs)


def test_choose_threshold_reaches_the_minimum_cost_with_fractional_costs() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        y, p = random_case(rng)
        costs = CostMatrix(float(rng.uniform(0.1, 10)), float(rng.uniform(0.1, 10)))
        _, cheapest = brute_force_threshold(y, p, costs)
        chosen = choose_threshold(y, p, costs)
        assert expected_cost(y, p, chosen, costs) == pytest.approx(cheapest, rel=1e-9)
        assert chosen in set(p) or chosen > p.max()


def test_choose_threshold_declines_nobody_when_nobody_defaults() -> None:
    p = np.array([0.3, 0.9, 0.1, 1.0])
    threshold = choose_threshold(np.zeros(4, dtype=np.int64), p, COSTS)
    assert threshold > p.max()
    assert threshold == np.nextafter(1.0, np.inf)
    assert not (p >= threshold).any()


def test_choose_threshold_declines_nobody_when_every_cut_costs_more() -> None:
    p = np.array([0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    # The only default scores highest: declining just that loan is free.
    on_top = np.array([1, 0, 0, 0, 0, 0])
    assert choose_threshold(on_top, p, CostMatrix(1.0, 1.0)) == 0.6
    # Below two repayers, catching it costs 2 while approving everyone costs 1.
    hidden = np.array([0, 0, 1, 0, 0, 0])
    threshold = choose_threshold(hidden, p, CostMatrix(1.0, 1.0))
    assert threshold > p.max()
    assert expected_cost(hidden, p, threshold, CostMatrix(1.0, 1.0)) == pytest.approx(1 / 6)


def test_choose_threshold_cannot_split_tied_scores() -> None:
    y = np.array([1, 1, 0, 0])
    p = np.full(4, 0.5)
    # Only "decline all" (cost 2 x 1) or "decline nobody" (cost 2 x 5) can be expressed.
    assert choose_threshold(y, p, COSTS) == 0.5
    assert choose_threshold(y, p, CostMatrix(1.0, 5.0)) > 0.5


def test_choose_threshold_breaks_cost_ties_towards_fewer_declines() -> None:
    y = np.array([0, 1])
    p = np.array([0.9, 0.1])
    # Declining nobody and declining everyone both cost 1: declining nobody wins.
    assert choose_threshold(y, p, CostMatrix(1.0, 1.0)) == np.nextafter(0.9, np.inf)
    y = np.array([1, 0, 1, 0])
    p = np.array([0.8, 0.6, 0.4, 0.2])
    # Declining the top one or the top three both cost 2: the top one wins.
    assert choose_threshold(y, p, CostMatrix(1.0, 1.0)) == 0.8


def test_choose_threshold_is_independent_of_row_order() -> None:
    rng = np.random.default_rng(3)
    y, p = calibrated_scores(2_000, seed=3)
    order = rng.permutation(len(y))
    assert choose_threshold(y, p, COSTS) == choose_threshold(y[order], p[order], COSTS)


def test_choose_threshold_approaches_the_bayes_threshold_for_calibrated_scores() -> None:
    y, p = calibrated_scores(200_000, seed=11, low=0.0, high=0.5)
    assert choose_threshold(y, p, COSTS) == pytest.approx(COSTS.bayes_threshold, abs=0.02)


# --- CostMatrix -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("false_approve", "false_decline", "threshold"),
    [(5.0, 1.0, 1 / 6), (1.0, 1.0, 0.5), (1.0, 3.0, 0.75), (9.0, 1.0, 0.1)],
)
def test_bayes_threshold(false_approve: float, false_decline: float, threshold: float) -> None:
    assert CostMatrix(false_approve, false_decline).bayes_threshold == pytest.approx(threshold)


def test_bayes_threshold_is_where_declining_and_approving_cost_the_same() -> None:
    t = COSTS.bayes_threshold
    assert t * COSTS.false_approve == pytest.approx((1 - t) * COSTS.false_decline)


# --- ks_separation -----------------------------------------------------------------------------


@pytest.mark.parametrize("decimals", [None, 2], ids=["continuous", "tied"])
def test_ks_separation_matches_scipy_two_sample_ks(decimals: int | None) -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        rows = int(rng.integers(20, 400))
        y = (rng.random(rows) < 0.3).astype(np.int64)
        y[:2] = [0, 1]
        p = rng.normal(size=rows) + rng.uniform(0.2, 2) * y
        if decimals is not None:
            p = np.round(p, decimals)
        reference = ks_2samp(p[y == 0], p[y == 1], alternative="greater").statistic
        assert ks_separation(y, p) == pytest.approx(reference, abs=1e-12)


def test_ks_separation_equals_the_two_sided_statistic_when_defaults_score_higher() -> None:
    y, p = calibrated_scores(5_000, seed=9)
    two_sided = ks_2samp(p[y == 1], p[y == 0]).statistic
    assert ks_separation(y, p) == pytest.approx(two_sided, abs=1e-12)


def test_ks_separation_of_perfect_and_useless_scores() -> None:
    y = np.array([0, 0, 1, 1])
    assert ks_separation(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert ks_separation(y, np.full(4, 0.5)) == 0.0


# --- expected_calibration_error ---------------------------------------------------------------


def test_ece_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.6, 0.9])
    # Two bins: mean p 0.15 vs rate 0 and mean p 0.75 vs rate 1.
    assert expected_calibration_error(y, p, bins=2) == pytest.approx((2 * 0.15 + 2 * 0.25) / 4)


def test_ece_with_fewer_rows_than_bins_compares_each_row() -> None:
    y = np.array([0, 1, 0])
    p = np.array([0.2, 0.7, 0.4])
    assert expected_calibration_error(y, p) == pytest.approx(np.mean(np.abs(p - y)))


def test_ece_of_perfectly_calibrated_scores_is_near_zero() -> None:
    y, p = calibrated_scores(200_000, seed=1)
    assert expected_calibration_error(y, p) < 0.005


@pytest.mark.parametrize("shift", [0.05, 0.1, -0.005])
def test_ece_of_shifted_scores_is_the_shift(shift: float) -> None:
    y, p = calibrated_scores(200_000, seed=1, low=0.02, high=0.5)
    assert expected_calibration_error(y, p + shift) == pytest.approx(abs(shift), abs=0.004)


def test_ece_ignores_ranking_within_a_bin_but_not_overall_level() -> None:
    y, p = calibrated_scores(50_000, seed=2)
    assert expected_calibration_error(y, p * 0.5) > 0.05
    assert expected_calibration_error(y, p) < 0.01


# --- bootstrap_auc_interval -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_interval_contains_the_point_auc(seed: int) -> None:
    y, p = calibrated_scores(1_000, seed=seed)
    lo, hi = bootstrap_auc_interval(y, p, samples=200, seed=seed)
    assert lo < roc_auc_score(y, p) < hi


def test_bootstrap_interval_narrows_with_more_data() -> None:
    y_small, p_small = calibrated_scores(400, seed=4)
    y_large, p_large = calibrated_scores(4_000, seed=4)
    lo_small, hi_small = bootstrap_auc_interval(y_small, p_small, samples=200, seed=0)
    lo_large, hi_large = bootstrap_auc_interval(y_large, p_large, samples=200, seed=0)
    # Ten times the rows: about a third of the width.
    assert hi_large - lo_large < 0.5 * (hi_small - lo_small)


def test_bootstrap_interval_narrows_with_a_lower_level_and_is_seeded() -> None:
    y, p = calibrated_scores(1_000, seed=5)
    wide = bootstrap_auc_interval(y, p, samples=200, seed=3)
    narrow = bootstrap_auc_interval(y, p, samples=200, seed=3, level=0.5)
    assert wide == bootstrap_auc_interval(y, p, samples=200, seed=3)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_bootstrap_interval_survives_resamples_with_one_class() -> None:
    y = np.zeros(30, dtype=np.int64)
    y[0] = 1  # a third of the resamples miss the only default
    p = np.linspace(0.01, 0.3, 30)[::-1].copy()
    lo, hi = bootstrap_auc_interval(y, p, samples=200, seed=0)
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)


# --- evaluate ---------------------------------------------------------------------------------


def test_evaluate_reports_every_metric_consistently() -> None:
    y, p = calibrated_scores(5_000, seed=8)
    threshold = choose_threshold(y, p, COSTS)
    result = evaluate(y, p, threshold=threshold, costs=COSTS, bootstrap_samples=200, seed=0)
    assert result.rows == 5_000
    assert result.roc_auc == pytest.approx(roc_auc_score(y, p))
    assert result.roc_auc_lo < result.roc_auc < result.roc_auc_hi
    assert (result.roc_auc_lo, result.roc_auc_hi) == bootstrap_auc_interval(
        y, p, samples=200, seed=0
    )
    assert result.pr_auc == pytest.approx(average_precision_score(y, p))
    assert result.ks == ks_separation(y, p)
    assert result.brier == pytest.approx(np.mean((p - y) ** 2))
    assert result.log_loss == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert result.ece == expected_calibration_error(y, p)
    assert result.threshold == threshold
    assert result.cost_per_loan == expected_cost(y, p, threshold, COSTS)
    assert result.approval_rate == pytest.approx(np.mean(p < threshold))
    assert result.default_rate == pytest.approx(y.mean())
    assert result.mean_pd == pytest.approx(p.mean())
    assert 0 < result.approval_rate < 1


def test_evaluate_log_loss_stays_finite_for_certain_wrong_scores() -> None:
    y = np.array([0, 1, 0, 1])
    p = np.array([1.0, 0.0, 0.2, 0.8])
    result = evaluate(y, p, threshold=0.5, costs=COSTS, bootstrap_samples=100, seed=0)
    assert np.isfinite(result.log_loss) and result.log_loss > 10


def test_as_metrics_prefixes_every_field_and_gives_floats() -> None:
    y, p = calibrated_scores(500, seed=1)
    result = evaluate(y, p, threshold=0.2, costs=COSTS, bootstrap_samples=100, seed=0)
    metrics = result.as_metrics()
    assert set(metrics) == {f"test_{f.name}" for f in fields(Evaluation)}
    assert all(type(value) is float for value in metrics.values())
    assert metrics["test_rows"] == 500.0
    assert set(result.as_metrics("validation_")) == {
        f"validation_{f.name}" for f in fields(Evaluation)
    }
