"""The sweep: every worker sends again, now and then, the tasks the job state says are lost.

A task can vanish without a trace: a Redis without persistence that restarts forgets its queue,
and a task whose acknowledgement or retry could not reach the broker is dropped. The job state
in SQL still says which steps are not done and when their task was last sent; what has waited
longer than the visibility timeout is taken (`claim_lost_work`, so that of several workers one
takes each) and sent again. Every task is idempotent, so a step sent twice costs a little time.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from sqlalchemy import Engine, func, select, update

from serving.batch.client import CHUNK_TASK, PREPARE_TASK, QUEUE, RECORD_PRIORITY, RECORD_TASK
from serving.batch.store import UNFINISHED, JobStore
from serving.batch.tables import ChunkRow, JobRow

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)

_TASKS = {"prepare": PREPARE_TASK, "chunk": CHUNK_TASK, "record": RECORD_TASK}
_MIN_INTERVAL_S = 1.0
_MAX_INTERVAL_S = 60.0


@dataclass(frozen=True)
class LostTask:
    """A task to send again: which step, of which job (and chunk)."""

    step: Literal["prepare", "chunk", "record"]
    job_id: str
    index: int | None = None


def claim_lost_work(engine: Engine, stale_after_s: float) -> list[LostTask]:
    """Take the steps whose task was sent over `stale_after_s` ago and is not done.

    Each is taken by moving its `sent_at` to now, only if it still holds the value read, so
    of several sweepers one takes it. Unfinished jobs that are not split, or whose chunks are
    all scored, need a prepare task (which splits, or assembles); unscored chunks of running
    jobs a chunk task; scored chunks whose decisions are not recorded a record task, until
    the job fails.
    """
    now = datetime.now(UTC)
    cutoff = now - timedelta(seconds=stale_after_s)
    lost: list[LostTask] = []
    with engine.begin() as connection:
        unscored = (
            select(func.count())
            .where(ChunkRow.job_id == JobRow.id, ChunkRow.scored_at.is_(None))
            .scalar_subquery()
        )
        jobs = connection.execute(
            select(JobRow.id, JobRow.sent_at).where(
                JobRow.status.in_(UNFINISHED),
                JobRow.sent_at < cutoff,
                (JobRow.chunk_rows.is_(None)) | (unscored == 0),
            )
        ).all()
        for job_id, sent_at in jobs:
            taken = connection.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.sent_at == sent_at)
                .values(sent_at=now)
            ).rowcount
            if taken:
                lost.append(LostTask("prepare", job_id))
        chunks = connection.execute(
            select(ChunkRow.job_id, ChunkRow.chunk, ChunkRow.sent_at, ChunkRow.scored_at)
            .join(JobRow, JobRow.id == ChunkRow.job_id)
            .where(
                ChunkRow.sent_at < cutoff,
                ChunkRow.recorded_at.is_(None),
                ((JobRow.status == "running") & ChunkRow.scored_at.is_(None))
                | ((JobRow.status != "failed") & ChunkRow.scored_at.is_not(None)),
            )
        ).all()
        for job_id, index, sent_at, scored_at in chunks:
            taken = connection.execute(
                update(ChunkRow)
                .where(
                    ChunkRow.job_id == job_id,
                    ChunkRow.chunk == index,
                    ChunkRow.sent_at == sent_at,
                )
                .values(sent_at=now)
            ).rowcount
            if taken:
                lost.append(LostTask("chunk" if scored_at is None else "record", job_id, index))
    return lost


def sweep_interval(stale_after_s: float) -> float:
    """How often to sweep: a quarter of the time a task may wait, within 1 s and a minute."""
    return min(max(stale_after_s / 4, _MIN_INTERVAL_S), _MAX_INTERVAL_S)


def send_again(client: Celery, task: LostTask) -> None:
    """Send one lost task again."""
    args = [task.job_id] if task.index is None else [task.job_id, task.index]
    priority = RECORD_PRIORITY if task.step == "record" else 0
    client.send_task(_TASKS[task.step], args=args, queue=QUEUE, priority=priority, retry=False)


def sweep(store: JobStore, client: Celery, stale_after_s: float) -> list[LostTask]:
    """Take the lost tasks and send them again; return them.

    A task that cannot be sent (Redis is still down) is taken again on a later sweep, once it
    has waited `stale_after_s` once more.
    """
    lost = claim_lost_work(store.engine, stale_after_s)
    for task in lost:
        try:
            send_again(client, task)
        except Exception as error:  # the broker is down: a later sweep takes the task again
            logger.warning("batch sweep: cannot send %s again: %s", task, error)
            return lost
        logger.warning("batch sweep: sent %s again", task)
    return lost


class Sweeper:
    """A thread of the worker's main process that sweeps every `interval_s` seconds."""

    def __init__(
        self, store: JobStore, client: Celery, stale_after_s: float, interval_s: float
    ) -> None:
        self._store = store
        self._client = client
        self._stale_after_s = stale_after_s
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start sweeping, in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="batch-sweep", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop sweeping; waits up to `timeout_s` for a sweep under way."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                sweep(self._store, self._client, self._stale_after_s)
            except Exception:  # the database is down: the next sweep tries again
                logger.exception("batch sweep failed")
