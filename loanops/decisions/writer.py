"""The decision log's writers: a batching thread (`DecisionLog`) and that thread in a process.

The API records each decision through a `DecisionLogProcess`, so that the request path only
appends to a queue.
"""

from __future__ import annotations

import contextlib
import logging
import math
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine

from loanops.decisions.database import create_engine_for
from loanops.decisions.record import Decision
from loanops.decisions.spill import decision_from_line, spill_line, write_spill
from loanops.decisions.write import check_storable, write_decisions

logger = logging.getLogger(__name__)

_BACKOFF_START_S: Final = 0.1
_BACKOFF_MAX_S: Final = 5.0
# How long `close` waits for the writer beyond its own timeout before it spills regardless.
_CLOSE_GRACE_S: Final = 2.0


def _describe(error: BaseException) -> str:
    """Name an error without its parameters or detail lines, which may quote personal data."""
    cause = getattr(error, "orig", None) or error
    lines = str(cause).strip().splitlines()
    first = lines[0][:300] if lines else ""
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


class DecisionLog:
    """Background, batched writer: record() never blocks the request path in normal operation.

    `record` appends to an in-memory queue. A daemon thread takes up to ``batch_size``
    decisions at a time, waiting at most ``flush_seconds`` for a batch to fill, and writes
    each with `write_decisions`. When the database fails it keeps the batch, logs a warning and
    retries with backoff (0.1 s doubling to 5 s) until it succeeds or the log is closed; as
    the write is idempotent, a retried batch never duplicates rows. If ``max_pending`` decisions
    are waiting, `record` blocks until there is room rather than dropping any.

    `close` writes what is left; if the database is still failing when its timeout runs out,
    it saves the remaining decisions to a JSONL file in ``spill_dir`` (see `load_spill`) and
    logs an error naming it.

    Typical use::

        log = DecisionLog(engine, spill_dir=settings.storage_path / "decision-spill")
        log.start()
        log.record(decision)  # per request
        log.close()  # at shutdown
    """

    def __init__(
        self,
        engine: Engine,
        *,
        batch_size: int = 500,
        flush_seconds: float = 0.25,
        max_pending: int = 100_000,
        spill_dir: Path | None = None,
    ) -> None:
        """Prepare the log; nothing runs until `start`.

        Args:
            engine: Engine of a migrated decision-log database.
            batch_size: Most decisions written in one transaction.
            flush_seconds: Longest a decision waits for its batch to fill.
            max_pending: Decisions held in memory before `record` blocks.
            spill_dir: Folder for the spill file of `close`; defaults to
                ``<tempdir>/loanops-decision-spill``. Pass a persistent folder in production.

        Raises:
            ValueError: A size or duration is not positive.
        """
        if batch_size < 1 or max_pending < 1:
            raise ValueError("batch_size and max_pending must be at least 1")
        if not flush_seconds > 0:
            raise ValueError("flush_seconds must be positive")
        self._engine = engine
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._max_pending = max_pending
        self._spill_dir = spill_dir or Path(tempfile.gettempdir()) / "loanops-decision-spill"

        self._lock = threading.Lock()
        self._wake_writer = threading.Condition(self._lock)  # items, flush or close
        self._room = threading.Condition(self._lock)  # the queue shrank
        self._progress = threading.Condition(self._lock)  # decisions were settled
        self._queue: deque[Decision] = deque()
        self._in_flight: list[Decision] = []
        self._recorded = 0
        self._settled = 0  # written or spilled
        self._written = 0
        self._failures = 0
        self._last_error: str | None = None
        self._flush_waiters = 0
        self._closing = False
        self._closed = False
        self._close_deadline = math.inf
        self._thread: threading.Thread | None = None

    @property
    def saturated(self) -> bool:
        """True when `record` would block: the writer is `max_pending` decisions behind."""
        return len(self._queue) >= self._max_pending

    @property
    def pending(self) -> int:
        """Decisions recorded but not yet written (queued or in the batch being written)."""
        with self._lock:
            return self._recorded - self._settled

    @property
    def written(self) -> int:
        """Decisions written so far (including any the database already held)."""
        with self._lock:
            return self._written

    @property
    def failures(self) -> int:
        """Failed write attempts so far."""
        with self._lock:
            return self._failures

    @property
    def last_error(self) -> str | None:
        """The most recent write error, without parameters; None if none happened."""
        with self._lock:
            return self._last_error

    def start(self) -> None:
        """Start the writer thread (a daemon); calling it again does nothing.

        Raises:
            RuntimeError: The log is closed.
        """
        with self._lock:
            if self._closed or self._closing:
                raise RuntimeError("the decision log is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="decision-log-writer", daemon=True
                )
                self._thread.start()

    def record(self, decision: Decision) -> None:
        """Queue a decision for writing.

        Returns at once unless ``max_pending`` decisions are waiting, in which case it blocks
        until the writer makes room.

        Args:
            decision: The decision to store.

        Raises:
            TypeError: Its inputs or reasons cannot be encoded as JSON.
            ValueError: It holds a NUL character, which PostgreSQL cannot store.
            RuntimeError: The log is closed (or was closed while this call waited for room).
        """
        # Fail here, in the caller, rather than as a batch the writer retries forever.
        check_storable(decision)
        with self._lock:
            while len(self._queue) >= self._max_pending and not self._closing:
                self._room.wait()
            if self._closing:
                raise RuntimeError("the decision log is closed")
            self._queue.append(decision)
            self._recorded += 1
            if len(self._queue) == 1 or len(self._queue) >= self._batch_size:
                self._wake_writer.notify()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every decision recorded before this call is written.

        Args:
            timeout: Most seconds to wait; None waits as long as it takes.

        Raises:
            TimeoutError: Some are still pending after ``timeout`` (e.g. the database is down).
            RuntimeError: Decisions are pending but the writer was never started.
        """
        with self._lock:
            target = self._recorded
            if self._settled >= target:
                return
            if self._thread is None:
                raise RuntimeError("the decision log was not started")
            self._flush_waiters += 1
            self._wake_writer.notify()
            try:
                done = self._progress.wait_for(lambda: self._settled >= target, timeout)
            finally:
                self._flush_waiters -= 1
            if not done:
                raise TimeoutError(
                    f"{target - self._settled} decisions still pending after {timeout} s; "
                    f"last error: {self._last_error}"
                )

    def close(self, timeout: float = 30) -> None:
        """Write everything pending, then stop the writer; calling it again does nothing.

        If the decisions cannot all be written within ``timeout`` seconds, the rest go to a
        JSONL file in ``spill_dir`` and an ERROR names it, so that none is lost.

        Args:
            timeout: Most seconds to keep retrying the database before spilling.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._close_deadline = time.monotonic() + timeout
            thread = self._thread
            pending = self._recorded - self._settled
            self._wake_writer.notify_all()
            self._room.notify_all()
        if thread is None and pending:
            # Never started: run the writer now, under the same deadline.
            thread = threading.Thread(target=self._run, name="decision-log-writer", daemon=True)
            with self._lock:
                self._thread = thread
            thread.start()
        if thread is not None:
            thread.join(timeout + _CLOSE_GRACE_S)
        with self._lock:
            # The writer has stopped, or is stuck in a database call: either way what is left
            # goes to disk. If that call does succeed after all, the spill file holds decisions
            # the database has too, and replaying it (idempotent) adds nothing.
            remaining = [*self._in_flight, *self._queue]
            self._queue.clear()
            self._in_flight = []
            self._settled = self._recorded
            self._closed = True
            self._progress.notify_all()
        if remaining:
            self._spill(remaining)

    def _spill(self, decisions: list[Decision]) -> None:
        try:
            path = write_spill(self._spill_dir, decisions)
        except OSError as error:
            logger.error(
                "Decision log: could not write %d decisions to the database (%s) or to a spill "
                "file in %s (%s); they are lost",
                len(decisions),
                self._last_error,
                self._spill_dir,
                error,
            )
            return
        logger.error(
            "Decision log: could not write %d decisions to the database (%s); saved them to %s. "
            "Replay with write_decisions(engine, load_spill(path)).",
            len(decisions),
            self._last_error,
            path,
        )

    def _next_batch(self) -> list[Decision] | None:
        """Wait for a batch to fill (or time out); None once closing and drained."""
        with self._lock:
            while not self._queue and not self._closing:
                self._wake_writer.wait()
            if not self._queue:
                return None
            gather_until = time.monotonic() + self._flush_seconds
            while (
                len(self._queue) < self._batch_size
                and not self._closing
                and not self._flush_waiters
            ):
                remaining = gather_until - time.monotonic()
                if remaining <= 0:
                    break
                self._wake_writer.wait(remaining)
            size = min(self._batch_size, len(self._queue))
            self._in_flight = [self._queue.popleft() for _ in range(size)]
            self._room.notify_all()
            return self._in_flight

    def _pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``; wake early when close() starts, to retry under its deadline."""
        with self._lock:
            closing = self._closing
            until = time.monotonic() + seconds
            while self._closing is closing:
                left = until - time.monotonic()
                if left <= 0:
                    return
                self._wake_writer.wait(left)

    def _run(self) -> None:
        backoff = _BACKOFF_START_S
        batch: list[Decision] | None = None
        while True:
            if batch is None:
                batch = self._next_batch()
                if batch is None:
                    return
            try:
                write_decisions(self._engine, batch)
            except Exception as error:  # any failure: keep the batch and retry
                with self._lock:
                    if self._closed:  # close() gave up on us and spilled the batch
                        return
                    self._failures += 1
                    self._last_error = _describe(error)
                    left = self._close_deadline - time.monotonic()
                # Never the inputs: only the error's class and first line.
                logger.warning(
                    "Decision log: writing %d decisions failed (%s); retrying in %.1f s",
                    len(batch),
                    self._last_error,
                    min(backoff, max(left, 0.0)),
                )
                if left <= 0:
                    return  # closing and out of time: close() spills what is left
                self._pause(min(backoff, left))
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            backoff = _BACKOFF_START_S
            with self._lock:
                if self._closed:
                    return
                self._in_flight = []
                self._written += len(batch)
                self._settled += len(batch)
                self._progress.notify_all()
            batch = None


_FRAME_HEADER: Final = 4
"""Bytes of the big-endian length before each encoded decision on the writer's stdin."""
_RESTART_WAIT_S = 0.5


