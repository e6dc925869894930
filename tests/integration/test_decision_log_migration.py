"""Revision 0003 on SQLite and PostgreSQL: decisions logged before it read back through segments."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command

import loanops.outcomes  # noqa: F401  (its table is part of Base.metadata and of the migrations)
from loanops.decisions.database import alembic_config, create_engine_for, migrate
from loanops.decisions.read import read_decisions
from loanops.decisions.table import SEGMENTS_TABLE
from loanops.decisions.write import decision_row, write_decisions
from tests.factories import DECISIONS_BEFORE_0004, make_decision, make_decisions

pytestmark = pytest.mark.integration


def test_rows_logged_under_0002_are_carried_into_segments_and_read_back(url: str) -> None:
    command.upgrade(alembic_config(url), "0002")
    old = [
        *make_decisions(30),
        make_decision(30, model_version="4"),
        make_decision(31, inputs={"funded_amnt": "n/a"}),  # a value of the wrong type
    ]
    engine = create_engine_for(url)
    try:
        # As revision 0002's writer stored them: rows only, inputs as JSON.
        with engine.begin() as connection:
            connection.execute(DECISIONS_BEFORE_0004.insert(), [decision_row(d) for d in old])

        migrate(engine)

        with engine.connect() as connection:
            segments = connection.execute(
                sa.select(SEGMENTS_TABLE.c.model_version, SEGMENTS_TABLE.c.rows).order_by(
                    SEGMENTS_TABLE.c.model_version
                )
            ).all()
        assert [tuple(s) for s in segments] == [("3", 31), ("4", 1)]
        frame = read_decisions(engine)
        ordered = sorted(old, key=lambda d: (d.decided_at, d.request_id))
        assert frame["request_id"].tolist() == [d.request_id for d in ordered]
        assert frame["model_version"].tolist() == [d.model_version for d in ordered]
        assert frame["probability"].tolist() == [d.probability for d in ordered]
        assert frame["reasons"].tolist() == [[dict(r) for r in d.reasons] for d in ordered]
        first = old[0]
        row = frame.set_index("request_id").loc[first.request_id]
        for key, value in first.inputs.items():
            assert row[key] == value

        selected = read_decisions(engine, inputs={"funded_amnt": "number"}, reasons=False)
        by_id = selected.set_index("request_id")["funded_amnt"]
        assert by_id[old[31].request_id] == "n/a"  # kept as logged
        assert pd.to_numeric(by_id, errors="coerce").notna().sum() == 31

        # Writing them again, as a redelivered chunk would, adds neither rows nor segments.
        assert write_decisions(engine, old) == 0
        later = make_decision(40)
        assert write_decisions(engine, [*old[:3], later]) == 1
        with engine.connect() as connection:
            stored = connection.execute(sa.select(sa.func.sum(SEGMENTS_TABLE.c.rows))).scalar()
        assert stored == len(old) + 1
        assert read_decisions(engine)["request_id"].is_unique

        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0002")
        assert "decision_segments" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
