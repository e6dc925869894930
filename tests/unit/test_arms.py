"""The challenger's share of applicants: its size, its stability per applicant, and the key."""

from __future__ import annotations

import math

import pytest

from loanops.arms import assign_arm
from tests.factories import synthetic_applications

APPLICANTS = synthetic_applications(20_000, seed=11)


@pytest.mark.parametrize("share", [0.05, 0.3])
def test_the_challenger_share_is_within_three_standard_errors(share: float) -> None:
    arms = [assign_arm(a, share=share, seed=3) for a in APPLICANTS]
    observed = arms.count("challenger") / len(arms)
    standard_error = math.sqrt(share * (1 - share) / len(arms))
    assert abs(observed - share) < 3 * standard_error


def test_an_applicant_keeps_their_arm_however_the_application_is_ordered() -> None:
    for application in APPLICANTS[:2_000]:
        first = assign_arm(application, share=0.5, seed=3)
        reordered = dict(reversed(list(application.items())))
        assert assign_arm(reordered, share=0.5, seed=3) == first
        assert assign_arm(dict(application), share=0.5, seed=3) == first


def test_the_seed_changes_who_is_in_the_share() -> None:
    one = [assign_arm(a, share=0.5, seed=1) for a in APPLICANTS[:1_000]]
    two = [assign_arm(a, share=0.5, seed=2) for a in APPLICANTS[:1_000]]
    assert one != two


def test_a_declared_applicant_key_decides_the_arm_alone() -> None:
    arms = {
        assign_arm(a | {"member_id": "m-42"}, share=0.5, seed=3, applicant_key="member_id")
        for a in APPLICANTS[:200]
    }
    assert len(arms) == 1  # one applicant, many different applications


def test_share_zero_and_one_are_all_champion_and_all_challenger() -> None:
    assert {assign_arm(a, share=0.0, seed=3) for a in APPLICANTS[:500]} == {"champion"}
    assert {assign_arm(a, share=1.0, seed=3) for a in APPLICANTS[:500]} == {"challenger"}
    with pytest.raises(ValueError, match="share must lie"):
        assign_arm(APPLICANTS[0], share=1.5, seed=3)