def _frames(stream: Any) -> Iterator[bytes]:
    """Length-prefixed frames from a binary stream, until it ends."""
    while header := stream.read(_FRAME_HEADER):
        if len(header) < _FRAME_HEADER:
            return  # the sender died mid-frame: nothing complete follows
        body = stream.read(int.from_bytes(header, "big"))
        if body is None or len(body) < int.from_bytes(header, "big"):
            return
        yield body


def write_from_stdin(arguments: Sequence[str] | None = None) -> None:
    """The writer process (`python -m loanops.decisions.writer URL`): a `DecisionLog` on stdin.

    It runs until its stdin ends: when the server closes it, or when the server dies. SIGTERM
    and SIGINT are ignored, so that a stray signal does not drop what it holds before the
    server has handed everything over.
    """
    import argparse
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parser = argparse.ArgumentParser(prog="python -m loanops.decisions.writer")
    parser.add_argument("url")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--flush-seconds", type=float, default=0.25)
    parser.add_argument("--max-pending", type=int, default=100_000)
    parser.add_argument("--spill-dir", type=Path, default=None)
    options = parser.parse_args(arguments)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    engine = create_engine_for(options.url)
    log = DecisionLog(
        engine,
        batch_size=options.batch_size,
        flush_seconds=options.flush_seconds,
        max_pending=options.max_pending,
        spill_dir=options.spill_dir,
    )
    log.start()
    try:
        for line in _frames(sys.stdin.buffer):
            decision = decision_from_line(line)
            try:
                log.record(decision)
            except (TypeError, ValueError) as error:
                folder = options.spill_dir or Path(tempfile.gettempdir()) / "loanops-decision-spill"
                path = write_spill(folder, [decision])
                logger.error("a decision the log refused (%s) went to %s", _describe(error), path)
    finally:
        log.close()
        engine.dispose()


