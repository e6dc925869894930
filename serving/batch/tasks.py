"""The batch workers' Celery app and its tasks; `loanops worker` runs it (`run_worker`).

A job runs as three kinds of task on one queue, with its state kept in the `JobStore`:

    prepare(job)     split the upload into chunk files; queue one `chunk` task per chunk
    chunk(job, i)    validate, score and explain chunk i; keep its output and its decisions; the
                     chunk that finds every other chunk done assembles the result
    record(job, i)   write chunk i's decisions to the decision log, with the job's challenger's
                     beside them when one shadows it (`serving.batch.shadow`); lowest priority,
                     so results come first, and retried until the database takes them

Every task is acknowledged only when it returns (`acks_late`), and a task whose process dies is
put back on the queue (`reject_on_worker_lost`), so a killed worker costs a rerun of its chunk,
never a lost one. Every step is idempotent: chunk files are named by index and replaced whole,
decisions are keyed by `<job id>-<row>`, and only one assembly moves the job to `succeeded`. There
is no chord: the last chunk to land finds out from the store, which a killed worker cannot confuse.

Tasks that vanish (a Redis that restarted empty) are sent again from the job state in SQL by the
sweep, a thread of each worker's main process (`serving.batch.sweep`).

Retries are Celery's own (`autoretry_for`, `retry_backoff`): a step turns an error that a retry
may fix into `TransientError`, and the job fails when the retries run out (`JobStep.on_failure`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
from celery import Celery, Task
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from loanops.settings import Settings
from serving.batch.chunks import score_chunk
from serving.batch.client import (
    CHUNK_TASK,
    PREPARE_TASK,
    QUEUE,
    RECORD_PRIORITY,
    RECORD_TASK,
    celery_config,
    create_client,
)
from serving.batch.job import BatchJob
from serving.batch.runtime import WorkerRuntime, preload
from serving.batch.sweep import Sweeper, sweep_interval
from serving.batch.upload import BatchFileError
from serving.heap import freeze_heap

logger = logging.getLogger(__name__)

STEP_RETRIES = 5
"""Retries of a step that hit a transient error (after 2, 4, 8, 16 and 32 s); then the job fails."""
RETRY_BACKOFF_MAX_S = 60
_PROCESS_START_TIMEOUT_S = 300.0  # loading a model from the registry can take a while

app = Celery("loanops", set_as_current=False)
"""The workers' app; `configure` points it at Redis before the worker starts."""
_runtime: WorkerRuntime | None = None


class TransientError(Exception):
    """A step failed for a reason a retry may fix: the registry, database, Redis or network."""

    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(describe(error))
        self.step = step


