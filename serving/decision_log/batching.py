"""The batching writer: decisions queued in memory, written in batches by a thread of its own.

`BatchingWriter.record` only appends to a queue; a daemon thread writes up to ``batch_size``
decisions a transaction with `write_decisions`, retrying (with tenacity) while the database
fails. In the API it runs inside the writer process (`serving.decision_log.worker`), so that
its SQLAlchemy work never shares the interpreter lock with the event loop.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Final

from sqlalchemy import Engine
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type, wait_exponential

from loanops.decisions.record import Decision
from loanops.decisions.spill import write_spill
from loanops.decisions.write import check_storable, write_decisions

logger = logging.getLogger(__name__)

_BACKOFF_START_S: Final = 0.1
_BACKOFF_MAX_S: Final = 5.0
# How long `close` waits for the writer beyond its own timeout before it spills regardless.
_CLOSE_GRACE_S: Final = 2.0


def describe_error(error: BaseException) -> str:
    """Name an error without its parameters or detail lines, which may quote personal data."""
    cause = getattr(error, "orig", None) or error
    lines = str(cause).strip().splitlines()
    first = lines[0][:300] if lines else ""
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


class BatchingWriter:
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

        log = BatchingWriter(engine, spill_dir=settings.storage_path / "decision-spill")
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
    def settled(self) -> int:
        """Decisions recorded that are now written or spilled to a file: none of them is lost."""
        with self._lock:
            return self._settled

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
        while (batch := self._next_batch()) is not None:
            try:
                self._retrying()(write_decisions, self._engine, batch)
            except RetryError:
                return  # closing and out of time (or closed): close() spills what is left
            with self._lock:
                if self._closed:
                    return
                self._in_flight = []
                self._written += len(batch)
                self._settled += len(batch)
                self._progress.notify_all()

    def _retrying(self) -> Retrying:
        """Retry a failed write (any error: the batch is kept) until it works or close gives up.

        The wait doubles from 0.1 s to 5 s, and never passes the deadline of `close`; a write is
        idempotent, so a retried batch never duplicates rows.
        """
        exponential = wait_exponential(multiplier=_BACKOFF_START_S, max=_BACKOFF_MAX_S)

        def wait(state: RetryCallState) -> float:
            return max(0.0, min(exponential(state), self._close_deadline - time.monotonic()))

        def stop(state: RetryCallState) -> bool:
            return self._closed or time.monotonic() >= self._close_deadline

        return Retrying(
            retry=retry_if_exception_type(Exception),
            after=self._count_failure,
            stop=stop,
            wait=wait,
            before_sleep=self._warn,
            sleep=self._pause,
        )

    def _count_failure(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        with self._lock:
            self._failures += 1
            self._last_error = describe_error(error) if error else None

    def _warn(self, state: RetryCallState) -> None:
        # Never the inputs: only the error's class and first line.
        logger.warning(
            "Decision log: writing %d decisions failed (%s); retrying in %.1f s",
            len(state.args[1]),
            self._last_error,
            state.upcoming_sleep,
        )
