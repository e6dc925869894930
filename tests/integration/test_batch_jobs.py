"""Batch jobs end to end: a real Redis, real `loanops worker` processes and the registry.

The API's part is played by `JobStore.receive` and `submit`, exactly as the router calls them.
Tests run on the local folder, shared with the worker. Those whose outcome depends on where
inputs, chunks and results live (`ON_EACH_BACKEND`: a job's results, the killed worker, an
aborted submission, the API's upload) run again on a bucket of moto's S3 server on loopback,
where the worker has a storage folder of its own and shares nothing with this process but the
bucket and the database. Job state, versions and the queue do not depend on the backend.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest
from celery import Celery
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from loanops.decisions.database import create_engine_for, migrate
from loanops.decisions.read import read_decisions
from loanops.settings import Settings
from serving.app import create_app
from serving.batch.client import QueueUnavailable, create_client, submit
from serving.batch.job import BatchJob
from serving.batch.store import JobStore
from serving.model import LoadedModel, load_version
from tests.integration.serving_fixtures import (
    ServingModel,
    WorkerProcess,
    batch_redis_url,  # noqa: F401  (a fixture)
    celery_worker,
    pool_pids,
    promote,
    register_version,
    serving_model,  # noqa: F401  (a fixture)
)
from tests.services import S3_CREDENTIALS, free_port
from tests.storage_fixtures import (
    BACKENDS,
    create_bucket,
    s3_endpoint,  # noqa: F401  (a fixture)
)
from tests.waiting import poll_until, wait_for

pytestmark = pytest.mark.integration

CHUNK_ROWS = 500
JOB_TIMEOUT_S = 90.0
OUTPUT = ["row", "probability", "decision", "reason_codes", "rejection_reason"]


ON_EACH_BACKEND = pytest.mark.parametrize("overrides", BACKENDS, indirect=True, scope="module")
ON_LOCAL_FOLDER = pytest.mark.parametrize("overrides", ["local"], indirect=True, scope="module")


@pytest.fixture(scope="module")
def overrides(
    request: pytest.FixtureRequest,
    batch_redis_url: str,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """What this module's API and workers share besides the model: queue, storage, chunk size.

    Parametrised by each test (`ON_EACH_BACKEND` or `ON_LOCAL_FOLDER`) with its storage backend.
    """
    batch: dict[str, Any] = {
        "redis_url": batch_redis_url,
        "storage_dir": tmp_path_factory.mktemp("storage"),
        "chunk_rows": CHUNK_ROWS,
        "visibility_seconds": 120.0,
    }
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        batch |= {
            "storage": "s3",
            "s3_bucket": create_bucket(endpoint),
            "s3_endpoint_url": endpoint,
        }
    return {"batch": batch}


@pytest.fixture(scope="module")
def settings(serving_model: ServingModel, overrides: dict[str, Any]) -> Settings:  # noqa: F811
    return serving_model.settings(**overrides)


@pytest.fixture(scope="module")
def worker(
    serving_model: ServingModel,  # noqa: F811
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    batch = [v for v in Settings.environment_variables().values() if v.group == "batch"]
    environment = serving_model.environment(
        **{v.name: str(v.value(settings)) for v in batch if v.value(settings) is not None}
    )
    if settings.batch.storage == "s3":
        # A folder of the worker's own: with a bucket, no volume is shared.
        environment["LOANOPS_STORAGE_DIR"] = str(tmp_path_factory.mktemp("worker-storage"))
        environment.update(S3_CREDENTIALS)
    with celery_worker(environment, log_dir=tmp_path_factory.mktemp("worker-log")) as process:
        yield process


@pytest.fixture(scope="module")
def celery_app(settings: Settings) -> Celery:
    return create_client(settings)


@pytest.fixture(scope="module")
def store(settings: Settings) -> JobStore:
    return JobStore.from_settings(settings)


@pytest.fixture(scope="module")
def decision_log(settings: Settings) -> Iterator[Engine]:
    engine = create_engine_for(settings.decision_db_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def production(settings: Settings, serving_model: ServingModel) -> LoadedModel:  # noqa: F811
    from loanops.registry import connect

    return load_version(connect(settings), settings.model_name, serving_model.version)


async def _pieces(data: bytes, size: int = 65_536) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def receive(
    store: JobStore,
    data: bytes,
    filename: str,
    model: LoadedModel,
    *,
    challenger: str | None = None,
) -> BatchJob:
    return asyncio.run(
        store.receive(
            _pieces(data),
            filename=filename,
            content_type=None,
            max_bytes=1 << 30,
            model_name=model.name,
            model_version=model.version,
            schema=model.schema,
            challenger_version=challenger,
        )
    )


def stored_job(store: JobStore, job_id: str) -> BatchJob:
    job = store.get(job_id)
    assert job is not None, f"no job {job_id}"
    return job


def wait_until_finished(store: JobStore, job_id: str, worker: WorkerProcess) -> BatchJob:
    return wait_for(
        lambda: (job := stored_job(store, job_id)).finished and job,
        timeout=JOB_TIMEOUT_S,
        what=f"job {job_id} to finish",
        interval=0.1,
        details=lambda: f"job: {store.get(job_id)}\nworker log:\n{worker.tail()}",
    )


def wait_until_recorded(store: JobStore, job_id: str, worker: WorkerProcess) -> BatchJob:
    """The job once every scored row's decision is in the decision log."""
    return wait_for(
        lambda: (job := stored_job(store, job_id)).decisions_recorded >= job.rows_valid and job,
        timeout=JOB_TIMEOUT_S,
        what=f"job {job_id}'s decisions to be recorded",
        interval=0.1,
        details=lambda: f"job: {store.get(job_id)}\nworker log:\n{worker.tail()}",
    )


