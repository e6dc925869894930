"""Minimum functionality: obviously safe applicants score lower than obviously risky ones."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from tests.factories import (
    applicants_frame,
    lending_club_applicant,
    risky_applicant,
    safe_applicant,
)
from tests.model.fitting import Fitted

# One sub-grade per grade, each at its median rate in the 2016Q1 extract.
GRADE_LADDER = [
    ("A3", 6.97),
    ("B3", 9.75),
    ("C3", 13.67),
    ("D3", 18.25),
    ("E3", 21.18),
    ("F3", 24.99),
    ("G3", 28.34),
]


def test_clearly_safe_applicant_scores_lower_than_clearly_risky_one(
    lending_club_model: Fitted,
) -> None:
    safe, risky = lending_club_model.score(applicants_frame(safe_applicant(), risky_applicant()))
    observed_rate = lending_club_model.splits.test.y.mean()
    assert safe < observed_rate < risky
    assert risky > 10 * safe


def test_clearly_safe_applicant_is_approved(lending_club_model: Fitted) -> None:
    [safe] = lending_club_model.score(applicants_frame(safe_applicant()))
    assert safe < lending_club_model.model.threshold


def test_best_sub_grade_scores_lower_than_worst_all_else_equal(
    lending_club_model: Fitted,
) -> None:
    best, worst = lending_club_model.score(
        applicants_frame(
            lending_club_applicant(sub_grade="A1", int_rate=5.32),
            lending_club_applicant(sub_grade="G5", int_rate=28.99),
        )
    )
    assert best < worst


def test_pd_rises_with_grade_all_else_equal(lending_club_model: Fitted) -> None:
    ladder = applicants_frame(
        *(lending_club_applicant(sub_grade=grade, int_rate=rate) for grade, rate in GRADE_LADDER)
    )
    pds = lending_club_model.score(ladder)
    assert pds[0] == pds.min() and pds[-1] == pds.max()
    assert spearmanr(np.arange(len(pds)), pds).statistic >= 0.8


def test_pds_are_probabilities(lending_club_model: Fitted) -> None:
    pds = lending_club_model.score(applicants_frame(safe_applicant(), risky_applicant()))
    assert ((pds > 0) & (pds < 1)).all()
