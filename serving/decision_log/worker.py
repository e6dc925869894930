"""The writer process: a `BatchingWriter` in a child process, fed by a queue, and its start.

It reads `DecisionBatch` and `OverflowFile` messages, records their decisions into a
`BatchingWriter` and reports, in `Progress` messages, which batches are durable, until `Stop`
comes or the server is gone; then it writes what it holds (or spills it) and exits. It ignores
SIGINT, SIGTERM and SIGQUIT and runs in a session of its own, so that Ctrl-C or a signal to the
server's process group cannot drop what it holds before the server has handed everything over.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import sys
import tempfile
import time
import types
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import TYPE_CHECKING, Final

from loanops.decisions.database import create_engine_for
from loanops.decisions.spill import decision_from_line, write_spill_lines
from serving.decision_log.batching import BatchingWriter, describe_error
from serving.decision_log.messages import (
    DecisionBatch,
    FromWriter,
    OverflowFile,
    Progress,
    Started,
    Stop,
    ToWriter,
)

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

logger = logging.getLogger(__name__)

IGNORED_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
REPORT_SECONDS: Final = 0.1
"""Longest the writer waits for input before it reports progress and checks on the server."""
_POLL_S: Final = 0.2
START_TIMEOUT_S: Final = 60.0
"""Longest a new writer process may take to import its modules and report `Started`."""
CLOSE_TIMEOUT_S: Final = 30.0
"""How long the writer retries the database when the server is gone, before it spills."""


@dataclass(frozen=True)
class WriterOptions:
    """How the writer process writes; see `DecisionLogProcess` for each field."""

    url: str
    batch_size: int
    flush_seconds: float
    spill_dir: Path | None
    nice: int = 0


class WriterProcess(SpawnProcess):
    """The child process; the server creates, starts and restarts it (`DecisionLogProcess`)."""

    def __init__(
        self,
        options: WriterOptions,
        requests: Queue[ToWriter],
        replies: Queue[FromWriter],
    ) -> None:
        super().__init__(name="decision-log-writer", daemon=False)
        self._options = options
        self._requests = requests
        self._replies = replies

    def run(self) -> None:
        """Write what the server sends until `Stop`, or until the server is gone."""
        for number in IGNORED_SIGNALS:
            signal.signal(number, signal.SIG_IGN)
        os.setsid()
        if self._options.nice:
            os.nice(self._options.nice)
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
        options = self._options
        engine = create_engine_for(options.url)
        writer = BatchingWriter(
            engine,
            batch_size=options.batch_size,
            flush_seconds=options.flush_seconds,
            # Never blocks the loop that reads the queue: the server sends at most max_held
            # decisions that are not yet durable.
            max_pending=sys.maxsize,
            spill_dir=options.spill_dir,
        )
        writer.start()
        self._replies.put(Started(os.getpid()))
        timeout = CLOSE_TIMEOUT_S
        held: deque[tuple[int, int]] = deque()  # (seq, decisions recorded up to its end)
        recorded = 0
        try:
            while True:
                try:
                    message = self._requests.get(timeout=REPORT_SECONDS)
                except queue.Empty:
                    message = None
                if isinstance(message, Stop):
                    timeout = message.timeout
                    break
                if isinstance(message, DecisionBatch | OverflowFile):
                    recorded += self._record(writer, message)
                    held.append((message.seq, recorded))
                self._report(writer, held)
                parent = multiprocessing.parent_process()
                if message is None and parent is not None and not parent.is_alive():
                    logger.error("the server is gone; writing what is held, then exiting")
                    break
        finally:
            writer.close(timeout)
            self._report(writer, held)
            engine.dispose()

    def _record(self, writer: BatchingWriter, message: DecisionBatch | OverflowFile) -> int:
        """Record the message's decisions into the writer; the count recorded."""
        if isinstance(message, OverflowFile):
            try:
                with open(message.path, "rb") as file:
                    lines = [line for line in file if line.strip()]
            except OSError as error:  # e.g. an operator replayed and moved it already
                logger.error("cannot read the overflow file %s: %s", message.path, error)
                return 0
        else:
            lines = message.lines
        recorded = 0
        for line in lines:
            try:
                decision = decision_from_line(line)
            except (TypeError, ValueError) as error:
                self._refuse(line, error)
                continue
            try:
                writer.record(decision)
            except (TypeError, ValueError) as error:
                self._refuse(line, error)
                continue
            recorded += 1
        return recorded

    def _refuse(self, line: bytes, error: Exception) -> None:
        folder = self._options.spill_dir or Path(tempfile.gettempdir()) / "loanops-decision-spill"
        path = write_spill_lines(folder, [line])
        logger.error("a decision the log refused (%s) went to %s", describe_error(error), path)

    def _report(self, writer: BatchingWriter, held: deque[tuple[int, int]]) -> None:
        settled = writer.settled
        done = []
        while held and held[0][1] <= settled:
            done.append(held.popleft()[0])
        if done:
            self._replies.put(Progress(done, writer.written, writer.failures, writer.last_error))


@dataclass(frozen=True)
class Channel:
    """A running writer process and the queues to and from it."""

    process: WriterProcess
    requests: Queue[ToWriter]
    replies: Queue[FromWriter]


def exited(process: WriterProcess) -> bool:
    """Whether the writer process has exited."""
    # The sentinel, not is_alive(): someone else may have reaped the child (waitpid), and then
    # is_alive() says True for ever.
    return bool(wait([process.sentinel], timeout=0))


def start_writer(options: WriterOptions) -> Channel:
    """Start a writer process and wait for its `Started`.

    Raises:
        TimeoutError: It did not report within `START_TIMEOUT_S`.
        RuntimeError: It exited first.
    """
    # "spawn": the server is a threaded process, and a forked child would inherit locks held
    # by threads that do not exist in it.
    context = multiprocessing.get_context("spawn")
    requests: Queue[ToWriter] = context.Queue()
    replies: Queue[FromWriter] = context.Queue()
    process = WriterProcess(options, requests, replies)
    with _main_module_hidden():
        process.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            message = replies.get(timeout=_POLL_S)
        except queue.Empty:
            if exited(process):
                process.join(1.0)
                raise RuntimeError(
                    f"the decision-log writer exited with code {process.exitcode} at start"
                ) from None
            continue
        if isinstance(message, Started):
            return Channel(process, requests, replies)
    process.kill()
    raise TimeoutError(f"the decision-log writer did not start within {START_TIMEOUT_S} s")


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start a child without the server's ``__main__``.

    A spawned child first runs the parent's main script again, so that functions pickled from
    it resolve. Under `loanops serve` that script is the CLI, whose imports cost the writer
    3.4 s and 150 MB; the writer needs none of it (its code lives in this package). The swap
    lasts only while `Process.start` pickles the child's preparation data.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main
