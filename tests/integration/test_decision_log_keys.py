"""Revision 0005 on SQLite and PostgreSQL: rows lose their model and job, which the segments keep.

Decisions stored before it are still counted by model, joined to outcomes and read back whole;
undoing it puts every row's model and job back. On PostgreSQL the keys compare byte by byte.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

import loanops.outcomes  # noqa: F401  (its table is part of Base.metadata and of the migrations)
from loanops.decisions.database import alembic_config, create_engine_for, migrate
from loanops.decisions.read import count_decisions, read_decisions
from loanops.decisions.write import decision_row, write_decisions
from loanops.outcomes import Outcome, read_labelled, record_outcomes
from tests.factories import DECISIONS_BEFORE_0004, make_decisions

pytestmark = pytest.mark.integration

_MOVED = ("model_name", "model_version", "job_id")


def _downgrade(engine: sa.Engine, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def test_rows_lose_their_model_and_job_and_get_them_back_on_downgrade(url: str) -> None:
    command.upgrade(alembic_config(url), "0002")
    old = [
        *make_decisions(10),
        *make_decisions(5, start=10, model_version="4"),
        *make_decisions(4, start=15, source="batch", job_id="job-a"),
        *make_decisions(3, start=19, source="batch", job_id="job-b", model_name="other"),
    ]
    engine = create_engine_for(url)
    try:
        with engine.begin() as connection:
            connection.execute(DECISIONS_BEFORE_0004.insert(), [decision_row(d) for d in old])

        migrate(engine)

        columns = {c["name"] for c in sa.inspect(engine).get_columns("decisions")}
        assert columns == {"request_id", "decided_at", "segment_id"}
        # A count by model asks the segments which rows are the model's.
        assert count_decisions(engine) == 22
        assert count_decisions(engine, model_version="4") == 5
        assert count_decisions(engine, model_name="other") == 3
        assert count_decisions(engine, model_name="loan-default", model_version="3") == 14
        assert count_decisions(engine, model_name="nobody") == 0
        assert write_decisions(engine, old) == 0
        labelled_ids = [d.request_id for d in old[8:12]]
        record_outcomes(engine, [Outcome(request_id=i, defaulted=False) for i in labelled_ids])
        labelled = read_labelled(engine, model_version="4")
        assert labelled["request_id"].tolist() == labelled_ids[2:]
        frame = read_decisions(engine)
        assert frame["request_id"].tolist() == [d.request_id for d in old]
        assert frame["job_id"].tolist() == [d.job_id for d in old]
        assert frame["model_name"].tolist() == [d.model_name for d in old]

        _downgrade(engine, "0004")

        with engine.connect() as connection:
            restored = {
                row.request_id: row
                for row in connection.execute(
                    sa.select(*(DECISIONS_BEFORE_0004.c[name] for name in ("request_id", *_MOVED)))
                ).all()
            }
        assert {i: tuple(row)[1:] for i, row in restored.items()} == {
            d.request_id: (d.model_name, d.model_version, d.job_id) for d in old
        }
        # The outcomes survive the key's rebuild both ways.
        migrate(engine)
        assert read_labelled(engine)["request_id"].tolist() == labelled_ids
    finally:
        engine.dispose()


def test_a_row_without_a_segment_stops_the_upgrade_and_is_kept(url: str) -> None:
    command.upgrade(alembic_config(url), "0004")
    engine = create_engine_for(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO decisions (request_id, decided_at, model_name, model_version) "
                    "VALUES ('stray', '2026-06-01 00:00:00', 'loan-default', '3')"
                )
            )

        with pytest.raises(RuntimeError, match="1 decision rows point to no segment"):
            migrate(engine)

        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT model_name FROM decisions")).all() == [
                ("loan-default",)
            ]
    finally:
        engine.dispose()


@pytest.mark.parametrize("table", ["decisions", "outcomes"])
def test_on_postgresql_the_keys_compare_as_bytes(database_url: str, table: str) -> None:
    engine = create_engine_for(database_url)
    try:
        migrate(engine)
        with engine.connect() as connection:
            collation = connection.execute(
                sa.text(
                    "SELECT collation_name FROM information_schema.columns "
                    "WHERE table_name = :table AND column_name = 'request_id'"
                ),
                {"table": table},
            ).scalar_one()
        assert collation == "C"
    finally:
        engine.dispose()
