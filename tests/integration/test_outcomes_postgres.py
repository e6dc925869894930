"""Outcomes on a real PostgreSQL: the 0002 migration, the foreign key, recording and concurrency.

Each test gets its own fresh database on the session's server, dropped afterwards.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from loanops.decisions.database import alembic_config, create_engine_for, migrate
from loanops.decisions.table import Base
from loanops.decisions.write import write_decisions
from loanops.outcomes import Outcome, OutcomeRecord, OutcomeReport, read_labelled, record_outcomes
from tests.factories import (
    OBSERVED,
    outcome_decision,
    request_id_of,
)

pytestmark = pytest.mark.integration


def stored(engine: Engine) -> dict[str, bool]:
    table = OutcomeRecord.__table__
    with engine.connect() as connection:
        return dict(connection.execute(sa.select(table.c.request_id, table.c.defaulted)).all())


@pytest.fixture
def engine(engine: Engine) -> Engine:
    """The integration tier's migrated decision log (conftest.py), holding 300 decisions."""
    write_decisions(engine, [outcome_decision(i) for i in range(300)])
    return engine


def test_the_migration_creates_the_declared_outcomes_table(database_url: str) -> None:
    migrate(database_url)
    migrate(database_url)

    engine = create_engine_for(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            assert context.get_current_revision() == "0005"
            assert compare_metadata(context, Base.metadata) == []
            types: dict[str, str] = dict(
                connection.execute(
                    sa.text(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_name = 'outcomes'"
                    )
                ).all()
            )
        assert types == {
            "request_id": "character varying",
            "defaulted": "boolean",
            "observed_at": "timestamp with time zone",
            "recorded_at": "timestamp with time zone",
            "source": "character varying",
        }
        (foreign_key,) = sa.inspect(engine).get_foreign_keys("outcomes")
        assert foreign_key["name"] == "fk_outcomes_request_id_decisions"
        assert foreign_key["options"] == {"ondelete": "CASCADE"}

        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0001")
        assert "outcomes" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_the_foreign_key_backs_up_the_unknown_id_check(engine: Engine) -> None:
    row = {"defaulted": True, "recorded_at": datetime.now(UTC), "source": "api"}
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(sa.insert(OutcomeRecord), [{"request_id": "no-such-decision", **row}])

    record_outcomes(engine, [Outcome(request_id=request_id_of(1), defaulted=True)])
    with engine.begin() as connection:
        connection.execute(
            sa.text("DELETE FROM decisions WHERE request_id = :id"), {"id": request_id_of(1)}
        )
    assert stored(engine) == {}, "an outcome goes with its decision"


def test_unknown_duplicate_and_conflicting_ids_on_postgres(engine: Engine) -> None:
    first = record_outcomes(
        engine, [Outcome(request_id=request_id_of(i), defaulted=i % 3 == 0, observed_at=OBSERVED)
                 for i in range(10)]
    )  # fmt: skip
    assert first == OutcomeReport(received=10, recorded=10)

    unknown = record_outcomes(engine, [Outcome(request_id="nope", defaulted=True)])
    duplicate = record_outcomes(engine, [Outcome(request_id=request_id_of(3), defaulted=True)])
    conflict = record_outcomes(
        engine,
        [
            Outcome(request_id=request_id_of(3), defaulted=False),
            Outcome(request_id=request_id_of(20), defaulted=True),
        ],
    )

    assert (unknown.refused, unknown.unknown) == (True, ("nope",))
    assert (duplicate.refused, duplicate.recorded, duplicate.duplicates) == (
        False,
        0,
        (request_id_of(3),),
    )
    assert (conflict.refused, conflict.conflicts) == (True, (request_id_of(3),))
    assert len(stored(engine)) == 10
    labelled = read_labelled(engine)
    assert len(labelled) == 10
    assert (labelled["observed_at"] == OBSERVED).all()
    assert labelled["defaulted"].sum() == 4


def test_concurrent_writers_of_overlapping_sets_record_each_id_once(
    database_url: str, engine: Engine
) -> None:
    engines = [create_engine_for(database_url) for _ in range(4)]
    # Each writer's set overlaps the next one's by half.
    sets = [
        [
            Outcome(request_id=request_id_of(i), defaulted=i % 4 == 0)
            for i in range(50 * k, 50 * k + 100)
        ]
        for k in range(4)
    ]
    reports: list[OutcomeReport] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(engines))

    def write(writer: Engine, outcomes: list[Outcome]) -> None:
        try:
            barrier.wait()
            reports.append(record_outcomes(writer, outcomes))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [
        threading.Thread(target=write, args=(writer, outcomes))
        for writer, outcomes in zip(engines, sets, strict=True)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for writer in engines:
            writer.dispose()

    assert errors == []
    assert sum(report.recorded for report in reports) == 250
    assert sum(len(report.duplicates) for report in reports) == 150
    assert len(stored(engine)) == 250