class DecisionLogProcess:
    """A `DecisionLog` in a child process, for a server whose own thread must not wait on it.

    In the API, a writer thread shares the interpreter lock with the event loop: on 2 cores its
    SQLAlchemy and SQLite work fell behind at about 2,000 decisions a second while the API
    answered 3,000, and each batch it wrote stalled the requests in flight. Here `record` only
    encodes the decision (which also checks that it can be stored) and queues the bytes; a
    sender thread pipes them to `python -m loanops.decisions.writer`, which does the rest on another
    core and imports nothing but this module. `close` ends the pipe and waits for the child to
    write or spill everything. A child that dies is restarted, with an ERROR: what it held in
    memory is lost, as with a killed server.
    """

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 500,
        flush_seconds: float = 0.25,
        max_pending: int = 100_000,
        spill_dir: Path | None = None,
    ) -> None:
        """Prepare the log; nothing runs until `start`.

        Args:
            url: Database URL of a migrated decision log.
            batch_size: Most decisions written in one transaction.
            flush_seconds: Longest a decision waits for its batch to fill.
            max_pending: Decisions not yet handed to the child before `saturated` says so.
            spill_dir: Folder for decisions that cannot be written by the time of `close`.
        """
        self._command = [
            sys.executable, "-m", "loanops.decisions.writer", url,
            "--batch-size", str(batch_size), "--flush-seconds", str(flush_seconds),
            "--max-pending", str(max_pending),
            *(["--spill-dir", str(spill_dir)] if spill_dir else []),
        ]  # fmt: skip
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._queue: deque[bytes] = deque()
        self._child: subprocess.Popen[bytes] | None = None
        self._sender: threading.Thread | None = None
        self._closing = False
        self._restarts = 0

    @property
    def pending(self) -> int:
        """Decisions recorded but not yet handed to the child."""
        return len(self._queue)

    @property
    def saturated(self) -> bool:
        """True when `max_pending` decisions wait for the child: it is not keeping up."""
        return len(self._queue) >= self._max_pending

    @property
    def restarts(self) -> int:
        """How often the child died and was started again."""
        return self._restarts

    @property
    def pid(self) -> int | None:
        """The child's process id, while it runs."""
        return self._child.pid if self._child else None

    def start(self) -> None:
        """Start the child and the thread that feeds it."""
        with self._lock:
            if self._closing:
                raise RuntimeError("the decision log is closed")
            if self._sender is not None:
                return
            self._child = self._spawn()
            self._sender = threading.Thread(target=self._send, name="decision-log-sender")
            self._sender.start()

    def record(self, decision: Decision) -> None:
        """Queue a decision for the child; never blocks.

        Raises:
            TypeError: Its inputs or reasons cannot be encoded as JSON.
            RuntimeError: The log is closed or was never started.
        """
        line = spill_line(decision)
        with self._lock:
            if self._closing or self._sender is None:
                raise RuntimeError("the decision log is not running")
            self._queue.append(len(line).to_bytes(_FRAME_HEADER, "big") + line)
            if len(self._queue) == 1:
                self._ready.notify()

    def close(self, timeout: float = 60) -> None:
        """Hand everything to the child, end its input and wait for it; idempotent.

        Args:
            timeout: Most seconds to wait; the child itself retries the database for 30 s
                before it spills.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._ready.notify()
            sender = self._sender
        if sender is None:
            return
        sender.join(timeout)
        child = self._child
        if child is None:
            return
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.error("the decision-log writer (pid %d) did not finish; killing it", child.pid)
            child.kill()
            child.wait()

    def _spawn(self) -> subprocess.Popen[bytes]:
        # A session of its own: a signal to the server's process group (Ctrl-C, a supervisor
        # stopping the group) must not reach the writer before the server has handed it all.
        return subprocess.Popen(
            self._command, stdin=subprocess.PIPE, close_fds=True, start_new_session=True
        )

    def _send(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._ready.wait()
                if not self._queue:  # closing, and everything handed over
                    break
                frames = list(self._queue)
            data = b"".join(frames)
            if not self._deliver(data):
                continue  # the child was replaced; send the same frames again
            with self._lock:
                for _ in frames:
                    self._queue.popleft()
        child = self._child
        if child is not None and child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()

    def _deliver(self, data: bytes) -> bool:
        child = self._child
        assert child is not None and child.stdin is not None
        try:
            child.stdin.write(data)
            child.stdin.flush()
            return True
        except (BrokenPipeError, ValueError, OSError):
            child.wait()
            self._restarts += 1
            logger.error(
                "the decision-log writer exited with code %s; starting another; decisions it "
                "had not yet written are lost",
                child.returncode,
            )
            time.sleep(_RESTART_WAIT_S)
            self._child = self._spawn()
            return False


if __name__ == "__main__":
    write_from_stdin()
