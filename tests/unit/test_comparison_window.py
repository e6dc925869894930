"""The comparison's read of the decision log: a window's decisions with outcomes joined in.

On a real SQLite decision log: every decision of the window comes back, with ``defaulted`` where
an outcome is recorded and missing where none is yet, and only the segments' inputs.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from sqlalchemy import Engine

from loanops.comparison.paired import NoPairedDecisionsError, pairs_of
from loanops.comparison.window import read_paired, segment_inputs
from loanops.data import synthetic as syn
from loanops.decisions.write import write_decisions
from loanops.outcomes import Outcome, record_outcomes
from tests.factories import OUTCOMES_DECIDED_FROM, outcome_decision, request_id_of
from tests.paired_decisions import paired_decision


def test_the_segments_inputs_are_read_by_their_features_kinds() -> None:
    # The protected group is no model input: never logged, so not read.
    assert segment_inputs(syn.SCHEMA) == {"annual_inc": "number", "grade": "text", "term": "text"}


def test_each_decision_of_the_window_comes_with_its_outcome_if_any(engine: Engine) -> None:
    write_decisions(engine, [outcome_decision(i) for i in range(5)])
    record_outcomes(
        engine,
        [
            Outcome(request_id=request_id_of(1), defaulted=True),
            Outcome(request_id=request_id_of(2), defaulted=False),
            Outcome(request_id=request_id_of(4), defaulted=True),  # outside the window
        ],
    )

    window = read_paired(
        engine,
        OUTCOMES_DECIDED_FROM,
        OUTCOMES_DECIDED_FROM + timedelta(hours=4),
        model_name="loan-default",
        inputs={"term": "text"},
    )

    assert window["request_id"].tolist() == [request_id_of(i) for i in range(4)]
    assert window["defaulted"].tolist() == [pd.NA, True, False, pd.NA]
    assert window["term"].tolist() == ["36"] * 4
    assert "reasons" not in window and "loan_amnt" not in window


def test_paired_records_read_back_as_the_comparisons_pairs(engine: Engine) -> None:
    # Three paired decisions, one the challenger's arm, and two no challenger scored.
    write_decisions(
        engine,
        [paired_decision(i, arm="challenger" if i == 1 else "champion") for i in range(3)]
        + [outcome_decision(10 + i) for i in range(2)],
    )
    record_outcomes(engine, [Outcome(request_id=request_id_of(0), defaulted=True)])

    window = read_paired(engine, None, None, model_name="loan-default", inputs={})
    pairs = pairs_of(window)

    assert (pairs.rows, pairs.challenger_version, pairs.champion_versions) == (3, "4", ("3",))
    assert pairs.frame["arm"].tolist() == ["champion", "challenger", "champion"]
    assert pairs.frame["defaulted"].tolist() == [True, pd.NA, pd.NA]
    expected = [paired_decision(i).challenger_probability for i in range(3)]
    assert pairs.challenger_pd.tolist() == expected


def test_a_log_no_challenger_scored_has_no_pairs(engine: Engine) -> None:
    write_decisions(engine, [outcome_decision(i) for i in range(3)])

    window = read_paired(engine, None, None, model_name="loan-default", inputs={})

    with pytest.raises(NoPairedDecisionsError, match="none of the 3 decisions"):
        pairs_of(window)
