"""The writer process on SQLite: every decision stored once, through kills, signals and overflow."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import Engine

import loanops.outcomes  # noqa: F401  (its table is part of Base.metadata and of the migrations)
from loanops.decisions.database import create_engine_for, migrate
from loanops.decisions.read import count_decisions, read_decisions
from serving.decision_log.handle import DecisionLogProcess
from tests.factories import make_decision, make_decisions
from tests.processes import alive
from tests.waiting import wait_for


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
    wait_for(
        lambda: count_decisions(engine) == 20, timeout=30, what="count_decisions(engine) == 20"
    )
    pid = log.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # what the OOM killer would do
    wait_for(lambda: not alive(pid), timeout=10, what="not alive(pid)")

    later = make_decisions(30, start=20)
    for decision in later:
        log.record(decision)
    log.close(timeout=30)

    assert log.restarts == 1
    assert count_decisions(engine) == 50


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


def test_a_writer_process_yields_the_cpu_by_its_nice_increment_and_still_writes(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    log = DecisionLogProcess(
        db_url, batch_size=10, flush_seconds=0.05, spill_dir=tmp_path, writer_nice=7
    )
    log.start()
    pid = log.pid
    assert pid is not None
    assert os.getpriority(os.PRIO_PROCESS, pid) == min(os.getpriority(os.PRIO_PROCESS, 0) + 7, 19)
    for decision in make_decisions(25):
        log.record(decision)
    log.close(timeout=30)

    assert count_decisions(engine) == 25


def test_a_writer_process_refuses_an_unencodable_decision_in_the_caller(
    db_url: str, tmp_path: Path
) -> None:
    unencodable = make_decision(0, inputs={"when": object()})
    log = DecisionLogProcess(db_url, spill_dir=tmp_path)
    log.start()
    try:
        with pytest.raises(TypeError, match="not JSON serializable"):
            log.record(unencodable)
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
        wait_for(
            lambda: log.pending == 0 and log.backlog == 50,
            timeout=30,
            what="log.pending == 0 and log.backlog == 50",
        )
        pid = log.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: log.restarts == 1 and log.pid not in (None, pid),
            timeout=30,
            what="log.restarts == 1 and log.pid not in (None, pid)",
        )

        migrate(engine)
        wait_for(lambda: log.backlog == 0, timeout=30, what="log.backlog == 0")
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
        wait_for(
            lambda: log.pending == 0 and log.backlog == 1_000,
            timeout=30,
            what="log.pending == 0 and log.backlog == 1_000",
        )
        assert log.backlog_on_disk >= 900  # at most max_held (100) in memory
        assert list(spill_dir.glob("decisions-spill-*.jsonl"))

        migrate(engine)
        wait_for(lambda: log.backlog == 0, timeout=60, what="log.backlog == 0")
        assert count_decisions(engine) == 1_000
        assert log.backlog_on_disk == 0
        assert not list(spill_dir.glob("decisions-spill-*.jsonl"))  # replayed, then removed
    finally:
        log.close(timeout=10)
        engine.dispose()