class JobStep(Task):
    """A task that works on one job: when its retries run out, the job fails with the reason."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        if isinstance(exc, TransientError) and args:
            runtime().store.mark_failed(args[0], f"{exc.step} failed: {exc}")


_STEP_OPTIONS: dict[str, Any] = {
    "base": JobStep,
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    "autoretry_for": (TransientError,),
    "retry_backoff": 2,
    "retry_backoff_max": RETRY_BACKOFF_MAX_S,
    "retry_jitter": False,
    "max_retries": STEP_RETRIES,
}


def configure(settings: Settings) -> WorkerRuntime:
    """Point the app at the settings' Redis and make the runtime its tasks use in this process.

    Raises:
        ValueError: when `redis_url` is not set.
    """
    global _runtime
    app.conf.update(
        celery_config(settings),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_proc_alive_timeout=_PROCESS_START_TIMEOUT_S,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    _runtime = WorkerRuntime(settings)
    worker_process_init.connect(_process_started, weak=False, dispatch_uid="loanops-warm")
    stale_after_s = settings.batch.visibility_seconds
    sweeper = Sweeper(
        _runtime.store, create_client(settings), stale_after_s, sweep_interval(stale_after_s)
    )
    worker_ready.connect(lambda **_: sweeper.start(), weak=False, dispatch_uid="loanops-sweep")
    worker_shutdown.connect(lambda **_: sweeper.stop(), weak=False, dispatch_uid="loanops-stop")
    return _runtime


def runtime() -> WorkerRuntime:
    """The runtime `configure` made.

    Raises:
        RuntimeError: when the worker was not configured.
    """
    if _runtime is None:
        raise RuntimeError("the batch worker is not configured: call configure(settings)")
    return _runtime


def _process_started(**_: Any) -> None:
    runtime().process_started()


def is_transient(error: BaseException) -> bool:
    """Whether a retry may succeed: the registry, the database, Redis, the bucket or the network
    let us down.

    A model that cannot serve, a bad file or a bug is no such error: retrying changes nothing.
    """
    import redis
    import requests
    from botocore import exceptions as s3_errors
    from kombu.exceptions import OperationalError as QueueError
    from mlflow.exceptions import MlflowException
    from sqlalchemy import exc as sql_errors

    if isinstance(error, MlflowException):
        try:
            return int(error.get_http_status_code()) >= 500
        except (TypeError, ValueError):
            return False
    if isinstance(error, s3_errors.ClientError):
        # The client retried throttling and 5xx answers already; a retry later may still help.
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return int(status) >= 500 or int(status) == 429
    if isinstance(error, sql_errors.DBAPIError):
        return bool(error.connection_invalidated) or isinstance(
            error, sql_errors.OperationalError | sql_errors.InterfaceError
        )
    return isinstance(
        error,
        ConnectionError
        | TimeoutError
        | requests.ConnectionError
        | requests.Timeout
        | sql_errors.TimeoutError
        | sql_errors.DisconnectionError
        | s3_errors.ConnectionError
        | s3_errors.HTTPClientError
        | redis.ConnectionError
        | redis.TimeoutError
        | QueueError,
    )


def describe(error: BaseException) -> str:
    """An error as one line: its type and its message."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextlib.contextmanager
def job_step(job_id: str, step: str) -> Iterator[None]:
    """Run one step of a job: what is transient is retried, anything else fails the job.

    A step of a deleted job is dropped; a bad file or a model that cannot serve fails the job
    without a traceback, since neither is a bug of ours.
    """
    from serving.model import ModelLoadError

    store = runtime().store
    try:
        yield
    except FileNotFoundError:
        if store.get(job_id) is None:
            logger.info("batch job %s was deleted; dropping %s", job_id, step)
            return
        store.mark_failed(job_id, f"{step} failed: a job file is missing")
        raise
    except BatchFileError as error:
        store.mark_failed(job_id, str(error))
    except ModelLoadError as error:
        store.mark_failed(job_id, f"{step} failed: {describe(error)}")
    except Exception as error:
        if is_transient(error):
            logger.warning("batch job %s: %s hit %s; retrying", job_id, step, describe(error))
            raise TransientError(step, error) from error
        store.mark_failed(job_id, f"{step} failed: {describe(error)}")
        raise


@app.task(name=PREPARE_TASK, **_STEP_OPTIONS)
def prepare(self: Task, job_id: str) -> None:
    """Split a job's input into chunks and queue the chunks not yet scored."""
    worker = runtime()
    store = worker.store
    with job_step(job_id, "splitting the file"):
        job = store.get(job_id)
        if job is None or job.finished:
            return
        store.mark_running(job_id)
        store.split_input(job_id, worker.settings.batch.chunk_rows)
        pending = store.pending_chunks(job_id)
        store.mark_sent(job_id, pending)
        for index in pending:
            score.apply_async((job_id, index), queue=QUEUE)
        if not pending:
            store.assemble(job_id)


