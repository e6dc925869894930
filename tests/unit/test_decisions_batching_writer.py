"""The batching writer on SQLite: batches, flushes, retries, spills and what it refuses.

The unreachable database of the spill tests is a PostgreSQL URL on a port nothing listens on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

import loanops.outcomes  # noqa: F401  (its table is part of Base.metadata and of the migrations)
from loanops.decisions.database import create_engine_for, migrate
from loanops.decisions.read import count_decisions, read_decisions
from loanops.decisions.spill import load_spill
from loanops.decisions.write import write_decisions
from serving.decision_log.batching import BatchingWriter
from tests.factories import make_decision, make_decisions
from tests.services import free_port
from tests.waiting import wait_for

# A value that must never reach a log line: inputs may be personal data.
PERSONAL = "Jane Q. Applicant, 1 Privacy Lane"


def unreachable_postgres_url() -> str:
    """A PostgreSQL URL on a port nothing listens on: every connection is refused at once."""
    return f"postgresql://postgres@127.0.0.1:{free_port()}/loanops?connect_timeout=2"


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
        wait_for(
            lambda: count_decisions(engine) == 1, timeout=5, what="count_decisions(engine) == 1"
        )
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
    unencodable = make_decision(1, inputs={"when": object()})
    with pytest.raises(TypeError, match="not JSON serializable"):
        decision_log.record(unencodable)
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
            wait_for(lambda: log.failures >= 2, timeout=30, what="log.failures >= 2")
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


def test_the_writer_thread_stops_on_close(engine: Engine) -> None:
    before = {t.ident for t in threading.enumerate()}
    log = BatchingWriter(engine)
    log.start()
    (writer,) = [t for t in threading.enumerate() if t.ident not in before]
    assert writer.daemon

    log.close()

    writer.join(1)
    assert not writer.is_alive()


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
        {
            "arm": "champion",
            "challenger_version": "4",
            "challenger_threshold": 0.3,
            "challenger_probability": 0.1,
            "challenger_decision": "approve",
            "challenger_reasons": [{"code": "x", "text": "\x00", "impact": 0.1}],
        },
    ],
)
def test_a_nul_character_is_refused_at_record(
    decision_log: BatchingWriter, overrides: dict[str, Any]
) -> None:
    # PostgreSQL stores neither NUL in text nor \u0000 in JSONB: such a batch would never go.
    with pytest.raises(ValueError, match="NUL"):
        decision_log.record(make_decision(1, **overrides))
    assert decision_log.pending == 0


def test_the_text_of_an_escaped_nul_is_no_nul_and_is_stored(
    decision_log: BatchingWriter, engine: Engine
) -> None:
    # Backslash, "u0000": JSON writes it as \\u0000, which holds the text \u0000 too.
    text = "\\u0000"
    decision_log.record(make_decision(1, inputs={"note": text, text: 1}))
    decision_log.close(timeout=5)
    stored = read_decisions(engine, inputs={"note": "text", text: "number"})
    assert stored["note"].tolist() == [text]
    assert stored[text].tolist() == [1.0]
