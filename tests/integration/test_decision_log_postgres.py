"""The decision log on a real PostgreSQL: migration, concurrent start-up, writes and reads.

Each test that migrates gets its own fresh database on the session's server, dropped afterwards.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta, timezone

import pandas as pd
import psycopg
import pyarrow as pa
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

import loanops.outcomes  # noqa: F401  (its table is part of Base.metadata and of the migrations)
from loanops.decisions.bulk import write_segment
from loanops.decisions.database import _MIGRATION_LOCK_KEY, create_engine_for, migrate
from loanops.decisions.read import InputKind, count_decisions, read_decisions
from loanops.decisions.stream import stream_decisions
from loanops.decisions.table import DECISIONS_TABLE, Base
from loanops.decisions.write import write_decisions
from serving.batch.chunks import decision_columns
from serving.decision_log.batching import BatchingWriter
from tests.factories import DECIDED_FROM as T0
from tests.factories import make_decision, make_decisions
from tests.migrations import finish, start_migrations
from tests.services import libpq_url

pytestmark = pytest.mark.integration


def test_migration_creates_exactly_the_declared_table_and_is_idempotent(
    database_url: str,
) -> None:
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
                        "WHERE table_name = 'decisions'"
                    )
                ).all()
            )
            storage = connection.execute(
                sa.text(
                    "SELECT attstorage FROM pg_attribute "
                    "WHERE attrelid = 'decision_segments'::regclass AND attname = 'data'"
                )
            ).scalar_one()
        assert types["decided_at"] == "timestamp with time zone"
        assert types["segment_id"] == "integer"
        # Windows are read from the segments: the rows keep their key alone.
        assert sa.inspect(engine).get_indexes("decisions") == []
        assert storage == "e"  # segments are compressed already: stored as they are
    finally:
        engine.dispose()


def test_two_processes_can_migrate_a_fresh_database_at_once(database_url: str) -> None:
    # Without the advisory lock, one of them now and then fails on a duplicate alembic_version
    # or decisions table.
    with psycopg.connect(libpq_url(database_url), autocommit=True) as holder:
        # Hold the migration lock, start both, and see them wait for it.
        holder.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
        processes = start_migrations(database_url, 2)
        try:
            time.sleep(0.5)
            assert [process.is_alive() for process in processes] == [True, True]
            assert holder.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,)
        finally:
            # Released together, they race for it: one migrates, the other finds head.
            holder.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_KEY,))
    assert finish(processes) == [0, 0]

    with psycopg.connect(libpq_url(database_url)) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("0005",)
        ]
        assert connection.execute("SELECT count(*) FROM decisions").fetchone() == (0,)


def test_n_decisions_make_n_rows_and_rewriting_them_adds_none(engine: Engine) -> None:
    chunk = make_decisions(3_000)

    assert write_decisions(engine, chunk) == 3_000
    assert write_decisions(engine, chunk) == 0  # a redelivered chunk
    assert write_decisions(engine, make_decisions(1_000, start=2_500)) == 500
    assert count_decisions(engine) == 3_500


def test_a_chunk_whose_ids_and_job_need_escaping_is_copied_as_given(engine: Engine) -> None:
    # Texts that COPY's text format would escape; a chunk's job is encoded once.
    job = 'job "7"\t\\ \n é'
    rows = pa.array(range(40), pa.int64())
    table = pa.table(
        {
            "row": rows,
            "probability": pa.array([0.25] * 40),
            "decision": pa.array(["approve"] * 40),
            "reasons": pa.array(["[]"] * 40),
            "input:loan_amnt": rows,
        }
    ).replace_schema_metadata(
        {
            "job_id": job,
            "model_name": "loan\tdefault",
            "model_version": "3",
            "threshold": "0.5",
            "decided_at": T0.isoformat(),
        }
    )

    assert write_segment(engine, *decision_columns(table)) == 40
    assert write_segment(engine, *decision_columns(table.slice(30))) == 0  # redelivered
    with engine.connect() as connection:
        stored = set(
            connection.execute(
                sa.select(DECISIONS_TABLE.c.request_id, DECISIONS_TABLE.c.decided_at)
            )
        )
    assert stored == {(f"{job}-{i}", T0) for i in range(40)}
    logged = read_decisions(engine)
    assert set(zip(logged["request_id"], logged["job_id"], logged["model_name"], strict=True)) == {
        (f"{job}-{i}", job, "loan\tdefault") for i in range(40)
    }


def test_rows_that_differ_in_time_and_job_are_copied_as_given(engine: Engine) -> None:
    # Each row's own time (before PostgreSQL's epoch too, to the microsecond) and job, or none.
    times = [T0, T0 + timedelta(microseconds=1), T0.replace(year=1999, month=12, day=31)]
    decisions = [
        make_decision(i, decided_at=when, job_id=None if i == 1 else f"job-{i}")
        for i, when in enumerate(times)
    ]

    assert write_decisions(engine, decisions) == 3
    with engine.connect() as connection:
        stored = set(
            connection.execute(
                sa.select(DECISIONS_TABLE.c.request_id, DECISIONS_TABLE.c.decided_at)
            )
        )
    assert stored == {(d.request_id, d.decided_at) for d in decisions}
    logged = read_decisions(engine)
    assert dict(zip(logged["request_id"], logged["job_id"], strict=True)) == {
        d.request_id: d.job_id for d in decisions
    }


def test_a_redelivered_chunk_racing_the_first_delivery_adds_nothing(engine: Engine) -> None:
    chunk = make_decisions(3_000)
    results: list[int] = []
    errors: list[BaseException] = []

    def deliver(seed: int) -> None:
        try:
            results.append(write_decisions(engine, random.Random(seed).sample(chunk, len(chunk))))
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=deliver, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []  # in particular, no deadlock between the shuffled deliveries
    assert sum(results) == 3_000
    assert count_decisions(engine) == 3_000


def test_reads_are_utc_and_windowed_whatever_the_session_time_zone(
    engine: Engine, database_url: str
) -> None:
    write_decisions(engine, make_decisions(10))
    write_decisions(engine, make_decisions(10, start=10, model_version="4"))
    oddly_zoned = create_engine_for(
        make_url(database_url)
        .update_query_dict({"options": "-c timezone=Asia/Kathmandu"})
        .render_as_string(hide_password=False)
    )
    try:
        start, end = T0 + timedelta(seconds=5), T0 + timedelta(seconds=15)
        frame = read_decisions(oddly_zoned, start.astimezone(timezone(timedelta(hours=-7))), end)

        assert frame["request_id"].tolist() == [f"req-{i:06d}" for i in range(5, 15)]
        assert str(frame["decided_at"].dtype) == "datetime64[ns, UTC]"
        assert frame["decided_at"].iloc[0] == pd.Timestamp(start)
        assert frame["funded_amnt"].tolist() == list(range(1_005, 1_015))
        assert frame["reasons"].iloc[0] == list(make_decision(5).reasons)
        assert count_decisions(oddly_zoned, start, end, model_version="4") == 5
        assert read_decisions(oddly_zoned, start, end, model_version="4").shape[0] == 5
    finally:
        oddly_zoned.dispose()


def test_a_window_streams_cut_to_its_bounds_whatever_the_session_time_zone(
    engine: Engine, database_url: str
) -> None:
    write_decisions(engine, make_decisions(10))
    write_decisions(engine, make_decisions(10, start=10, model_version="4"))
    oddly_zoned = create_engine_for(
        make_url(database_url)
        .update_query_dict({"options": "-c timezone=Asia/Kathmandu"})
        .render_as_string(hide_password=False)
    )
    inputs: dict[str, InputKind] = {"funded_amnt": "number", "sub_grade": "text"}
    try:
        start, end = T0 + timedelta(seconds=5), T0 + timedelta(seconds=15)
        west = start.astimezone(timezone(timedelta(hours=-7)))
        cut = list(stream_decisions(oddly_zoned, west, end, inputs=inputs))
        whole = list(stream_decisions(oddly_zoned, T0, T0 + timedelta(days=1), inputs=inputs))
    finally:
        oddly_zoned.dispose()

    assert [(b.model_name, b.model_version, b.rows) for b in cut] == [
        ("loan-default", "3", 5),
        ("loan-default", "4", 5),
    ]
    times = pd.concat([pd.Series(b.columns["decided_at"].to_pandas()) for b in cut])
    assert times.iloc[0] == pd.Timestamp(start) and times.iloc[-1] < pd.Timestamp(end)
    funded = [v for b in cut for v in b.columns["funded_amnt"].to_pylist()]
    assert funded == [float(v) for v in range(1_005, 1_015)]
    assert [b.rows for b in whole] == [10, 10]
    expected = read_decisions(engine, inputs=inputs, reasons=False)["sub_grade"].tolist()
    assert [v for b in whole for v in b.columns["sub_grade"].to_pylist()] == expected


def test_the_decision_log_writes_everything_across_dropped_connections(
    engine: Engine, database_url: str
) -> None:
    log = BatchingWriter(engine, batch_size=200, flush_seconds=0.02)
    log.start()
    name = make_url(database_url).database

    def record(start: int) -> None:
        for decision in make_decisions(1_500, start=start):
            log.record(decision)
            if decision.request_id.endswith("00"):
                time.sleep(0.001)

    try:
        threads = [threading.Thread(target=record, args=(1_500 * k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        # Cut every connection to the database while the writer is busy: the pool must
        # reconnect and the writer carry on, without losing or repeating a decision.
        cut_connections = 0
        for _ in range(3):
            time.sleep(0.05)
            with psycopg.connect(libpq_url(database_url), dbname="postgres") as admin:
                cut = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                ).fetchall()
                cut_connections += len(cut)
        for thread in threads:
            thread.join()
        log.flush(timeout=30)
    finally:
        log.close(timeout=10)

    assert cut_connections >= 1
    assert log.pending == 0
    assert log.written == 6_000
    assert count_decisions(engine) == 6_000
    assert read_decisions(engine)["request_id"].is_unique


def test_selected_inputs_are_extracted_by_postgresql_in_batches(engine: Engine) -> None:
    """`->>` returns text: numbers are parsed back, and a wrong-typed value fails no cast."""
    odd = make_decision(30, inputs={"funded_amnt": "n/a", "sub_grade": None})
    write_decisions(engine, [*make_decisions(30), odd])

    full = read_decisions(engine)
    selected = read_decisions(
        engine, inputs={"annual_inc": "number", "sub_grade": "text"}, reasons=False, batch_rows=7
    )
    wrong = read_decisions(engine, inputs={"funded_amnt": "number"}, batch_rows=7)

    assert "reasons" not in selected
    assert selected["request_id"].tolist() == full["request_id"].tolist()
    assert selected["annual_inc"].dtype == "float64"
    assert selected["annual_inc"].iloc[:30].tolist() == full["annual_inc"].iloc[:30].tolist()
    assert pd.isna(selected["annual_inc"].iloc[30])
    assert selected["sub_grade"].tolist() == [*full["sub_grade"].iloc[:30], None]
    assert wrong["funded_amnt"].iloc[30] == "n/a"
    assert pd.to_numeric(wrong["funded_amnt"].iloc[:30]).tolist() == list(range(1_000, 1_030))