def wait_for_chunks(store: JobStore, job_id: str, chunks: int) -> None:
    def done() -> bool:
        job = stored_job(store, job_id)
        assert job.chunks_done >= chunks or not job.finished, (
            f"the job finished too early to test anything: {job}"
        )
        return job.chunks_done >= chunks

    wait_for(
        done,
        timeout=JOB_TIMEOUT_S,
        what=f"{chunks} chunks of job {job_id}",
        interval=0.02,
        details=lambda: f"job: {store.get(job_id)}",
    )


def read_result(store: JobStore, job: BatchJob) -> pd.DataFrame:
    key = store.result_key(job.job_id)
    assert key is not None
    with store.storage.local_file(key) as path:
        if job.input_format == "csv":
            return pd.read_csv(path, dtype={"reason_codes": str, "rejection_reason": str})
        return pd.read_parquet(path)


def only_input_and_result_left(store: JobStore, job: BatchJob) -> None:
    """A finished job keeps its upload and its result; its chunks and decisions are gone."""
    assert store.storage.keys(job.job_id) == [
        f"{job.job_id}/input.{job.input_format}",
        f"{job.job_id}/result.{job.input_format}",
    ]


def logged(engine: Engine, job_id: str) -> pd.DataFrame:
    """A job's logged decisions, read as monitoring reads them (from the segments)."""
    frame = read_decisions(engine, inputs={})
    columns = ["request_id", "model_version", "probability", "decision", "reasons", "source"]
    return frame.loc[frame["job_id"] == job_id, columns].reset_index(drop=True)


def expected_scores(model: LoadedModel, frame: pd.DataFrame) -> np.ndarray:
    return model.score_frame(model.schema.to_frame(frame))[0]


def with_bad_rows(applicants: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, str]]:
    """Applicants as text, some rows broken, and the rejection reason each broken row expects."""
    frame = applicants.astype(object).copy()
    broken = {
        3: ("loan_amnt", "10", "loan_amnt: must be >= 1000"),
        10: ("grade", "Z", "grade: 'Z' is not one of A, B, C, D, E, F, G"),
        11: ("annual_inc", None, "annual_inc: missing"),
        25: ("int_rate", "13.5%", "int_rate: not a number"),
        26: ("delinq_2yrs", "1.5", "delinq_2yrs: must be a whole number"),
    }
    for row, (column, value, _) in broken.items():
        frame.loc[row, column] = value
    return frame, {row: reason for row, (_, _, reason) in broken.items()}


