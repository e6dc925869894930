"""The promotion gate as a decision table: floors, the champion comparison, and its reasons."""

from __future__ import annotations

from dataclasses import replace

import pytest

from loanops.directions import DirectionEffect
from loanops.promotion import Comparison, GateScores, decide, refuse
from loanops.schema import RiskDirection
from tests.factories import gate_policy, gate_scores

POLICY = gate_policy()  # AUC floor 0.65, ECE ceiling 0.05, AUC tolerance 0.01, z 3, 30 defaults


def champion(roc_auc: float, ece: float = 0.02) -> GateScores:
    return gate_scores(roc_auc=roc_auc, ece=ece, version="1")


SIZE_OK = "gate data holds 100 defaults, at least the 30 needed"
FLOOR_AUC_OK = "AUC 0.7000 >= floor 0.6500"
FLOOR_ECE_OK = "calibration error 0.0200 <= ceiling 0.0500"
CALIBRATION_OK = "mean PD 0.0500 vs default rate 0.0500, +0.0 standard errors, within ±3"
CHECKS_OK = (SIZE_OK, FLOOR_AUC_OK, FLOOR_ECE_OK, CALIBRATION_OK)

DECISION_TABLE = [
    # id, challenger (auc, ece), champion auc or None, promote, reasons
    ("no-champion-clears-floors", (0.70, 0.02), None, True,
     (*CHECKS_OK, "no champion: the floors alone decide")),
    ("no-champion-auc-below-floor", (0.60, 0.02), None, False,
     ("AUC 0.6000 < floor 0.6500",)),
    ("no-champion-ece-above-ceiling", (0.70, 0.08), None, False,
     ("calibration error 0.0800 > ceiling 0.0500",)),
    ("better-than-champion", (0.70, 0.02), 0.68, True,
     (*CHECKS_OK, "AUC change +0.0200 vs champion v1 within tolerance -0.0100")),
    ("equal-to-champion", (0.70, 0.02), 0.70, True,
     (*CHECKS_OK, "AUC change +0.0000 vs champion v1 within tolerance -0.0100")),
    ("slightly-worse-within-tolerance", (0.70, 0.02), 0.705, True,
     (*CHECKS_OK, "AUC change -0.0050 vs champion v1 within tolerance -0.0100")),
    ("regression-beyond-tolerance", (0.70, 0.02), 0.75, False,
     ("AUC change -0.0500 vs champion v1 beyond tolerance -0.0100",)),
    ("floor-failure-despite-beating-champion", (0.60, 0.02), 0.55, False,
     ("AUC 0.6000 < floor 0.6500",)),
    ("every-check-fails-and-is-listed", (0.60, 0.08), 0.75, False,
     ("AUC 0.6000 < floor 0.6500", "calibration error 0.0800 > ceiling 0.0500",
      "AUC change -0.1500 vs champion v1 beyond tolerance -0.0100")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("challenger", "champion_auc", "promote", "reasons"),
    [case[1:] for case in DECISION_TABLE],
    ids=[case[0] for case in DECISION_TABLE],
)
def test_gate_decision_table(
    challenger: tuple[float, float],
    champion_auc: float | None,
    promote: bool,
    reasons: tuple[str, ...],
) -> None:
    incumbent = None if champion_auc is None else champion(champion_auc)
    decision = decide(gate_scores(*challenger), incumbent, POLICY)
    assert decision.promote is promote
    assert decision.reasons == reasons
    assert decision.outcome == ("promoted" if promote else "rejected")
    assert decision.summary == "; ".join(reasons)


def test_decision_carries_its_inputs() -> None:
    challenger, incumbent = gate_scores(0.7), champion(0.69)
    decision = decide(challenger, incumbent, POLICY)
    assert decision.promote
    assert (decision.challenger, decision.champion, decision.policy) == (
        challenger,
        incumbent,
        POLICY,
    )
    assert decision.champion_version == "1"


def test_exact_floor_and_ceiling_pass() -> None:
    decision = decide(gate_scores(roc_auc=0.65, ece=0.05), None, POLICY)
    assert decision.promote
    assert decision.reasons[1:3] == (
        "AUC 0.6500 >= floor 0.6500",
        "calibration error 0.0500 <= ceiling 0.0500",
    )


def test_just_past_the_floor_or_ceiling_fails() -> None:
    assert not decide(gate_scores(roc_auc=0.6499), None, POLICY).promote
    assert not decide(gate_scores(ece=0.0501), None, POLICY).promote


def test_a_drop_of_exactly_the_tolerance_passes_when_exactly_representable() -> None:
    # Binary fractions: the subtraction is exact, so this checks the comparison alone.
    policy = gate_policy(min_auc=0.5, max_ece=0.0625, auc_tolerance=0.125)
    decision = decide(gate_scores(roc_auc=0.75, ece=0.0625), champion(0.875), policy)
    assert decision.promote
    assert decision.reasons[-1] == "AUC change -0.1250 vs champion v1 within tolerance -0.1250"


def test_a_drop_just_past_the_tolerance_fails() -> None:
    assert not decide(gate_scores(roc_auc=0.7399), champion(0.75), POLICY).promote


@pytest.mark.parametrize(("challenger_auc", "champion_auc"), [(0.74, 0.75), (0.70, 0.71)])
def test_a_drop_of_exactly_the_decimal_tolerance_passes(
    challenger_auc: float, champion_auc: float
) -> None:
    decision = decide(gate_scores(roc_auc=challenger_auc), champion(champion_auc), POLICY)
    assert decision.promote, decision.summary


def test_the_champions_own_scores_do_not_gate_the_challenger() -> None:
    weak_champion = champion(0.55, ece=0.3)
    assert decide(gate_scores(0.70), weak_champion, POLICY).promote


def test_zero_tolerance_rejects_any_regression() -> None:
    policy = gate_policy(auc_tolerance=0.0)
    assert decide(gate_scores(0.75), champion(0.75), policy).promote
    assert not decide(gate_scores(0.7499), champion(0.75), policy).promote


def test_too_few_defaults_in_the_gate_data_rejects() -> None:
    decision = decide(gate_scores(positives=12), None, POLICY)
    assert not decision.promote
    assert decision.reasons == ("gate data holds 12 defaults, fewer than the 30 needed",)


def test_a_model_whose_mean_pd_is_far_from_the_default_rate_is_rejected() -> None:
    # ECE alone would pass: scaling every PD by 1.5 keeps it under the 0.05 ceiling.
    inflated = gate_scores(ece=0.035, mean_pd=0.075, default_rate=0.045, rows=2000)
    decision = decide(inflated, None, POLICY)
    assert not decision.promote
    assert decision.reasons == (
        "mean PD 0.0750 vs default rate 0.0450, +5.1 standard errors, beyond ±3",
    )


def test_the_challenger_must_also_hold_up_on_the_champions_own_test_split() -> None:
    on_champion_data = Comparison("the champion's test split", gate_scores(0.70), champion(0.74))
    decision = decide(gate_scores(0.75), champion(0.75), POLICY, also=[on_champion_data])
    assert not decision.promote
    assert decision.reasons == (
        "AUC change -0.0400 vs champion v1 on the champion's test split beyond tolerance -0.0100",
    )
    assert decision.comparisons == (on_champion_data,)


def test_a_refusal_keeps_the_champion_it_was_measured_against() -> None:
    decision = refuse("identical to the champion", gate_scores(), "7", POLICY)
    assert not decision.promote
    assert decision.champion_version == "7"
    assert decision.reasons == ("identical to the champion",)


def test_calibration_z_measures_the_gap_against_the_spread_the_model_predicts() -> None:
    scores = gate_scores(mean_pd=0.06, default_rate=0.05, rows=1900, pd_variance=0.04)
    assert scores.calibration_z == pytest.approx(0.01 / (0.04 / 1900) ** 0.5)


Change = tuple[str, RiskDirection, float, float]


def with_directions(scores: GateScores, *changes: Change) -> GateScores:
    """`scores` carrying direction effects (feature, risk, step, mean PD change)."""
    effects = tuple(
        DirectionEffect(feature, risk, step, change, scores.rows)
        for feature, risk, step, change in changes
    )
    return replace(scores, directions=effects)


OBEYED: tuple[Change, ...] = (
    ("revol_util", "increasing", 24.1, 0.0),
    ("annual_inc", "decreasing", 60213.0, 0.0041),
)


def test_a_model_that_obeys_every_declared_direction_is_told_so() -> None:
    decision = decide(with_directions(gate_scores(0.70), *OBEYED), None, POLICY)
    assert decision.promote
    assert decision.reasons == (
        *CHECKS_OK,
        "directions: mean PD holds within tolerance -0.0001 as each of the 2 declared features "
        "moves toward risk on 2,000 gate loans (smallest change +0.0000, revol_util)",
        "no champion: the floors alone decide",
    )


def test_a_pd_that_falls_as_a_risk_rises_is_refused_with_the_feature_named() -> None:
    violating = with_directions(
        gate_scores(0.80),
        ("revol_util", "increasing", 24.1, -0.0012),
        ("delinq_2yrs", "increasing", 1.0, 0.0003),
        ("annual_inc", "decreasing", 60213.0, -0.0009),
    )
    decision = decide(violating, champion(0.70), POLICY)
    assert not decision.promote
    assert decision.reasons == (
        "direction: PD falls as revol_util rises by 24.1 (mean -0.0012 over 2,000 gate loans); "
        "risk is declared increasing",
        "direction: PD falls as annual_inc falls by 60,213 (mean -0.0009 over 2,000 gate loans); "
        "risk is declared decreasing",
    )


@pytest.mark.parametrize(("change", "promote"), [(-0.0001, True), (-0.00011, False)])
def test_the_mean_pd_may_fall_by_the_direction_tolerance_and_no_more(
    change: float, promote: bool
) -> None:
    scores = with_directions(gate_scores(0.70), ("revol_util", "increasing", 24.1, change))
    decision = decide(scores, None, POLICY)
    assert decision.promote is promote, decision.summary
    if promote:
        assert "revol_util, the one declared feature, moves toward risk" in decision.summary


def test_a_schema_without_directions_adds_no_direction_line() -> None:
    decision = decide(gate_scores(0.70), None, POLICY)
    assert not any("direction" in reason for reason in decision.reasons)
