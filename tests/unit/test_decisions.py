"""The decision log on SQLite: schema, idempotent writes, window reads and the background writer.

Every test runs against a real SQLite file in `tmp_path`; the unreachable database of the spill
tests is a PostgreSQL URL on a port nothing listens on.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

import loanops.outcomes  # noqa: F401  (its table is part of Base.metadata and of the migrations)
from loanops.decisions.database import create_engine_for, migrate
from loanops.decisions.read import META_COLUMNS, InputKind, count_decisions, read_decisions
from loanops.decisions.spill import load_spill
from loanops.decisions.table import Base
from loanops.decisions.write import write_decisions
from serving.decision_log.batching import BatchingWriter
from serving.decision_log.handle import DecisionLogProcess
from tests.factories import DECIDED_FROM as T0
from tests.factories import make_decision, make_decisions
from tests.services import free_port

# A value that must never reach a log line: inputs may be personal data.
PERSONAL = "Jane Q. Applicant, 1 Privacy Lane"


def applicant(i: int) -> dict[str, Any]:
    return dict(make_decision(i).inputs)


def unreachable_postgres_url() -> str:
    """A PostgreSQL URL on a port nothing listens on: every connection is refused at once."""
    return f"postgresql://postgres@127.0.0.1:{free_port()}/loanops?connect_timeout=2"


def start_migrations(url: str, count: int) -> list[BaseProcess]:
    """Start `migrate(url)` in `count` new processes.

    They fork from a forkserver that has already imported the decision log, so they reach the
    database within milliseconds of each other, and without paying for the imports each.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["loanops.decisions.database", "alembic.command"])
    processes: list[BaseProcess] = [
        context.Process(target=migrate, args=(url,)) for _ in range(count)
    ]
    for process in processes:
        process.start()
    return processes


def finish(processes: list[BaseProcess], timeout: float = 60) -> list[int | None]:
    """Wait for the processes; kill any still running after `timeout`. Their exit codes."""
    for process in processes:
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
    return [process.exitcode for process in processes]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    # The parent folder does not exist yet: create_engine_for makes it.
    return f"sqlite:///{tmp_path / 'state' / 'decisions.db'}"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    migrate(db_url)
    engine = create_engine_for(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def decision_log(engine: Engine, tmp_path: Path) -> Iterator[BatchingWriter]:
    log = BatchingWriter(engine, batch_size=100, flush_seconds=0.05, spill_dir=tmp_path / "spill")
    log.start()
    yield log
    log.close(timeout=5)


# --- engine and schema -----------------------------------------------------------------------


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
            assert context.get_current_revision() == "0002"
            assert compare_metadata(context, Base.metadata) == []

            # The comparison is not vacuous: a column the migration lacks is reported.
            changed = sa.MetaData()
            for table in Base.metadata.tables.values():
                table.to_metadata(changed)
            changed.tables["decisions"].append_column(sa.Column("extra", sa.Integer))
            assert [diff[0] for diff in compare_metadata(context, changed)] == ["add_column"]

        indexes = {
            index["name"]: index["column_names"]
            for index in sa.inspect(engine).get_indexes("decisions")
        }
        assert indexes == {
            "ix_decisions_decided_at": ["decided_at"],
            "ix_decisions_model_decided_at": ["model_name", "model_version", "decided_at"],
        }
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
                ("0002",)
            ]
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()


# --- the record ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"decided_at": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"decision": "maybe"}, "decision must be one of"),
        ({"source": "cron"}, "source must be one of"),
        ({"probability": math.nan}, "probability must lie in"),
        ({"threshold": 1.5}, "threshold must lie in"),
        ({"request_id": ""}, "request_id"),
    ],
)
def test_an_invalid_decision_is_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_decision(1, **overrides)


# --- writing and reading ---------------------------------------------------------------------


def test_n_decisions_make_n_rows_and_rewriting_them_adds_none(engine: Engine) -> None:
    batch = make_decisions(1_234)

    assert write_decisions(engine, batch) == 1_234
    assert count_decisions(engine) == 1_234

    assert write_decisions(engine, batch) == 0  # a redelivered chunk
    assert write_decisions(engine, random.Random(1).sample(batch, 500)) == 0
    # Half old, half new: only the new ones count.
    assert write_decisions(engine, make_decisions(400, start=1_034)) == 200
    assert write_decisions(engine, []) == 0
    assert count_decisions(engine) == 1_434


