"""Reading the decision log back on SQLite: windows, filters, counts and the inputs' columns."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

import loanops.outcomes  # noqa: F401  (its table is part of Base.metadata and of the migrations)
from loanops.decisions.read import META_COLUMNS, InputKind, count_decisions, read_decisions
from loanops.decisions.table import DECISIONS_TABLE, SEGMENTS_TABLE
from loanops.decisions.write import write_decisions
from tests.factories import DECIDED_FROM as T0
from tests.factories import make_decision, make_decisions


def applicant(i: int) -> dict[str, Any]:
    return dict(make_decision(i).inputs)


def test_decisions_read_back_as_written_with_inputs_expanded(engine: Engine) -> None:
    batch = make_decisions(50)
    later = make_decision(
        50,
        decided_at=datetime(2026, 11, 26, 12, 0, tzinfo=timezone(timedelta(hours=2))),  # 10:00 UTC
        reasons=[],
        source="batch",
        job_id="job-7",
        inputs=applicant(50) | {"addr_state": None},
    )
    write_decisions(engine, [later, *reversed(batch)])  # out of order on purpose

    frame = read_decisions(engine)

    assert list(frame.columns[:16]) == [
        "request_id",
        "decided_at",
        "model_name",
        "model_version",
        "threshold",
        "probability",
        "decision",
        "reasons",
        "source",
        "job_id",
        "arm",
        "challenger_version",
        "challenger_threshold",
        "challenger_probability",
        "challenger_decision",
        "challenger_reasons",
    ]
    assert list(frame.columns[16:]) == list(applicant(0))
    assert str(frame["decided_at"].dtype) == "datetime64[ns, UTC]"
    assert frame["request_id"].tolist() == [d.request_id for d in [*batch, later]]
    assert frame["decided_at"].iloc[-1] == pd.Timestamp("2026-11-26 10:00", tz="UTC")

    for decision, row in zip([*batch, later], frame.to_dict("records"), strict=True):
        assert row["decided_at"].to_pydatetime() == decision.decided_at
        assert row["model_name"] == decision.model_name
        assert row["model_version"] == decision.model_version
        assert row["threshold"] == decision.threshold
        assert row["probability"] == decision.probability
        assert row["decision"] == decision.decision
        assert row["reasons"] == list(decision.reasons)
        assert row["source"] == decision.source
        assert row["job_id"] == decision.job_id
        assert {key: row[key] for key in decision.inputs} == dict(decision.inputs)


def test_reads_and_counts_take_a_half_open_window_and_model_filters(engine: Engine) -> None:
    write_decisions(engine, make_decisions(10))  # seconds 0..9, version 3
    write_decisions(engine, make_decisions(10, start=10, model_version="4"))  # seconds 10..19

    start, end = T0 + timedelta(seconds=5), T0 + timedelta(seconds=15)
    window = read_decisions(engine, start, end)
    assert window["request_id"].tolist() == [f"req-{i:06d}" for i in range(5, 15)]
    assert count_decisions(engine, start, end) == 10

    assert count_decisions(engine, start) == 15
    assert count_decisions(engine, end=end) == 15
    assert count_decisions(engine, start, start) == 0
    # The same instant in another zone is the same bound.
    assert count_decisions(engine, start.astimezone(timezone(timedelta(hours=-5))), end) == 10

    v4 = read_decisions(engine, start, end, model_name="loan-default", model_version="4")
    assert v4["request_id"].tolist() == [f"req-{i:06d}" for i in range(10, 15)]
    assert count_decisions(engine, model_version="3") == 10
    assert count_decisions(engine, model_name="other") == 0

    with pytest.raises(ValueError, match="timezone-aware"):
        read_decisions(engine, datetime(2026, 11, 26))


def test_an_empty_window_reads_as_an_empty_frame_with_the_columns(engine: Engine) -> None:
    frame = read_decisions(engine, T0, T0 + timedelta(hours=1))

    assert frame.empty
    assert list(frame.columns)[:2] == ["request_id", "decided_at"]
    assert list(frame.columns) == list(META_COLUMNS)
    assert str(frame["decided_at"].dtype) == "datetime64[ns, UTC]"
    assert frame["probability"].dtype == np.float64


def test_inputs_named_like_a_column_and_non_finite_numbers(engine: Engine) -> None:
    inputs = {
        "decision": "from the form",
        "x": np.float64(1.5),
        "y": math.nan,
        "z": np.int64(7),
        "w": pd.NA,
    }
    write_decisions(engine, [make_decision(50, inputs=inputs)])

    row = read_decisions(engine).iloc[0]

    assert row["decision"] == "decline"
    assert row["input_decision"] == "from the form"
    assert (row["x"], row["z"]) == (1.5, 7)
    assert row["y"] is None  # JSON has no NaN: stored as null
    assert row["w"] is None


def test_selected_inputs_read_in_batches_equal_the_full_read(engine: Engine) -> None:
    decisions = make_decisions(20)
    odd = make_decision(
        20, inputs=applicant(20) | {"annual_inc": None, "sub_grade": None, "new_key": "late"}
    )
    write_decisions(engine, [*decisions, odd])
    kinds: dict[str, InputKind] = {
        "funded_amnt": "number",
        "annual_inc": "number",
        "sub_grade": "text",
    }

    full = read_decisions(engine, batch_rows=1_000)
    batched = read_decisions(engine, inputs=kinds, reasons=False, batch_rows=7)

    assert list(batched.columns) == [
        *(name for name in META_COLUMNS if not name.endswith("reasons")),
        *kinds,
    ]
    assert batched["annual_inc"].dtype == np.float64
    assert batched["funded_amnt"].dtype == np.float64
    assert batched["sub_grade"].dtype == object
    pd.testing.assert_frame_equal(
        batched[["request_id", "decided_at", "probability", "job_id"]],
        full[["request_id", "decided_at", "probability", "job_id"]],
    )
    assert batched["funded_amnt"].tolist() == full["funded_amnt"].astype(float).tolist()
    assert batched["annual_inc"].iloc[-1] != batched["annual_inc"].iloc[-1]  # NaN for null
    assert batched["sub_grade"].tolist() == full["sub_grade"].tolist()
    assert batched["sub_grade"].iloc[-1] is None
    # A key first seen in the last batch is NaN before it, and adds no rows.
    by_batch = read_decisions(engine, batch_rows=7)
    assert len(by_batch) == 21
    assert by_batch["new_key"].iloc[:20].isna().all()
    assert by_batch["new_key"].iloc[20] == "late"


def test_a_value_of_the_wrong_type_is_read_as_logged_not_lost(engine: Engine) -> None:
    write_decisions(engine, [make_decision(0), make_decision(1, inputs={"funded_amnt": "n/a"})])

    frame = read_decisions(engine, inputs={"funded_amnt": "number"})

    # Left as text for the caller to judge: the monitor counts it as an invalid value.
    assert frame["funded_amnt"].iloc[1] == "n/a"
    assert pd.to_numeric(frame["funded_amnt"], errors="coerce").iloc[0] == 1_000


def test_reads_come_from_the_segments_not_the_json_column(engine: Engine) -> None:
    decisions = [*make_decisions(5), make_decision(5, model_version="4")]
    write_decisions(engine, decisions)
    # The rows hold no inputs since revision 0004: only the segments can answer.
    assert "inputs" not in DECISIONS_TABLE.c
    with engine.begin() as connection:
        segments = connection.execute(sa.select(sa.func.count()).select_from(SEGMENTS_TABLE))
        assert segments.scalar_one() == 2  # one per model version written

    frame = read_decisions(engine, inputs={"funded_amnt": "number", "sub_grade": "text"})

    assert frame["funded_amnt"].tolist() == [d.inputs["funded_amnt"] for d in decisions]
    assert frame["sub_grade"].tolist() == [d.inputs["sub_grade"] for d in decisions]
    assert read_decisions(engine, model_version="4")["request_id"].tolist() == ["req-000005"]
