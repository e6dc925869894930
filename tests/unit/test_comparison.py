"""The compare report's core on frames whose answers are known by construction.

Swap counts, agreement, PD shift, segment approval rates and expected costs are set by how the
frame is built; the resampled AUC agrees with scikit-learn's; the paired bootstrap interval is
zero-width for a clone and excludes 0 for a challenger that ranks by the outcome.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from loanops.comparison.paired import NoPairedDecisionsError, pairs_of
from loanops.comparison.ranking import paired_auc_difference, weighted_aucs
from loanops.comparison.report import ComparisonReport, compare_pairs
from loanops.evaluate import CostMatrix
from loanops.schema import Segment

T0 = datetime(2026, 3, 30, tzinfo=UTC)
COSTS = CostMatrix(false_approve=5.0, false_decline=1.0)
TERM = Segment(name="term", column="term", use="reporting")


def paired_frame(
    champion_pd: np.ndarray,
    challenger_pd: np.ndarray,
    *,
    threshold: float = 0.5,
    challenger_threshold: float = 0.5,
    **columns: Any,
) -> pd.DataFrame:
    """Paired decisions, one an hour from T0, each model declining at or above its threshold."""
    n = len(champion_pd)
    return pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "decided_at": pd.to_datetime([T0 + timedelta(hours=i) for i in range(n)], utc=True),
            "model_version": "1",
            "threshold": threshold,
            "probability": champion_pd,
            "decision": np.where(champion_pd >= threshold, "decline", "approve"),
            "arm": "champion",
            "challenger_version": "2",
            "challenger_threshold": challenger_threshold,
            "challenger_probability": challenger_pd,
            "challenger_decision": np.where(
                challenger_pd >= challenger_threshold, "decline", "approve"
            ),
            **columns,
        }
    )


def four_cells() -> pd.DataFrame:
    """5 both approve, 3 only the champion approves, 2 only the challenger, 10 both decline."""
    champion = np.array([0.1] * 5 + [0.2] * 3 + [0.7] * 2 + [0.9] * 10)
    challenger = np.array([0.2] * 5 + [0.6] * 3 + [0.3] * 2 + [0.8] * 10)
    return paired_frame(champion, challenger, term=["36"] * 10 + ["60"] * 10)


def report_of(frame: pd.DataFrame, **options: Any) -> ComparisonReport:
    return compare_pairs(
        frame,
        model_name="m",
        segments=[TERM],
        costs=COSTS,
        bootstrap_samples=options.pop("bootstrap_samples", 200),
        **options,
    )


def test_the_swap_set_counts_each_cell_with_its_pds() -> None:
    report = report_of(four_cells())

    counts = {cell.cell: cell.count for cell in report.swap_set.cells}
    assert counts == {
        "both_approve": 5,
        "champion_only": 3,
        "challenger_only": 2,
        "both_decline": 10,
    }
    assert (report.swap_set.swap_in, report.swap_set.swap_out) == (2, 3)
    only_champion = report.swap_set.cell("champion_only")
    assert only_champion.share == pytest.approx(3 / 20)
    assert only_champion.champion_pd.mean == pytest.approx(0.2)
    assert only_champion.challenger_pd.p50 == pytest.approx(0.6)


def test_agreement_and_the_pd_shift() -> None:
    report = report_of(four_cells())

    assert report.agreement_rate == pytest.approx(15 / 20)
    expected_shift = (5 * 0.1 + 3 * 0.4 - 2 * 0.4 - 10 * 0.1) / 20
    assert report.pd_shift.difference.mean == pytest.approx(expected_shift)
    assert report.pd_shift.challenger_mean_pd - report.pd_shift.champion_mean_pd == (
        pytest.approx(expected_shift)
    )


def test_segment_approval_rates_of_both_models() -> None:
    rates = {
        row.value: (row.rows, row.champion_approval_rate, row.challenger_approval_rate)
        for row in report_of(four_cells()).segments
    }
    # term 36: the 5 both-approve and 3 champion-only rows, then 2 challenger-only rows.
    assert rates == {"36": (10, 0.8, 0.7), "60": (10, 0.0, 0.0)}


def test_a_segment_whose_column_the_decisions_lack_is_left_out() -> None:
    frame = four_cells().drop(columns="term")
    assert report_of(frame).segments == ()


def test_expected_costs_price_each_models_decisions_under_each_pd() -> None:
    report = report_of(four_cells())
    champion_pd = np.array([0.1] * 5 + [0.2] * 3 + [0.7] * 2 + [0.9] * 10)
    challenger_pd = np.array([0.2] * 5 + [0.6] * 3 + [0.3] * 2 + [0.8] * 10)
    champion_approves = np.array([True] * 8 + [False] * 12)

    def cost(approves: np.ndarray, pd: np.ndarray) -> float:
        return float(np.mean(np.where(approves, 5.0 * pd, 1.0 - pd)))

    champion = report.expected_cost("champion")
    assert champion.under_champion_pd == pytest.approx(cost(champion_approves, champion_pd))
    assert champion.under_challenger_pd == pytest.approx(cost(champion_approves, challenger_pd))
    challenger_approves = np.array([True] * 5 + [False] * 3 + [True] * 2 + [False] * 10)
    assert report.expected_cost("challenger").under_challenger_pd == pytest.approx(
        cost(challenger_approves, challenger_pd)
    )


def test_no_outcomes_no_outcome_metrics() -> None:
    report = report_of(four_cells())
    assert report.outcomes == ()
    assert "live_auc_change" not in report.headline_metrics()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_resampled_auc_is_scikit_learns_on_the_resampled_rows(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300), 1)  # many ties
    counts = rng.multinomial(300, np.full(300, 1 / 300), size=3)

    aucs = weighted_aucs(y, p, counts.astype(np.float64))

    for auc, count in zip(aucs, counts, strict=True):
        rows = np.repeat(np.arange(300), count)
        assert auc == pytest.approx(roc_auc_score(y[rows], p[rows]))


def test_a_clones_auc_difference_is_exactly_zero() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    p = rng.random(500)

    found = paired_auc_difference(y, p, p.copy(), samples=200, seed=0)

    assert (found.difference, found.low, found.high) == (0.0, 0.0, 0.0)
    assert found.verdict == "no difference"


def test_a_challenger_that_ranks_by_the_outcome_is_better() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 2_000)
    champion = rng.random(2_000)
    challenger = np.clip(0.3 * y + 0.7 * rng.random(2_000), 0, 1)

    found = paired_auc_difference(y, champion, challenger, samples=300, seed=0)

    assert 0 < found.low < found.difference < found.high
    assert found.verdict == "challenger better"
    assert found == paired_auc_difference(y, champion, challenger, samples=300, seed=0)


def labelled_frame(rows: int = 1_200, seed: int = 5) -> pd.DataFrame:
    """Two months of paired decisions with outcomes; the challenger's PD is the true one."""
    rng = np.random.default_rng(seed)
    truth = rng.beta(2, 8, rows)
    y = rng.random(rows) < truth
    noise = np.clip(truth + rng.normal(0, 0.15, rows), 0.001, 0.999)
    frame = paired_frame(noise, truth, threshold=0.3, challenger_threshold=0.3)
    days = np.where(np.arange(rows) < rows // 2, 0, 5)
    frame["decided_at"] = pd.Timestamp(T0) + pd.to_timedelta(days, unit="D")
    frame["defaulted"] = pd.Series(y, dtype="boolean")
    frame.loc[:9, "defaulted"] = pd.NA  # outcomes not arrived yet
    return frame


def test_outcomes_overall_and_by_vintage_month() -> None:
    frame = labelled_frame()
    report = report_of(frame, min_labels=100, min_defaults=20)

    assert [s.name for s in report.outcomes] == ["overall", "2026-03", "2026-04"]
    overall = report.outcomes[0]
    known = frame["defaulted"].notna()
    y = frame.loc[known, "defaulted"].astype(int).to_numpy()
    assert overall.labelled == len(y) == len(frame) - 10
    assert overall.champion is not None and overall.challenger is not None
    assert overall.challenger.auc == pytest.approx(
        roc_auc_score(y, frame.loc[known, "challenger_probability"])
    )
    assert overall.challenger.default_rate == pytest.approx(y.mean())
    assert len(overall.challenger.reliability) == 10
    assert sum(b.rows for b in overall.challenger.reliability) == overall.labelled
    assert overall.auc_difference is not None and overall.auc_difference.low > 0
    assert sum(s.labelled for s in report.outcomes[1:]) == overall.labelled
    assert report.headline_metrics()["live_auc_change"] == overall.auc_difference.difference


def test_a_thin_slice_says_why_it_has_no_auc() -> None:
    report = report_of(labelled_frame(rows=300), min_labels=100, min_defaults=200)

    overall = report.outcomes[0]
    assert overall.auc_difference is None and overall.challenger is not None
    assert overall.challenger.auc is None
    assert overall.note is not None and "at least 200 of each" in overall.note


def test_the_report_round_trips_through_its_json() -> None:
    report = report_of(labelled_frame(), min_labels=100, min_defaults=20)

    assert ComparisonReport.model_validate_json(report.model_dump_json()) == report
    assert len(report.headline_metrics()) <= 12


def test_no_challenger_scored_anything() -> None:
    frame = four_cells()
    for name in ("challenger_version", "challenger_probability", "challenger_decision"):
        frame[name] = None
    with pytest.raises(NoPairedDecisionsError, match="none of the 20 decisions"):
        pairs_of(frame)
    with pytest.raises(NoPairedDecisionsError, match="holds no decisions"):
        pairs_of(frame.iloc[:0])


def test_only_the_chosen_challengers_pairs_count() -> None:
    frame = four_cells()
    frame.loc[:4, "challenger_version"] = "3"
    assert pairs_of(frame, "2").rows == 15
    assert pairs_of(frame).challenger_version == "2"  # seen last
    with pytest.raises(NoPairedDecisionsError, match="challenger v9 scored none"):
        pairs_of(frame, "9")


def test_missing_columns_and_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="lack the paired columns"):
        pairs_of(four_cells().drop(columns="arm"))
    frame = four_cells()
    frame.loc[0, "challenger_decision"] = "maybe"
    with pytest.raises(ValueError, match="challenger_decision must be one of"):
        pairs_of(frame)