def test_concurrent_overlapping_writes_store_each_decision_once(engine: Engine) -> None:
    batch = make_decisions(2_000)
    results: list[int] = []

    def write(seed: int) -> None:
        shuffled = random.Random(seed).sample(batch, len(batch))
        results.append(write_decisions(engine, shuffled))

    threads = [threading.Thread(target=write, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [0, 0, 2_000]
    assert count_decisions(engine) == 2_000


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

    assert list(frame.columns[:10]) == [
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
    ]
    assert list(frame.columns[10:]) == list(applicant(0))
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
    assert len(frame.columns) == 10
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
        *(name for name in META_COLUMNS if name != "reasons"),
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


# --- the background writer -------------------------------------------------------------------


def test_recorded_decisions_are_all_written_once(
    engine: Engine, decision_log: BatchingWriter
) -> None:
    def record(start: int) -> None:
        for decision in make_decisions(600, start=start):
            decision_log.record(decision)

    threads = [threading.Thread(target=record, args=(600 * k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    decision_log.flush(timeout=10)

    assert (decision_log.pending, decision_log.written, decision_log.failures) == (0, 2_400, 0)
    assert decision_log.last_error is None
    assert count_decisions(engine) == 2_400
    frame = read_decisions(engine)
    assert frame["request_id"].is_unique
    assert frame["request_id"].tolist() == [f"req-{i:06d}" for i in range(2_400)]


def test_a_partial_batch_is_written_after_flush_seconds(engine: Engine, tmp_path: Path) -> None:
    log = BatchingWriter(engine, batch_size=1_000, flush_seconds=0.1, spill_dir=tmp_path)
    log.start()
    try:
        log.record(make_decision(1))
        wait_until(lambda: count_decisions(engine) == 1, timeout=5)
        assert log.pending == 0
    finally:
        log.close()


def test_close_writes_everything_pending_and_is_idempotent(engine: Engine, tmp_path: Path) -> None:
    log = BatchingWriter(engine, batch_size=50, flush_seconds=10, spill_dir=tmp_path / "spill")
    log.start()
    for decision in make_decisions(777):
        log.record(decision)

    log.close(timeout=10)
    log.close()

    assert count_decisions(engine) == 777
    assert (log.pending, log.written) == (0, 777)
    assert not (tmp_path / "spill").exists()
    with pytest.raises(RuntimeError, match="closed"):
        log.record(make_decision(1_000))


def test_a_log_that_was_never_started_still_writes_on_close(engine: Engine) -> None:
    log = BatchingWriter(engine)
    for decision in make_decisions(10):
        log.record(decision)

    log.close(timeout=5)

    assert count_decisions(engine) == 10


def test_record_blocks_when_max_pending_is_reached(engine: Engine) -> None:
    log = BatchingWriter(engine, batch_size=2, max_pending=5)  # not started: nothing drains
    for decision in make_decisions(5):
        log.record(decision)
    sixth = threading.Thread(target=log.record, args=(make_decision(5),))
    sixth.start()
    sixth.join(0.2)
    assert sixth.is_alive(), "record() returned although the queue was full"
    assert log.pending == 5

    log.start()
    sixth.join(5)
    assert not sixth.is_alive()
    log.flush(timeout=5)
    assert count_decisions(engine) == 6
    log.close()


def test_a_decision_that_cannot_be_encoded_is_refused_at_record(
    decision_log: BatchingWriter,
) -> None:
    with pytest.raises(TypeError):
        decision_log.record(make_decision(1, inputs={"when": object()}))
    assert decision_log.pending == 0


def test_the_writer_retries_until_the_database_works(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine_for(db_url)  # not migrated yet: every write fails
    log = BatchingWriter(engine, batch_size=10, flush_seconds=0.01, spill_dir=tmp_path / "spill")
    log.start()
    try:
        with caplog.at_level(logging.WARNING, logger="serving.decision_log.batching"):
            for decision in make_decisions(25, inputs={"address": PERSONAL}):
                log.record(decision)
            wait_until(lambda: log.failures >= 2)
            assert "no such table" in (log.last_error or "")
            assert log.pending == 25

            migrate(engine)
            log.flush(timeout=10)

        assert count_decisions(engine) == 25
        assert (log.pending, log.written) == (0, 25)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings
        assert all(PERSONAL not in r.getMessage() for r in caplog.records)
    finally:
        log.close(timeout=5)
        engine.dispose()
    assert not (tmp_path / "spill").exists()


def test_close_spills_to_a_file_when_the_database_is_unreachable(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = create_engine_for(unreachable_postgres_url())
    spill_dir = tmp_path / "spill"
    log = BatchingWriter(unreachable, batch_size=20, flush_seconds=0.01, spill_dir=spill_dir)
    log.start()
    recorded = make_decisions(75, inputs={"address": PERSONAL})
    try:
        with caplog.at_level(logging.WARNING, logger="serving.decision_log.batching"):
            for decision in recorded:
                log.record(decision)
            with pytest.raises(TimeoutError, match="75 decisions still pending"):
                log.flush(timeout=0.3)
            assert log.failures >= 1
            assert "OperationalError" in (log.last_error or "")

            started = time.monotonic()
            log.close(timeout=0.5)
            assert time.monotonic() - started < 5
    finally:
        unreachable.dispose()

    (spill,) = spill_dir.glob("decisions-spill-*.jsonl")
    assert spill.stat().st_mode & 0o777 == 0o600
    assert load_spill(spill) == recorded
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert str(spill) in errors[0]
    assert "75 decisions" in errors[0]
    assert all(PERSONAL not in r.getMessage() for r in caplog.records)
    assert log.pending == 0
    log.flush(timeout=1)  # nothing left to wait for

    # Replaying the spill file stores every decision once, however often it is replayed.
    assert write_decisions(engine, load_spill(spill)) == 75
    assert write_decisions(engine, load_spill(spill)) == 0


def test_a_spill_file_never_replaces_another(tmp_path: Path) -> None:
    paths = set()
    for _ in range(3):
        unreachable = create_engine_for(unreachable_postgres_url())
        log = BatchingWriter(unreachable, spill_dir=tmp_path)
        log.record(make_decision(1))
        log.close(timeout=0.05)
        unreachable.dispose()
        paths |= set(tmp_path.glob("*.jsonl"))
    assert len(paths) == 3
    assert all(str(os.getpid()) in path.name for path in paths)


def test_the_spill_round_trip_keeps_every_field(tmp_path: Path) -> None:
    from loanops.decisions.spill import write_spill

    decisions = [
        make_decision(1, source="batch", job_id="job-1", reasons=[]),
        make_decision(2, decided_at=datetime(2026, 1, 1, 8, tzinfo=timezone(timedelta(hours=3)))),
    ]
    path = write_spill(tmp_path, decisions)

    loaded = load_spill(path)

    assert loaded == decisions
    assert all(d.decided_at.utcoffset() == timedelta(0) for d in loaded)


def test_the_writer_thread_stops_on_close(engine: Engine) -> None:
    before = {t.ident for t in threading.enumerate()}
    log = BatchingWriter(engine)
    log.start()
    (writer,) = [t for t in threading.enumerate() if t.ident not in before]
    assert writer.daemon

    log.close()

    writer.join(1)
    assert not writer.is_alive()


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


def test_an_in_memory_database_is_shared_by_the_writer_thread() -> None:
    engine = create_engine_for("sqlite://")
    try:
        migrate(engine)
        log = BatchingWriter(engine, flush_seconds=0.01)
        log.start()
        for decision in make_decisions(30):
            log.record(decision)
        log.close(timeout=5)
        assert count_decisions(engine) == 30
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "overrides",
    [
        {"inputs": {"note": "a\x00b"}},
        {"inputs": {"k\x00": 1}},
        {"reasons": [{"code": "x", "text": "\x00", "impact": 0.1}]},
        {"request_id": "req\x00"},
        {"job_id": "j\x00"},
    ],
)
def test_a_nul_character_is_refused_at_record(
    decision_log: BatchingWriter, overrides: dict[str, Any]
) -> None:
    # PostgreSQL stores neither NUL in text nor \u0000 in JSONB: such a batch would never go.
    with pytest.raises(ValueError, match="NUL"):
        decision_log.record(make_decision(1, **overrides))
    assert decision_log.pending == 0


# --- the writer in a process of its own ------------------------------------------------------


def test_a_writer_process_stores_every_decision_recorded_before_close(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    log = DecisionLogProcess(db_url, batch_size=50, flush_seconds=0.05, spill_dir=tmp_path)
    log.start()
    decisions = make_decisions(1_234)
    for decision in decisions:
        log.record(decision)
    log.close(timeout=30)

    stored = read_decisions(engine)
    assert len(stored) == len(decisions)
    assert set(stored["request_id"]) == {d.request_id for d in decisions}
    assert log.restarts == 0
    assert not list(tmp_path.glob("decisions-spill-*"))


def test_a_killed_writer_process_is_restarted_and_later_decisions_are_stored(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    log = DecisionLogProcess(db_url, batch_size=10, flush_seconds=0.05, spill_dir=tmp_path)
    log.start()
    first = make_decisions(20)
    for decision in first:
        log.record(decision)
    wait_until(lambda: count_decisions(engine) == 20, timeout=30)
    pid = log.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # what the OOM killer would do
    wait_until(lambda: not _alive(pid), timeout=10)

    later = make_decisions(30, start=20)
    for decision in later:
        log.record(decision)
    log.close(timeout=30)

    assert log.restarts == 1
    assert count_decisions(engine) == 50


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return waited == 0


def test_a_writer_process_is_out_of_reach_of_signals_to_the_servers_process_group(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    log = DecisionLogProcess(db_url, batch_size=10, flush_seconds=0.05, spill_dir=tmp_path)
    log.start()
    pid = log.pid
    assert pid is not None
    assert os.getpgid(pid) != os.getpgid(0)
    for number in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, or a stray signal, reaching it
        os.kill(pid, number)
    for decision in make_decisions(40):
        log.record(decision)
    log.close(timeout=30)

    assert log.restarts == 0
    assert count_decisions(engine) == 40


def test_a_writer_process_refuses_an_unencodable_decision_in_the_caller(
    db_url: str, tmp_path: Path
) -> None:
    log = DecisionLogProcess(db_url, spill_dir=tmp_path)
    log.start()
    try:
        with pytest.raises(TypeError):
            log.record(make_decision(0, inputs={"when": object()}))
    finally:
        log.close(timeout=10)


def test_a_killed_writer_process_loses_nothing_it_had_not_written(
    db_url: str, tmp_path: Path
) -> None:
    engine = create_engine_for(db_url)  # not migrated yet: the writer holds what it gets
    log = DecisionLogProcess(db_url, batch_size=10, flush_seconds=0.05, spill_dir=tmp_path)
    log.start()
    try:
        for decision in make_decisions(50):
            log.record(decision)
        wait_until(lambda: log.pending == 0 and log.backlog == 50)
        pid = log.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: log.restarts == 1 and log.pid not in (None, pid), timeout=30)

        migrate(engine)
        wait_until(lambda: log.backlog == 0, timeout=30)
        log.close(timeout=30)
        assert count_decisions(engine) == 50
    finally:
        log.close(timeout=5)
        engine.dispose()


def test_past_its_memory_bound_the_log_overflows_to_disk_and_catches_up(
    db_url: str, tmp_path: Path
) -> None:
    engine = create_engine_for(db_url)  # not migrated yet: every write fails
    spill_dir = tmp_path / "spill"
    log = DecisionLogProcess(
        db_url, batch_size=20, flush_seconds=0.02, max_held=100, spill_dir=spill_dir
    )
    log.start()
    try:
        for decision in make_decisions(1_000):
            log.record(decision)
        wait_until(lambda: log.pending == 0 and log.backlog == 1_000)
        assert log.backlog_on_disk >= 900  # at most max_held (100) in memory
        assert list(spill_dir.glob("decisions-spill-*.jsonl"))

        migrate(engine)
        wait_until(lambda: log.backlog == 0, timeout=60)
        assert count_decisions(engine) == 1_000
        assert log.backlog_on_disk == 0
        assert not list(spill_dir.glob("decisions-spill-*.jsonl"))  # replayed, then removed
    finally:
        log.close(timeout=10)
        engine.dispose()