def check_result(
    result: pd.DataFrame,
    submitted: pd.DataFrame,
    model: LoadedModel,
    rejected: dict[int, str],
) -> None:
    """One row per input row, in order, each scored with `model` or rejected as expected."""
    assert list(result.columns) == [*submitted.columns, *OUTPUT]
    assert result["row"].tolist() == list(range(len(submitted)))
    assert result["id"].tolist() == submitted["id"].astype(int).tolist()
    is_rejected = result["rejection_reason"].notna()
    assert dict(result.loc[is_rejected, "rejection_reason"]) == rejected
    assert result.loc[is_rejected, ["probability", "decision"]].isna().all().all()
    scored = result.loc[~is_rejected]
    clean = submitted.drop(index=list(rejected))
    np.testing.assert_allclose(
        scored["probability"].to_numpy(), expected_scores(model, clean), rtol=0, atol=1e-12
    )
    expected_decision = np.where(scored["probability"] >= model.threshold, "decline", "approve")
    assert scored["decision"].tolist() == expected_decision.tolist()
    declined = scored["decision"] == "decline"
    assert declined.sum() > 0
    assert scored.loc[declined, "reason_codes"].notna().all()
    assert scored.loc[~declined, "reason_codes"].isna().all()


@ON_EACH_BACKEND
def test_csv_job_scores_each_row_once_and_rejects_bad_rows_with_reasons(
    worker: WorkerProcess,
    celery_app: Celery,
    store: JobStore,
    production: LoadedModel,
    serving_model: ServingModel,  # noqa: F811
    decision_log: Engine,
) -> None:
    submitted, rejected = with_bad_rows(serving_model.applicants.head(2200))
    job = receive(store, submitted.to_csv(index=False).encode(), "applications.csv", production)
    assert (job.status, job.input_format, job.total_rows) == ("queued", "csv", 2200)

    submit(celery_app, store, job)
    job = wait_until_finished(store, job.job_id, worker)

    assert job.status == "succeeded", job.error
    assert (job.rows_done, job.rows_valid, job.rows_rejected) == (2200, 2195, 5)
    assert (job.chunks, job.chunks_done) == (5, 5)
    result = read_result(store, job)
    check_result(result, submitted, production, rejected)
    assert wait_until_recorded(store, job.job_id, worker).decisions_recorded == 2195
    log = logged(decision_log, job.job_id).set_index("request_id")
    scored = result[result["rejection_reason"].isna()]
    assert sorted(log.index) == sorted(f"{job.job_id}-{row}" for row in scored["row"])
    assert set(log["model_version"]) == {production.version}
    assert set(log["source"]) == {"batch"}
    first_declined = scored[scored["decision"] == "decline"].iloc[0]
    reasons = log.loc[f"{job.job_id}-{first_declined['row']}", "reasons"]
    assert ";".join(r["code"] for r in reasons) == first_declined["reason_codes"]
    assert all(r["impact"] > 0 and r["text"] for r in reasons)


