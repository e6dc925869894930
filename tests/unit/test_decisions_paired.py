"""Paired decision records on SQLite: the record's rules, storage, spill files and old segments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from loanops.decisions.spill import load_spill, write_spill
from tests.factories import make_decision
from tests.paired_decisions import (
    check_old_segments_read_as_champion,
    check_paired_round_trip,
    paired_decision,
)


def test_paired_decisions_round_trip(engine: Engine) -> None:
    check_paired_round_trip(engine)


def test_segments_without_paired_columns_read_as_the_champion(engine: Engine) -> None:
    check_old_segments_read_as_champion(engine)


def test_a_paired_decision_survives_a_spill_file(tmp_path: Path) -> None:
    decisions = [paired_decision(0, arm="challenger"), make_decision(1)]
    assert load_spill(write_spill(tmp_path, decisions)) == decisions


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"arm": "both"}, "arm must be one of"),
        ({"arm": "challenger"}, "needs its challenger_version"),
        ({"challenger_probability": 0.3}, "need the challenger_version"),
        (
            {"challenger_version": "4", "challenger_threshold": 0.2, "challenger_reasons": []},
            "challenger_decision must be one of",
        ),
    ],
)
def test_an_incomplete_challenger_is_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_decision(0, **overrides)


def test_a_challenger_probability_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match="challenger_probability must lie in"):
        paired_decision(0, challenger_probability=1.5)
