"""Adverse impact ratios from known approvals: the ratio, its interval, thin and missing groups."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from loanops.fairness import adverse_impact
from loanops.promotion import decide
from loanops.schema import Segment
from tests.factories import gate_policy, gate_scores

SEX = Segment(name="sex", column="sex", use="fair_lending")


def approvals(rates: dict[str, tuple[int, int]]) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows per group and how many of them are approved, as a frame and a 0/1 approval array."""
    groups, approved = [], []
    for group, (rows, yes) in rates.items():
        groups += [group] * rows
        approved += [1] * yes + [0] * (rows - yes)
    return pd.DataFrame({"sex": groups}), np.array(approved)


def test_the_ratio_is_the_least_favoured_groups_approval_rate_over_the_most_favoured() -> None:
    frame, approved = approvals({"f": (400, 280), "m": (600, 540), "x": (10, 1)})
    (impact,), unchecked = adverse_impact(frame, approved, [SEX], min_group_rows=30)

    assert unchecked == ()
    assert impact.ratio == pytest.approx(0.70 / 0.90)
    assert (impact.least_favoured, impact.most_favoured) == ("f", "m")
    assert impact.left_out == ("x",)  # 10 rows: reported, not judged
    assert {g.value: g.rows for g in impact.groups} == {"f": 400, "m": 600, "x": 10}
    assert impact.low < impact.ratio < impact.high
    assert impact.high - impact.low < 0.15


def test_the_interval_narrows_as_the_groups_grow() -> None:
    small, approved_small = approvals({"f": (100, 70), "m": (100, 90)})
    large, approved_large = approvals({"f": (10_000, 7_000), "m": (10_000, 9_000)})
    (a,), _ = adverse_impact(small, approved_small, [SEX], min_group_rows=30)
    (b,), _ = adverse_impact(large, approved_large, [SEX], min_group_rows=30)
    assert a.ratio == pytest.approx(b.ratio)
    assert (b.high - b.low) < (a.high - a.low) / 5


def test_a_missing_column_blocks_and_a_thin_segment_is_only_noted() -> None:
    frame, approved = approvals({"f": (20, 10), "m": (600, 540)})
    age = Segment(name="age band", column="age", use="fair_lending", edges=(0, 25, 200))
    judged, unchecked = adverse_impact(frame, approved, [SEX, age], min_group_rows=30)

    assert judged == ()
    by_name = {u.segment: u for u in unchecked}
    assert not by_name["sex"].blocking
    assert "fewer than two groups hold 30 gate loans" in by_name["sex"].why
    assert by_name["age band"].blocking
    assert "the gate data has no column 'age'" in by_name["age band"].why

    refused = decide(replace(gate_scores(), unchecked=unchecked), None, gate_policy())
    assert not refused.promote
    assert refused.reasons == ("adverse impact: age band " + by_name["age band"].why,)
