"""The server's side of the decision-log writer process: `DecisionLogProcess`.

In the API, a writer thread shares the interpreter lock with the event loop: on 2 cores its
SQLAlchemy and SQLite work fell behind at about 2,000 decisions a second while the API answered
3,000, and each batch it wrote stalled the requests in flight. So the writing happens in a child
process (`serving.decision_log.worker`), and the request path only encodes each decision and
appends it to a queue.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Final

from tenacity import Retrying, before_sleep_log, retry_if_exception_type, wait_exponential

from loanops.decisions.record import Decision
from loanops.decisions.spill import spill_line, write_spill_lines
from serving.decision_log.messages import (
    DecisionBatch,
    FromWriter,
    OverflowFile,
    Progress,
    Stop,
)
from serving.decision_log.overflow import OverflowFiles
from serving.decision_log.worker import (
    Channel,
    WriterOptions,
    WriterProcess,
    exited,
    start_writer,
)

logger = logging.getLogger(__name__)

_POLL_S: Final = 0.2
# The sender gathers decisions this long before it hands them on: at 2,000 requests a second,
# one message per 20 decisions instead of one per request, so two threads (the sender and the
# queue's feeder) wake 100 times a second rather than 4,000, each taking the interpreter lock
# from the event loop. Negligible beside the writer's own flush_seconds.
_GATHER_S: Final = 0.01
# Kept back from close's timeout for the writer to spill and exit after `Stop`.
_STOP_GRACE_S: Final = 5.0


class DecisionLogProcess:
    """A `BatchingWriter` in a child process, for a server whose own thread must not wait on it.

    `record` only encodes the decision (which also checks that it can be stored) and queues the
    bytes; a sender thread hands them to the writer process in `DecisionBatch` messages. The
    server keeps each batch until the writer reports it durable (written, or spilled to a file),
    so a writer that dies (the OOM killer, a crash) is restarted and sent again everything it
    had not confirmed: nothing is lost, and as writes are idempotent nothing is stored twice.

    When ``max_held`` decisions wait for the writer (the database is slow or unreachable), new
    ones go to overflow files on disk instead of memory, and reach the writer once it has caught
    up. `backlog` counts every decision not yet in the database; the API's readiness and
    metrics report it. `close` hands everything over and waits for the child to write or spill
    it all.
    """

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 500,
        flush_seconds: float = 0.25,
        max_pending: int = 100_000,
        max_held: int = 20_000,
        spill_dir: Path | None = None,
        writer_nice: int = 0,
    ) -> None:
        """Prepare the log; nothing runs until `start`.

        Args:
            url: Database URL of a migrated decision log.
            batch_size: Most decisions written in one transaction.
            flush_seconds: Longest a decision waits for its batch to fill.
            max_pending: Decisions not yet handed on (to the child or to disk) before
                `saturated` says so.
            max_held: Most decisions handed to the child and not yet durable; beyond it new
                decisions go to overflow files until the child catches up.
            spill_dir: Folder for overflow files and for decisions that cannot be written by
                the time of `close`; defaults to ``<tempdir>/loanops-decision-spill``.
            writer_nice: The child's nice increment (0 to 19).
        """
        if max_held < 1 or max_pending < 1:
            raise ValueError("max_held and max_pending must be at least 1")
        if not 0 <= writer_nice <= 19:
            raise ValueError("writer_nice must lie in 0 to 19")
        spill_dir = spill_dir or Path(tempfile.gettempdir()) / "loanops-decision-spill"
        self._options = WriterOptions(url, batch_size, flush_seconds, spill_dir, writer_nice)
        self._spill_dir = spill_dir
        self._max_pending = max_pending
        self._max_held = max_held
        self._overflow = OverflowFiles(spill_dir, file_decisions=max(batch_size, max_held // 4))

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # queued, settled, closing or stopping
        self._queue: deque[bytes] = deque()
        self._in_hand = 0  # taken from the queue by the sender, on their way to disk
        self._unacked: dict[int, DecisionBatch | OverflowFile] = {}
        self._unacked_count = 0
        self._next_seq = 0
        self._channel: Channel | None = None
        self._sender: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._closing = False
        self._stopping = False
        self._restarts = 0
        self._written = 0
        self._last_error: str | None = None

    @property
    def pending(self) -> int:
        """Decisions recorded but not yet handed to the child or saved to an overflow file."""
        return len(self._queue) + self._in_hand

    @property
    def backlog(self) -> int:
        """Decisions recorded and not yet in the database (in memory or in overflow files)."""
        return self.pending + self._unacked_count + self._overflow.count

    @property
    def backlog_on_disk(self) -> int:
        """Decisions of `backlog` that wait in overflow files rather than in memory."""
        return self._overflow.count

    @property
    def saturated(self) -> bool:
        """True when `max_pending` decisions wait to be handed on: the sender is stuck."""
        return len(self._queue) >= self._max_pending

    @property
    def restarts(self) -> int:
        """How often the child died and was started again."""
        return self._restarts

    @property
    def written(self) -> int:
        """Decisions the current child has written (including any the database already held)."""
        return self._written

    @property
    def last_error(self) -> str | None:
        """The child's most recent write error, without parameters; None if none happened."""
        return self._last_error

    @property
    def pid(self) -> int | None:
        """The child's process id, while it runs."""
        channel = self._channel
        return channel.process.pid if channel else None

    def start(self) -> None:
        """Start the child (waiting until it runs) and the threads that feed and watch it.

        Raises:
            RuntimeError: The log is closed.
            TimeoutError: The child did not start within a minute.
        """
        with self._lock:
            if self._closing:
                raise RuntimeError("the decision log is closed")
            if self._sender is not None:
                return
        self._channel = start_writer(self._options)
        # Before multiprocessing's own exit hook, which would wait for the child for ever.
        atexit.register(self.close)
        self._sender = threading.Thread(target=self._send, name="decision-log-sender", daemon=True)
        self._watcher = threading.Thread(
            target=self._watch, name="decision-log-watcher", daemon=True
        )
        self._sender.start()
        self._watcher.start()

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
            self._queue.append(line)
            if len(self._queue) == 1:
                self._changed.notify_all()

    def close(self, timeout: float = 60) -> None:
        """Hand everything to the child, let it write, stop it and wait for it; idempotent.

        The child gets up to half of ``timeout`` to take everything queued and every overflow
        file, then `Stop`: it writes what it holds, retrying the database for the rest of the
        time (less a few seconds), spills what it still cannot write to a file and exits.
        Overflow files it never got stay on disk, named in an ERROR.

        Args:
            timeout: Most seconds to wait.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._changed.notify_all()
            if self._sender is None:
                return
        atexit.unregister(self.close)
        with self._lock:
            deadline = time.monotonic() + timeout
            self._changed.wait_for(self._handed_over, timeout / 2)
            self._stopping = True
            self._changed.notify_all()
        assert self._sender is not None and self._watcher is not None
        self._sender.join()
        with self._lock:
            leftover = list(self._queue)  # queued while the child was too far behind
            self._queue.clear()
        if leftover:
            self._save_overflow(leftover)
        with self._lock:
            assert self._channel is not None
            process, requests = self._channel.process, self._channel.requests
            left = deadline - time.monotonic()
            requests.put(Stop(timeout=max(left - _STOP_GRACE_S, 1.0)))
        self._watcher.join(max(left, 1.0))
        process.join(1.0)
        if process.exitcode is None and not exited(process):
            logger.error("the decision-log writer (pid %s) did not finish; killing it", process.pid)
            process.kill()
            process.join(5.0)
        self._save_unconfirmed()
        left_on_disk = self._overflow.paths()
        if left_on_disk:
            logger.error(
                "Decision log: %d decisions are still in overflow files (%s); replay each with "
                "write_decisions(engine, load_spill(path)).",
                self._overflow.count,
                ", ".join(str(path) for path in left_on_disk),
            )

    def _handed_over(self) -> bool:
        return not (self._queue or self._in_hand or self._overflow)

    def _take_seq(self) -> int:
        self._next_seq += 1
        return self._next_seq

    def _put(self, message: DecisionBatch | OverflowFile) -> None:
        """Hand a message to the current child and keep it until it is confirmed; under the lock."""
        self._unacked[message.seq] = message
        self._unacked_count += _count(message)
        assert self._channel is not None
        self._channel.requests.put(message)

    def _send(self) -> None:
        """The sender thread: queued decisions to the child, or to disk while it is behind."""
        while True:
            with self._lock:
                self._changed.wait_for(lambda: self._stopping or self._queue or self._may_replay())
                if self._stopping:
                    return
                if self._queue and not self._closing:
                    self._changed.wait_for(lambda: self._stopping or self._closing, _GATHER_S)
                lines = list(self._queue)
                self._queue.clear()
                room = self._max_held - self._unacked_count
                if lines and len(lines) <= room and not self._overflow:
                    self._put(DecisionBatch(self._take_seq(), lines))
                    lines = []
                self._in_hand = len(lines)
            if lines:
                self._save_overflow(lines)
            with self._lock:
                self._in_hand = 0
                if self._may_replay() and (part := self._overflow.take()) is not None:
                    self._put(OverflowFile(self._take_seq(), str(part.path), part.count))

    def _may_replay(self) -> bool:
        # Files hold at most a quarter of max_held: the child never holds more than max_held.
        return bool(self._overflow) and (
            self._unacked_count + self._overflow.next_count() <= self._max_held
        )

    def _save_overflow(self, lines: list[bytes]) -> None:
        first = not self._overflow
        behind = self._unacked_count + len(lines)
        try:
            path = self._overflow.append(lines)
        except OSError as error:
            logger.error(
                "Decision log: the writer is behind and %d decisions could not be saved to an "
                "overflow file in %s (%s); they are lost",
                len(lines),
                self._spill_dir,
                error,
            )
            return
        if first:
            logger.warning(
                "Decision log: the writer is %d decisions behind; saving new decisions to %s "
                "until it catches up",
                behind,
                path,
            )

    def _watch(self) -> None:
        """The watcher thread: confirmations from the child, and a new child if it dies."""
        while True:
            assert self._channel is not None
            process, replies = self._channel.process, self._channel.replies
            try:
                self._settle(replies.get(timeout=_POLL_S))
                continue
            except queue.Empty:
                pass
            if not exited(process):
                continue
            with contextlib.suppress(queue.Empty):
                while True:  # what the child said before it exited
                    self._settle(replies.get(timeout=0.05))
            with self._lock:
                if self._stopping:
                    return
            self._restart(process)

    def _settle(self, message: FromWriter) -> None:
        if not isinstance(message, Progress):
            return
        with self._lock:
            for seq in message.settled:
                done = self._unacked.pop(seq, None)
                if done is None:
                    continue
                self._unacked_count -= _count(done)
                if isinstance(done, OverflowFile):
                    Path(done.path).unlink(missing_ok=True)
            self._written = message.written
            self._last_error = message.last_error
            self._changed.notify_all()

    def _restart(self, dead: WriterProcess) -> None:
        dead.join(1.0)
        self._restarts += 1
        logger.error(
            "the decision-log writer exited with code %s; starting another and sending it the "
            "%d decisions it had not confirmed",
            dead.exitcode,
            self._unacked_count,
        )
        retrying = Retrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=0.5, max=10),
            before_sleep=before_sleep_log(logger, logging.ERROR),
            stop=lambda _: self._stopping,
            reraise=True,
        )
        try:
            channel = retrying(start_writer, self._options)
        except Exception as error:  # only once closing: the retries go on until then
            logger.error("no new decision-log writer before close: %s", error)
            return
        with self._lock:
            self._channel = channel
            for seq in sorted(self._unacked):
                channel.requests.put(self._unacked[seq])
            self._changed.notify_all()

    def _save_unconfirmed(self) -> None:
        """After the child is gone: spill what it never confirmed (it died after `Stop`)."""
        with self._lock:
            lines = [
                line
                for message in self._unacked.values()
                if isinstance(message, DecisionBatch)
                for line in message.lines
            ]
        if not lines:
            return
        path = write_spill_lines(self._spill_dir, lines)
        logger.error(
            "Decision log: the writer exited without confirming %d decisions; saved them to %s. "
            "Replay with write_decisions(engine, load_spill(path)).",
            len(lines),
            path,
        )


def _count(message: DecisionBatch | OverflowFile) -> int:
    return len(message.lines) if isinstance(message, DecisionBatch) else message.count
