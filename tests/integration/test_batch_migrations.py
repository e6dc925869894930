"""The batch-job tables' migration chain builds exactly the declared tables, beside the log's."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from loanops.decisions import Base, create_engine_for
from loanops.decisions import migrate as migrate_decision_log
from serving.batch.database import VERSION_TABLE, migrate
from serving.batch.tables import BatchBase

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'decisions.db'}"
    value: str = request.getfixturevalue("database_url")
    return value


def test_the_migration_equals_the_metadata_and_leaves_the_decision_log_alone(url: str) -> None:
    engine = create_engine_for(url)
    try:
        migrate_decision_log(engine)
        migrate(engine)
        migrate(engine)  # at head already: nothing to do

        with engine.connect() as connection:
            ours = MigrationContext.configure(
                connection,
                opts={
                    "version_table": VERSION_TABLE,
                    "include_name": lambda name, type_, _: (
                        type_ != "table" or name in BatchBase.metadata.tables
                    ),
                },
            )
            assert ours.get_current_revision() == "0001"
            assert compare_metadata(ours, BatchBase.metadata) == []

            # Not vacuous: a column the migration lacks is reported.
            changed = sa.MetaData()
            for table in BatchBase.metadata.tables.values():
                table.to_metadata(changed)
            changed.tables["batch_chunks"].append_column(sa.Column("extra", sa.Integer))
            assert [diff[0] for diff in compare_metadata(ours, changed)] == ["add_column"]

            log = MigrationContext.configure(connection)
            assert log.get_current_revision() == "0002"  # the decision log's own chain
            log_tables = set(Base.metadata.tables)
            assert log_tables.isdisjoint(BatchBase.metadata.tables)
        assert set(BatchBase.metadata.tables) | log_tables | {VERSION_TABLE, "alembic_version"} == (
            set(sa.inspect(engine).get_table_names())
        )
    finally:
        engine.dispose()
