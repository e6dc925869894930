"""The batch-job tables on SQLite and PostgreSQL: the migration chain, the store and the sweep."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from loanops.data import synthetic as syn
from loanops.decisions.database import create_engine_for
from loanops.decisions.database import migrate as migrate_decision_log
from loanops.decisions.table import Base
from serving.batch.database import VERSION_TABLE, migrate
from serving.batch.job import ChunkCounts
from serving.batch.storage import LocalStorage
from serving.batch.store import JobStore
from serving.batch.sweep import LostTask, claim_lost_work
from serving.batch.tables import BatchBase, ChunkRow

pytestmark = pytest.mark.integration


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
            assert ours.get_current_revision() == "0002"
            assert compare_metadata(ours, BatchBase.metadata) == []

            # Not vacuous: a column the migration lacks is reported.
            changed = sa.MetaData()
            for table in BatchBase.metadata.tables.values():
                table.to_metadata(changed)
            changed.tables["batch_chunks"].append_column(sa.Column("extra", sa.Integer))
            assert [diff[0] for diff in compare_metadata(ours, changed)] == ["add_column"]

            log = MigrationContext.configure(connection)
            assert log.get_current_revision() == "0005"  # the decision log's own chain
            log_tables = set(Base.metadata.tables)
            assert log_tables.isdisjoint(BatchBase.metadata.tables)
        assert set(BatchBase.metadata.tables) | log_tables | {VERSION_TABLE, "alembic_version"} == (
            set(sa.inspect(engine).get_table_names())
        )
    finally:
        engine.dispose()


def test_the_job_store_and_the_sweep_work_on_both_databases(url: str, tmp_path: Path) -> None:
    applicants = syn.generate(250, seed=3)
    engine = create_engine_for(url)
    try:
        migrate(engine)
        store = JobStore(LocalStorage(tmp_path / "batch-jobs"), engine)
        job = asyncio.run(
            store.receive(
                _one_piece(applicants.to_csv(index=False).encode()),
                filename="a.csv",
                content_type="text/csv",
                max_bytes=1 << 20,
                model_name="m",
                model_version="1",
                schema=syn.SCHEMA,
            )
        )
        store.mark_running(job.job_id)
        plan = store.split_input(job.job_id, chunk_rows=100)
        assert plan.chunk_starts == [0, 100, 200]
        table = store.read_chunk(job.job_id, 1)
        store.write_chunk_output(
            job.job_id, 1, table, ChunkCounts(rows=100, valid=99, rejected=1), table
        )
        store.mark_recorded(job.job_id, 1, 99)

        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        with engine.begin() as connection:
            connection.execute(sa.update(ChunkRow).values(sent_at=an_hour_ago))
        lost = claim_lost_work(engine, 60)
        assert sorted(lost, key=str) == [
            LostTask("chunk", job.job_id, 0),
            LostTask("chunk", job.job_id, 2),
        ]
        assert claim_lost_work(engine, 60) == []

        running = store.get(job.job_id)
        assert running is not None
        assert (running.chunks, running.chunks_done, running.rows_done) == (3, 1, 100)
        assert (running.rows_valid, running.decisions_recorded, running.decisions_pending) == (
            99,
            99,
            0,
        )
        assert store.pending_chunks(job.job_id) == [0, 2]
        assert store.rows_processed_total() == 100
        store.mark_failed(job.job_id, "boom")
        store.mark_running(job.job_id)  # a finished job stays as it is
        failed = store.get(job.job_id)
        assert failed is not None and (failed.status, failed.error) == ("failed", "boom")
        assert store.delete(job.job_id) and store.job_ids() == []
    finally:
        engine.dispose()


async def _one_piece(data: bytes) -> AsyncIterator[bytes]:
    yield data