@app.task(name=CHUNK_TASK, **_STEP_OPTIONS)
def score(self: Task, job_id: str, index: int) -> None:
    """Score one chunk with the job's version; assemble the result if it was the last."""
    worker = runtime()
    store = worker.store
    with job_step(job_id, f"chunk {index}"):
        job = store.get(job_id)
        if job is None:
            return
        if not job.finished and not store.chunk_done(job_id, index):
            plan = store.plan(job_id)
            if plan.chunk_starts is None:
                raise ValueError(f"chunk {index} of job {job_id} arrived before the split")
            model = worker.models.get(job.model_name, job.model_version)
            started, cpu = time.perf_counter(), time.process_time()
            scored = score_chunk(
                store.read_chunk(job_id, index),
                model,
                first_row=plan.chunk_starts[index],
                job_id=job_id,
                top_reasons=worker.settings.serving.reasons_top,
            )
            store.write_chunk_output(job_id, index, scored.table, scored.counts, scored.decisions)
            logger.info(
                "batch job %s: chunk %d, %d rows (%d rejected) in %.3f s, CPU %.3f s",
                job_id,
                index,
                scored.counts.rows,
                scored.counts.rejected,
                time.perf_counter() - started,
                time.process_time() - cpu,
            )
        if not job.finished and not store.pending_chunks(job_id):
            store.assemble(job_id)
        # Also when the job has finished meanwhile: a redelivered chunk whose first run was
        # killed after its output but before this line queues it (as does the sweep).
        if store.chunk_done(job_id, index) and not store.decisions_recorded(job_id, index):
            # Behind every chunk still to score: the result first, then the log.
            record.apply_async((job_id, index), queue=QUEUE, priority=RECORD_PRIORITY)


@app.task(
    name=RECORD_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=(TransientError,),
    retry_backoff=2,
    retry_backoff_max=RETRY_BACKOFF_MAX_S,
    retry_jitter=False,
    max_retries=None,
)
def record(self: Task, job_id: str, index: int) -> None:
    """Write one scored chunk's decisions to the decision log; retried until it can."""
    worker = runtime()
    store = worker.store
    try:
        job = store.get(job_id)
        decisions = None if job is None else store.read_decisions(job_id, index)
        if job is None or decisions is None:
            return
        if job.challenger_version is not None and job.challenger_error is None:
            decisions = _shadowed(job, index, decisions)
        count = worker.record(decisions)
        store.mark_recorded(job_id, index, count)
    except FileNotFoundError:
        if store.get(job_id) is None:
            return  # the job was deleted
        raise
    except Exception as error:
        if not is_transient(error):
            # The decisions stay on the volume, where an operator can replay them.
            logger.exception("batch job %s: chunk %d's decisions not recorded", job_id, index)
            store.mark_unrecorded(
                job_id, f"the decisions of chunk {index} cannot be recorded: {describe(error)}"
            )
            raise
        step = f"recording chunk {index}"
        logger.warning("batch job %s: %s hit %s; retrying", job_id, step, describe(error))
        raise TransientError(step, error) from error


def _shadowed(job: BatchJob, index: int, decisions: pa.Table) -> pa.Table:
    """The chunk's decisions with the job's challenger's beside them; as they are when the
    challenger fails, which then stops shadowing the job.

    A transient error (the registry is down) is raised, so the record is retried.
    """
    from serving.batch.shadow import shadow_decisions

    worker = runtime()
    version = str(job.challenger_version)
    try:
        challenger = worker.models.get(job.model_name, version)
        return shadow_decisions(
            decisions, challenger, top_reasons=worker.settings.serving.reasons_top
        )
    except Exception as error:
        if is_transient(error):
            raise
        reason = f"challenger v{version} failed on chunk {index}: {describe(error)}"
        logger.warning(
            "batch job %s: %s; recording the champion's decisions alone", job.job_id, reason
        )
        worker.store.mark_challenger_failed(job.job_id, reason)
        return decisions


def run_worker(
    settings: Settings,
    *,
    concurrency: int = 1,
    loglevel: str = "INFO",
    extra_args: Sequence[str] = (),
) -> None:
    """Run a batch worker in the foreground until it is stopped (SIGTERM: warm shutdown).

    Chunks are acknowledged late and requeued when their process dies; each process takes one
    message at a time, so a killed process holds at most one chunk; a message not acknowledged
    within `batch_visibility_seconds` goes to another worker.

    Args:
        settings: configuration; `redis_url` must be set.
        concurrency: worker processes, each scoring one chunk at a time.
        loglevel: Celery's log level.
        extra_args: more `celery worker` arguments.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # A long-running service's log is no place for download progress bars.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    configure(settings)
    preload()
    freeze_heap()  # before the pool forks: the processes inherit it
    argv = [
        "worker",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel}",
        f"--queues={QUEUE}",
        "--pool=prefork",
        f"--hostname=loanops-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
        *extra_args,
    ]
    app.worker_main(argv)