@ON_LOCAL_FOLDER
def test_parquet_job_keeps_its_format_and_columns(
    worker: WorkerProcess,
    celery_app: Celery,
    store: JobStore,
    production: LoadedModel,
    serving_model: ServingModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    submitted = serving_model.applicants.iloc[:1234].reset_index(drop=True)
    path = tmp_path / "applications.parquet"
    submitted.to_parquet(path, index=False)
    job = receive(store, path.read_bytes(), "upload", production)

    submit(celery_app, store, job)
    job = wait_until_finished(store, job.job_id, worker)

    assert job.status == "succeeded", job.error
    assert (job.input_format, job.total_rows, job.rows_valid, job.chunks) == (
        "parquet",
        1234,
        1234,
        3,
    )
    result = read_result(store, job)
    check_result(result, submitted, production, rejected={})
    pd.testing.assert_frame_equal(result[submitted.columns], submitted)


@ON_EACH_BACKEND
def test_a_job_survives_its_worker_being_killed_mid_chunk(
    worker: WorkerProcess,
    celery_app: Celery,
    store: JobStore,
    production: LoadedModel,
    serving_model: ServingModel,  # noqa: F811
    decision_log: Engine,
) -> None:
    # 100,000 rows in 200 chunks: enough work that a kill lands inside a chunk, not after the job.
    submitted = pd.concat([serving_model.applicants] * 20, ignore_index=True)
    job = receive(store, submitted.to_csv(index=False).encode(), "big.csv", production)
    submit(celery_app, store, job)
    wait_for_chunks(store, job.job_id, 3)

    kills = kill_pool_process_mid_task(worker, store, job.job_id)
    job = wait_until_finished(store, job.job_id, worker)

    assert kills >= 1
    assert job.status == "succeeded", job.error
    result = read_result(store, job)
    assert len(result) == len(submitted) == job.rows_done
    assert result["row"].tolist() == list(range(len(submitted)))
    assert result["id"].tolist() == submitted["id"].tolist()
    np.testing.assert_allclose(
        result["probability"], expected_scores(production, submitted), rtol=0, atol=1e-12
    )
    wait_until_recorded(store, job.job_id, worker)
    log = logged(decision_log, job.job_id)
    assert len(log) == log["request_id"].nunique() == len(submitted)
    only_input_and_result_left(store, job)


def kill_pool_process_mid_task(
    worker: WorkerProcess, store: JobStore, job_id: str, attempts: int = 5
) -> int:
    """SIGKILL the pool process until one dies holding a task; return how many were killed.

    A process killed between two chunks loses nothing, which would test nothing, so each kill
    waits until the process is running on a CPU, and the log is checked for Celery's report that
    a task's process was lost. After a miss, the next kill
    waits until the replacement has finished a chunk: a process still loading its model holds
    no task either.
    """
    for attempt in range(1, attempts + 1):
        job = store.get(job_id)
        assert job is not None
        if attempt > 1:
            wait_for_chunks(store, job_id, job.chunks_done + 1)
        lost_before = worker.log().count("WorkerLostError")
        (pid,) = pool_pids(worker)
        wait_until_busy(pid)
        os.kill(pid, signal.SIGKILL)
        if poll_until(functools.partial(tasks_lost_since, worker, lost_before), timeout=5):
            return attempt
        wait_for_new_pool_process(worker, pid)
    raise AssertionError(f"no task was lost in {attempts} kills:\n{worker.tail()}")


def tasks_lost_since(worker: WorkerProcess, lost_before: int) -> bool:
    return worker.log().count("WorkerLostError") > lost_before


def wait_until_busy(pid: int, timeout_s: float = 10.0) -> None:
    """Return once the process runs on a CPU: an idle pool process sleeps, holding no task."""
    process = psutil.Process(pid)
    wait_for(
        lambda: process.status() == psutil.STATUS_RUNNING,
        timeout=timeout_s,
        what=f"pool process {pid} to run a task",
        interval=0.001,
    )


def wait_for_new_pool_process(worker: WorkerProcess, old_pid: int) -> None:
    wait_for(
        lambda: pool_pids(worker) not in ([], [old_pid]),
        timeout=30,
        what=f"a pool process to replace {old_pid}",
        details=worker.tail,
    )


@ON_LOCAL_FOLDER
def test_a_job_keeps_its_version_when_production_moves_mid_job(
    worker: WorkerProcess,
    celery_app: Celery,
    store: JobStore,
    settings: Settings,
    production: LoadedModel,
    serving_model: ServingModel,  # noqa: F811
    decision_log: Engine,
) -> None:
    from loanops.registry import connect

    challenger = register_version(settings, seed=7, params={"C": 1.0, "log_amounts": False})
    submitted = pd.concat([serving_model.applicants] * 4, ignore_index=True)
    job = receive(store, submitted.to_csv(index=False).encode(), "moving.csv", production)
    submit(celery_app, store, job)
    wait_for_chunks(store, job.job_id, 2)
    try:
        promote(settings, challenger)
        # The pool process that replaces this one loads production, which is now the challenger.
        (pid,) = pool_pids(worker)
        os.kill(pid, signal.SIGKILL)
        running = store.get(job.job_id)
        assert running is not None and not running.finished, "production moved after the job"
        job = wait_until_finished(store, job.job_id, worker)
    finally:
        promote(settings, production.version)

    assert job.status == "succeeded", job.error
    assert job.model_version == production.version
    result = read_result(store, job)
    np.testing.assert_allclose(
        result["probability"], expected_scores(production, submitted), rtol=0, atol=1e-12
    )
    new = load_version(connect(settings), settings.model_name, challenger)
    assert not np.allclose(result["probability"], expected_scores(new, submitted), atol=1e-6)
    wait_until_recorded(store, job.job_id, worker)
    assert set(logged(decision_log, job.job_id)["model_version"]) == {production.version}
    assert f"loaded {settings.model_name} v{challenger}" in worker.log()


@ON_LOCAL_FOLDER
def test_job_state_is_durable_across_store_instances(
    worker: WorkerProcess,
    celery_app: Celery,
    store: JobStore,
    settings: Settings,
    production: LoadedModel,
    serving_model: ServingModel,  # noqa: F811
) -> None:
    data = serving_model.applicants.head(300).to_csv(index=False).encode()
    finished = receive(store, data, "a.csv", production)
    submit(celery_app, store, finished)
    wait_until_finished(store, finished.job_id, worker)
    # Recording runs behind the result: compare once it has caught up, or the two reads race it.
    finished = wait_until_recorded(store, finished.job_id, worker)
    waiting = receive(store, data, "b.csv", production)  # received, never queued

    restarted = JobStore.from_settings(settings)

    assert restarted.get(finished.job_id) == finished
    assert restarted.get(waiting.job_id) == waiting
    assert restarted.result_key(finished.job_id) == store.result_key(finished.job_id) is not None
    assert {finished.job_id, waiting.job_id} <= set(restarted.job_ids())
    assert restarted.rows_processed_total() >= 300
    assert restarted.delete(waiting.job_id)
    assert store.get(waiting.job_id) is None


@ON_EACH_BACKEND
def test_submitting_while_redis_is_down_fails_fast_and_leaves_nothing(
    store: JobStore,
    settings: Settings,
    production: LoadedModel,
    serving_model: ServingModel,  # noqa: F811
) -> None:
    down = create_client(
        settings.model_copy(
            update={
                "batch": settings.batch.model_copy(
                    update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"}
                )
            }
        )
    )
    job = receive(
        store, serving_model.applicants.head(10).to_csv(index=False).encode(), "x.csv", production
    )

    started = time.monotonic()
    with pytest.raises(QueueUnavailable, match="queue is unavailable"):
        submit(down, store, job)

    assert time.monotonic() - started < 3
    assert store.get(job.job_id) is None
    assert store.storage.keys(job.job_id) == []


def upload_csv(api: TestClient, frame: pd.DataFrame, filename: str) -> str:
    """Submit `frame` as a CSV file through the API; returns the job id."""
    created = api.post(
        "/v1/batch-jobs",
        params={"filename": filename},
        content=frame.to_csv(index=False).encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert created.status_code == 202, created.text
    job_id: str = created.json()["job_id"]
    return job_id


@ON_EACH_BACKEND
def test_the_api_takes_an_upload_and_serves_its_result_from_storage(
    worker: WorkerProcess,
    settings: Settings,
    serving_model: ServingModel,  # noqa: F811
) -> None:
    submitted = serving_model.applicants.head(1200)
    with TestClient(create_app(settings)) as api:
        wait_for(
            lambda: api.get("/readyz").status_code == 200,
            timeout=60,
            what="the API to load its model",
            interval=0.2,
        )
        job_id = upload_csv(api, submitted, "applications.csv")
        wait_for(
            lambda: api.get(f"/v1/batch-jobs/{job_id}").json()["status"] == "succeeded",
            timeout=JOB_TIMEOUT_S,
            what=f"job {job_id} to succeed",
            interval=0.1,
            details=worker.tail,
        )
        result = api.get(f"/v1/batch-jobs/{job_id}/result")

    assert result.status_code == 200, result.text
    assert result.headers["content-type"].startswith("text/csv")
    assert f'filename="{job_id}-scored.csv"' in result.headers["content-disposition"]
    assert int(result.headers["content-length"]) == len(result.content)
    frame = pd.read_csv(io.BytesIO(result.content))
    assert frame["row"].tolist() == list(range(len(submitted)))
    assert frame["id"].tolist() == submitted["id"].tolist()
    assert frame["probability"].notna().all()


def logged_pairs(engine: Engine, job_id: str) -> pd.DataFrame:
    """A job's logged decisions with their challenger columns, in row order."""
    frame = read_decisions(engine, inputs={})
    frame = frame.loc[frame["job_id"] == job_id]
    order = frame["request_id"].str.rsplit("-", n=1).str[1].astype(int).argsort()
    return frame.iloc[order.to_numpy()].reset_index(drop=True)


@ON_LOCAL_FOLDER
def test_a_shadowed_job_logs_both_models_and_returns_the_champions_result(
    worker: WorkerProcess,
    store: JobStore,
    settings: Settings,
    production: LoadedModel,
    serving_model: ServingModel,  # noqa: F811
    decision_log: Engine,
) -> None:
    from loanops.registry import connect

    client = connect(settings)
    version = register_version(settings, seed=8, params={"C": 1.0, "log_amounts": False})
    challenger = load_version(client, settings.model_name, version)
    submitted, rejected = with_bad_rows(serving_model.applicants.head(1200))
    client.set_registered_model_alias(settings.model_name, "challenger", version)
    try:
        with TestClient(create_app(settings)) as api:

            def attached() -> bool:
                served = api.get("/v1/model")
                return served.status_code == 200 and served.json()["challenger"]["state"] == (
                    "attached"
                )

            wait_for(
                attached,
                timeout=60,
                what="the API to attach the challenger",
                interval=0.2,
            )
            job_id = upload_csv(api, submitted, "shadowed.csv")
    finally:
        client.delete_registered_model_alias(settings.model_name, "challenger")
    wait_until_finished(store, job_id, worker)
    job = wait_until_recorded(store, job_id, worker)

    assert (job.status, job.model_version) == ("succeeded", production.version), job.error
    assert (job.challenger_version, job.challenger_error) == (version, None)
    check_result(read_result(store, job), submitted, production, rejected)
    pairs = logged_pairs(decision_log, job.job_id)
    clean = submitted.drop(index=list(rejected))
    assert len(pairs) == len(clean)
    assert set(pairs["arm"]) == {"champion"}
    assert set(pairs["model_version"]) == {production.version}
    assert set(pairs["challenger_version"]) == {version}
    np.testing.assert_allclose(
        pairs["probability"], expected_scores(production, clean), rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        pairs["challenger_probability"], expected_scores(challenger, clean), rtol=0, atol=1e-12
    )
    assert not np.allclose(pairs["probability"], pairs["challenger_probability"], atol=1e-6)
    declines = pairs["challenger_probability"] >= challenger.threshold
    assert (
        pairs["challenger_decision"].tolist() == np.where(declines, "decline", "approve").tolist()
    )
    assert (pairs["challenger_threshold"] == challenger.threshold).all()
    assert all(len(reasons) > 0 for reasons in pairs.loc[declines, "challenger_reasons"])
    assert all(len(reasons) == 0 for reasons in pairs.loc[~declines, "challenger_reasons"])


@ON_LOCAL_FOLDER
def test_a_challenger_that_fails_in_the_worker_leaves_the_job_and_its_log_to_the_champion(
    worker: WorkerProcess,
    celery_app: Celery,
    store: JobStore,
    settings: Settings,
    production: LoadedModel,
    serving_model: ServingModel,  # noqa: F811
    decision_log: Engine,
) -> None:
    from tests.integration.api_fixtures import register_model_without_card

    broken = register_model_without_card(settings)  # no model card: it cannot load
    submitted = pd.concat([serving_model.applicants] * 2, ignore_index=True)
    job = receive(
        store, submitted.to_csv(index=False).encode(), "broken.csv", production, challenger=broken
    )
    submit(celery_app, store, job)
    wait_until_finished(store, job.job_id, worker)
    job = wait_until_recorded(store, job.job_id, worker)

    assert job.status == "succeeded", job.error
    assert job.challenger_version == broken
    assert job.challenger_error is not None
    assert job.challenger_error.startswith(f"challenger v{broken} failed on chunk ")
    check_result(read_result(store, job), submitted, production, {})
    pairs = logged_pairs(decision_log, job.job_id)
    assert len(pairs) == len(submitted)
    assert pairs["challenger_version"].isna().all()
    assert pairs["challenger_probability"].isna().all()
    np.testing.assert_allclose(
        pairs["probability"], expected_scores(production, submitted), rtol=0, atol=1e-12
    )
