"""Checks of paired decision records (champion and challenger on one request), on any database.

The unit tier runs them on SQLite, the integration tier on PostgreSQL, so both stores are held
to the same round trip.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
from sqlalchemy import Engine

from loanops.decisions.bulk import write_segment
from loanops.decisions.read import read_decisions
from loanops.decisions.record import Decision
from loanops.decisions.stream import stream_decisions
from loanops.decisions.write import decision_tables, write_decisions
from tests.factories import make_decision

PAIRED_COLUMNS = (
    "arm",
    "challenger_version",
    "challenger_threshold",
    "challenger_probability",
    "challenger_decision",
    "challenger_reasons",
)


def paired_decision(i: int, arm: str = "champion", **overrides: Any) -> Decision:
    """Decision number `i` with a challenger (version 4) that scored it too."""
    probability = ((i * 7) % 97) / 97
    challenger: dict[str, Any] = {
        "arm": arm,
        "challenger_version": "4",
        "challenger_threshold": 0.25,
        "challenger_probability": probability,
        "challenger_decision": "decline" if probability >= 0.25 else "approve",
        "challenger_reasons": [{"code": "dti", "text": "Debt is high", "impact": 0.01 * i}],
    }
    return make_decision(i, **(challenger | overrides))


def check_paired_round_trip(engine: Engine) -> None:
    """Paired, shadow-less and challenger-arm decisions read back field for field."""
    decisions = [
        paired_decision(0),
        paired_decision(1, arm="challenger"),
        make_decision(2),  # no challenger attached
        paired_decision(3, challenger_reasons=[]),
    ]
    assert write_decisions(engine, decisions) == 4

    frame = read_decisions(engine)
    assert frame["request_id"].tolist() == [d.request_id for d in decisions]
    for decision, row in zip(decisions, frame.to_dict("records"), strict=True):
        assert row["arm"] == decision.arm
        assert row["challenger_version"] == decision.challenger_version
        assert row["challenger_decision"] == decision.challenger_decision
        assert row["challenger_reasons"] == (
            None if decision.challenger_reasons is None else list(decision.challenger_reasons)
        )
        for name in ("challenger_threshold", "challenger_probability"):
            expected = getattr(decision, name)
            assert math.isnan(row[name]) if expected is None else row[name] == expected
        assert row["probability"] == decision.probability  # the champion's, as before

    (batch,) = stream_decisions(engine, inputs={}, columns=("probability", *PAIRED_COLUMNS))
    assert batch.columns["arm"].to_pylist() == [d.arm for d in decisions]
    assert batch.columns["challenger_probability"].to_pylist() == [
        d.challenger_probability for d in decisions
    ]


def check_old_segments_read_as_champion(engine: Engine) -> None:
    """A segment without the paired columns (older, or a batch job's) is the champion's alone."""
    decisions = [make_decision(i) for i in range(3)]
    ((_, _, table),) = decision_tables(decisions)
    old = table.select([name for name in table.column_names if name not in PAIRED_COLUMNS])
    assert write_segment(engine, "loan-default", "3", old) == 3
    write_decisions(engine, [paired_decision(3, arm="challenger")])

    frame = read_decisions(engine)
    assert frame["arm"].tolist() == ["champion"] * 3 + ["challenger"]
    assert frame["challenger_version"].tolist() == [None] * 3 + ["4"]
    assert frame["challenger_reasons"].iloc[:3].tolist() == [None] * 3
    assert frame["challenger_probability"].iloc[:3].isna().all()

    batches = list(stream_decisions(engine, inputs={}, columns=PAIRED_COLUMNS))
    arms = [arm for b in batches for arm in b.columns["arm"].to_pylist()]
    versions = [v for b in batches for v in b.columns["challenger_version"].to_pylist()]
    assert arms == ["champion"] * 3 + ["challenger"]
    assert versions == [None] * 3 + ["4"]
    assert all(
        isinstance(b.columns["challenger_threshold"], pa.ChunkedArray | pa.Array) for b in batches
    )
