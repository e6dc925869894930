"""Batch jobs survive a Redis without persistence that is killed mid-job and restarted empty.

The Redis is this module's own (`redis-server` on a free port, no RDB, no AOF), killed with
SIGKILL and started again on the same port 5 s later; the worker is `loanops worker`, the
manifests' command. Every task in flight or queued is gone after the restart: the sweep must
find the lost work in the job state in SQL and send it again. Storage is the local folder: the
sweep works from SQL and the queue alone, and a task sent again reading its chunk from a bucket
is what the killed-worker test of `test_batch_jobs` shows on moto's S3 server.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pandas as pd
import pytest
import redis
from sqlalchemy import func, select

from loanops.data import synthetic as syn
from loanops.decisions.database import create_engine_for
from loanops.decisions.table import DecisionRecord
from loanops.settings import Settings
from serving.batch.client import create_client, submit
from serving.batch.job import BatchJob
from serving.batch.store import JobStore
from tests.integration.serving_fixtures import (
    ServingModel,
    WorkerProcess,
    celery_worker,
    serving_model,  # noqa: F401  (a fixture)
)
from tests.services import free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

CHUNK_ROWS = 100
STALE_AFTER_S = 3.0
"""The visibility timeout: a task not done this long after it was sent counts as lost."""
OUTAGE_S = 5.0
TIMEOUT_S = 60.0


class OwnRedis:
    """A `redis-server` of this module's own, without persistence, that a test may kill."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.skip("no redis-server on PATH")
        command = [executable, "--port", str(self.port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--dir", str(self.folder)]  # fmt: skip
        with (self.folder / "redis.log").open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self._answers, timeout=10.0, what="redis-server to answer", interval=0.1)

    def _answers(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=10)
        self._process = None


def recorded_job(store: JobStore, job_id: str) -> BatchJob | None:
    """The job once none of its decisions is left to record, else None."""
    job = store.get(job_id)
    return job if job is not None and job.decisions_pending == 0 else None


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path_factory.mktemp("own-redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def settings(
    serving_model: ServingModel,  # noqa: F811
    own_redis: OwnRedis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    return serving_model.settings(
        batch={
            "redis_url": own_redis.url,
            "storage_dir": tmp_path_factory.mktemp("fault-storage"),
            "chunk_rows": CHUNK_ROWS,
            "visibility_seconds": STALE_AFTER_S,
        },
        decision_log={
            "database_url": f"sqlite:///{tmp_path_factory.mktemp('fault-db') / 'decisions.db'}"
        },
    )


@pytest.fixture(scope="module")
def worker(
    serving_model: ServingModel,  # noqa: F811
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    assert settings.batch.redis_url is not None
    environment = serving_model.environment(
        LOANOPS_REDIS_URL=settings.batch.redis_url,
        LOANOPS_STORAGE_DIR=str(settings.storage_path),
        LOANOPS_DATABASE_URL=settings.decision_db_url,
        LOANOPS_BATCH_CHUNK_ROWS=str(CHUNK_ROWS),
        LOANOPS_BATCH_VISIBILITY_SECONDS=str(STALE_AFTER_S),
    )
    with celery_worker(environment, log_dir=tmp_path_factory.mktemp("fault-worker")) as process:
        yield process


async def _pieces(data: bytes, size: int = 65_536) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def queue_job(store: JobStore, settings: Settings, frame: pd.DataFrame, version: str) -> BatchJob:
    job = asyncio.run(
        store.receive(
            _pieces(frame.to_csv(index=False).encode()),
            filename="applications.csv",
            content_type="text/csv",
            max_bytes=1 << 30,
            model_name=settings.model_name,
            model_version=version,
            schema=syn.SCHEMA,
        )
    )
    submit(create_client(settings), store, job)
    return job


def logged(settings: Settings, job_id: str) -> int:
    engine = create_engine_for(settings.decision_db_url)
    try:
        with engine.connect() as connection:
            # A job's decisions are keyed `<job id>-<row>`.
            query = select(func.count()).where(
                DecisionRecord.request_id.startswith(f"{job_id}-", autoescape=True)
            )
            return int(connection.scalar(query) or 0)
    finally:
        engine.dispose()


def test_every_job_finishes_whole_when_redis_restarts_empty_mid_job(
    worker: WorkerProcess,
    own_redis: OwnRedis,
    settings: Settings,
    serving_model: ServingModel,  # noqa: F811
) -> None:
    store = JobStore.from_settings(settings)
    small = serving_model.applicants.head(1000)
    big = pd.concat([serving_model.applicants] * 4, ignore_index=True)  # 200 chunks
    first = queue_job(store, settings, small, serving_model.version)
    second = queue_job(store, settings, big, serving_model.version)

    # The first job's decisions wait behind every chunk of the second (they have the lowest
    # priority), so when Redis dies the first has its result and not all of its decisions,
    # and the second has chunks still to score.
    wait_for(
        lambda: (job := store.get(second.job_id)) is not None and job.chunks_done >= 20,
        timeout=TIMEOUT_S,
        what="20 chunks of the second job",
        interval=0.1,
        details=worker.tail,
    )
    own_redis.kill()
    at_kill = {job_id: store.get(job_id) for job_id in (first.job_id, second.job_id)}
    time.sleep(OUTAGE_S)
    own_redis.start()

    finished = wait_for(
        lambda: all((job := store.get(j)) is not None and job.finished for j in at_kill),
        timeout=TIMEOUT_S,
        what="both jobs to finish",
        interval=0.1,
        details=worker.tail,
    )
    assert finished
    before = at_kill[first.job_id]
    assert before is not None and before.status == "succeeded"
    assert before.decisions_pending > 0, "the outage came too late to lose any decision"
    during = at_kill[second.job_id]
    assert during is not None and not during.finished, "the outage came too late"

    for job_id, frame in ((first.job_id, small), (second.job_id, big)):
        recorded = wait_for(
            functools.partial(recorded_job, store, job_id),
            timeout=TIMEOUT_S,
            what=f"job {job_id}'s decisions",
            interval=0.1,
            details=worker.tail,
        )
        assert recorded.status == "succeeded", recorded.error
        assert (recorded.rows_done, recorded.rows_valid) == (len(frame), len(frame))
        assert recorded.decisions_recorded == logged(settings, job_id) == len(frame)
        key = store.result_key(job_id)
        assert key is not None
        with store.storage.local_file(key) as path:
            result = pd.read_csv(path)
        assert result["row"].tolist() == list(range(len(frame)))
        assert result["id"].tolist() == frame["id"].tolist()
    assert "batch sweep: sent" in worker.log()
