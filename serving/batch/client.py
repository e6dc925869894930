"""What the API needs of the job queue: a Celery client that sends tasks by name, and `submit`.

The client knows the queue, the task names and the wire settings, nothing of the worker's code:
it registers no tasks and connects no worker signals, so building one costs the API nothing.
`serving.batch.tasks` configures the workers' app from the same `celery_config`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from serving.batch.upload import short_message

if TYPE_CHECKING:
    from celery import Celery

    from loanops.settings import Settings
    from serving.batch.job import BatchJob
    from serving.batch.store import JobStore

logger = logging.getLogger(__name__)

QUEUE = "loanops-batch"
"""The Celery queue batch-job tasks travel on."""
PREPARE_TASK = "loanops.batch.prepare"
"""Splits a job into chunks and queues them."""
CHUNK_TASK = "loanops.batch.chunk"
"""Scores one chunk."""
RECORD_TASK = "loanops.batch.record"
"""Writes one scored chunk's decisions to the decision log."""
RECORD_PRIORITY = 9
"""Priority of recording decisions; with Redis, 0 (every other task) goes first."""
_REDIS_PING_TIMEOUT_S = 1.0


class QueueUnavailable(RuntimeError):
    """The job queue (Redis) cannot be reached; the job was not queued and its files are gone."""


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings the API's client and the workers share.

    Raises:
        ValueError: when `redis_url` is not set.
    """
    if not settings.batch.redis_url:
        raise ValueError("batch jobs need Redis: set LOANOPS_REDIS_URL")
    transport = {
        "visibility_timeout": settings.batch.visibility_seconds,
        "socket_connect_timeout": 5,
        "socket_timeout": 30,
    }
    return {
        "broker_url": settings.batch.redis_url,
        "result_backend": settings.batch.redis_url,
        "task_default_queue": QUEUE,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "broker_connection_retry_on_startup": True,
    }


def create_client(settings: Settings) -> Celery:
    """A Celery app that only sends batch-job tasks to the settings' Redis.

    Raises:
        ValueError: when `redis_url` is not set.
    """
    from celery import Celery

    app = Celery("loanops-client", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def submit(client: Celery, store: JobStore, job: BatchJob) -> None:
    """Put a received job on the queue; when the queue is down, remove the job and say so.

    Fails within about a second when Redis does not answer: a PING with short timeouts goes
    first, so the publish never enters kombu's reconnection loop.

    Raises:
        QueueUnavailable: when Redis cannot be reached; the job's files are gone.
    """
    import redis
    from kombu.exceptions import KombuError
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    url = str(client.conf.broker_url)
    try:
        ping = redis.Redis.from_url(
            url,
            socket_connect_timeout=_REDIS_PING_TIMEOUT_S,
            socket_timeout=_REDIS_PING_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            ping.ping()
        finally:
            ping.close()
        client.send_task(
            PREPARE_TASK, args=[job.job_id], queue=QUEUE, retry=False, ignore_result=True
        )
    except (redis.RedisError, KombuError, OSError) as error:
        store.delete(job.job_id)
        raise QueueUnavailable(
            f"the batch-job queue is unavailable (Redis: {short_message(error)}); the job was not "
            "queued, try again later"
        ) from error
    logger.info("batch job %s queued", job.job_id)
