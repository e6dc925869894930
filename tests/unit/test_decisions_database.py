"""The decision log's database on SQLite: the engine's settings and the migrations.

Every test runs against a real SQLite file in `tmp_path`.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

import loanops.outcomes  # noqa: F401  (its table is part of Base.metadata and of the migrations)
from loanops.decisions.database import create_engine_for, migrate
from loanops.decisions.table import Base
from loanops.decisions.write import write_decisions
from tests.factories import make_decisions
from tests.migrations import finish, start_migrations


def test_sqlite_engine_creates_the_folder_and_runs_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "decisions.db"
    engine = create_engine_for(f"sqlite:///{path}")
    try:
        assert path.parent.is_dir()
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    finally:
        engine.dispose()


def test_migration_creates_exactly_the_declared_table_and_is_idempotent(db_url: str) -> None:
    migrate(db_url)
    migrate(db_url)  # already at head: nothing to do, no error

    engine = create_engine_for(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            assert context.get_current_revision() == "0005"
            assert compare_metadata(context, Base.metadata) == []

            # The comparison is not vacuous: a column the migration lacks is reported.
            changed = sa.MetaData()
            for table in Base.metadata.tables.values():
                table.to_metadata(changed)
            changed.tables["decisions"].append_column(sa.Column("extra", sa.Integer))
            assert [diff[0] for diff in compare_metadata(context, changed)] == ["add_column"]

        # Windows are read from the segments: the rows keep their key alone.
        assert sa.inspect(engine).get_indexes("decisions") == []
    finally:
        engine.dispose()


def test_two_processes_can_migrate_a_fresh_sqlite_database_at_once(db_url: str) -> None:
    # Without the single BEGIN IMMEDIATE transaction one of them fails with
    # "table alembic_version already exists".
    path = Path(db_url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        # Hold the write lock, start both, and see them wait for it.
        holder.execute("BEGIN IMMEDIATE")
        processes = start_migrations(db_url, 2)
        time.sleep(0.5)
        assert [process.is_alive() for process in processes] == [True, True]
        assert holder.execute("SELECT name FROM sqlite_master").fetchall() == []
        holder.execute("ROLLBACK")  # released together, they race for the lock
    finally:
        holder.close()
    assert finish(processes) == [0, 0]

    engine = create_engine_for(db_url)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [
                ("0005",)
            ]
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()


def test_sqlite_file_shared_with_another_connection(engine: Engine, db_url: str) -> None:
    # A reader holding an open transaction does not block the writer (WAL mode).
    path = db_url.removeprefix("sqlite:///")
    reader = sqlite3.connect(path)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM decisions").fetchone() == (0,)
        assert write_decisions(engine, make_decisions(3)) == 3
        assert reader.execute("SELECT count(*) FROM decisions").fetchone() == (0,)  # snapshot
        reader.execute("COMMIT")
        assert reader.execute("SELECT count(*) FROM decisions").fetchone() == (3,)
    finally:
        reader.close()
