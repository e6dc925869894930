"""Revision 0004 on SQLite and PostgreSQL: rows lose their copies and point to their segments.

Decisions stored before it keep being found by key, read back whole, joined to outcomes, and
come back as they were when the revision is undone.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

import loanops.outcomes  # noqa: F401  (its table is part of Base.metadata and of the migrations)
from loanops.decisions.database import alembic_config, create_engine_for, migrate
from loanops.decisions.read import count_decisions, read_decisions
from loanops.decisions.segments import decode
from loanops.decisions.table import SEGMENTS_TABLE
from loanops.decisions.write import decision_row, write_decisions
from loanops.outcomes import Outcome, read_labelled, record_outcomes
from tests.factories import DECISIONS_BEFORE_0004, make_decision, make_decisions

pytestmark = pytest.mark.integration

_MOVED = ("threshold", "inputs", "probability", "decision", "reasons", "source")


def test_rows_stored_before_0004_point_to_their_segments_and_come_back_on_downgrade(
    url: str,
) -> None:
    command.upgrade(alembic_config(url), "0002")
    old = [
        *make_decisions(20),
        make_decision(20, model_version="4"),
        make_decision(21, inputs={"funded_amnt": "n/a", "sub_grade": None}),
    ]
    engine = create_engine_for(url)
    try:
        with engine.begin() as connection:
            connection.execute(DECISIONS_BEFORE_0004.insert(), [decision_row(d) for d in old])
        command.upgrade(alembic_config(url), "0003")  # carried into segments

        command.upgrade(alembic_config(url), "0004")

        columns = {c["name"] for c in sa.inspect(engine).get_columns("decisions")}
        assert columns == {
            "request_id",
            "decided_at",
            "model_name",
            "model_version",
            "job_id",
            "segment_id",
        }
        with engine.connect() as connection:
            pointers: dict[str, int] = dict(
                connection.execute(sa.text("SELECT request_id, segment_id FROM decisions")).all()
            )
            segments = connection.execute(
                sa.select(SEGMENTS_TABLE.c.segment_id, SEGMENTS_TABLE.c.data)
            ).all()
        held = {
            request_id: segment_id
            for segment_id, data in segments
            for request_id in decode(data)["request_id"].to_pylist()
        }
        assert pointers == held
        assert set(pointers) == {d.request_id for d in old}

        # Keyed work still finds them, through the rows as the latest revision leaves them:
        # counts, idempotent rewrites, outcomes and their join.
        migrate(engine)
        assert count_decisions(engine, model_version="4") == 1
        assert write_decisions(engine, old) == 0
        report = record_outcomes(
            engine, [Outcome(request_id=d.request_id, defaulted=True) for d in old[19:]]
        )
        assert report.recorded == 3
        labelled = read_labelled(engine, inputs={"funded_amnt": "number"})
        assert labelled["request_id"].tolist() == [d.request_id for d in old[19:]]
        assert labelled["funded_amnt"].tolist() == [1_019, 1_020, "n/a"]
        assert labelled["reasons"].tolist() == [[dict(r) for r in d.reasons] for d in old[19:]]
        assert labelled["threshold"].tolist() == [0.2] * 3
        assert read_decisions(engine)["request_id"].tolist() == [d.request_id for d in old]

        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0003")
        with engine.connect() as connection:
            restored = {
                row.request_id: row
                for row in connection.execute(sa.select(DECISIONS_BEFORE_0004)).all()
            }
        for d in old:
            expected = decision_row(d)
            got = restored[d.request_id]
            assert {name: getattr(got, name) for name in _MOVED if name != "inputs"} == {
                name: expected[name] for name in _MOVED if name != "inputs"
            }
            # A key another decision of its segment logged comes back as null (as documented).
            assert set(expected["inputs"]) <= set(got.inputs)
            assert got.inputs == {key: expected["inputs"].get(key) for key in got.inputs}
    finally:
        engine.dispose()
