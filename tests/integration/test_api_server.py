"""The scoring API as it runs in production: a `loanops serve` process (uvicorn) in front of a
real `mlflow server` (PostgreSQL-backed, from the foundation fixtures), talked to over HTTP.

Versions are registered on the MLflow server and "promoted" by moving the alias the server
follows, which is all the serving tier watches. Each server is its own process group, started
with `start_new_session` and stopped by its PID.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loanops.decisions.database import create_engine_for
from loanops.decisions.read import count_decisions, read_decisions
from loanops.settings import Settings
from tests.factories import synthetic_applications
from tests.integration.api_fixtures import (
    API_KEYS,
    SCHEMA,
    Server,
    api_settings,
    loanops_serve,
    point_alias,
    register_model_without_card,
    registry_settings,
)
from tests.integration.serving_fixtures import register_version
from tests.services import free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

KEY = {"X-API-Key": API_KEYS[0]}
POLL_SECONDS = 0.5
BODY_TIMEOUT_SECONDS = 1.0
APPLICANTS = synthetic_applications(40)


@dataclass(frozen=True)
class Registry:
    """A model on the MLflow server: two good versions and one loanops cannot serve."""

    settings: Settings
    first: str
    second: str
    without_card: str


@pytest.fixture(scope="module")
def registry(mlflow_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    settings = registry_settings(
        tmp_path_factory.mktemp("registry"), tracking_uri=mlflow_server_url
    )
    first = register_version(settings, seed=0, rows=2000)
    second = register_version(settings, seed=1, rows=2000)
    without_card = register_model_without_card(settings)
    point_alias(settings, first)
    return Registry(settings, first, second, without_card)


@pytest.fixture(scope="module")
def server(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that follows the production alias, with the batch-job queue's Redis down."""
    folder = tmp_path_factory.mktemp("follower")
    settings = api_settings(
        registry.settings,
        folder,
        serving={"model_poll_seconds": POLL_SECONDS, "body_timeout_seconds": BODY_TIMEOUT_SECONDS},
        batch={"redis_url": f"redis://127.0.0.1:{free_port()}/0"},  # nothing listens there
    )
    with loanops_serve(settings, folder) as started:
        yield started


def model_info(server: Server) -> dict[str, Any]:
    response = server.client.get("/v1/model", headers=KEY)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def metric(server: Server, name: str) -> float:
    text = server.client.get("/metrics").text
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]
    assert values, f"{name} is not exported"
    return float(sum(values))


def other_good_version(registry: Registry, version: str) -> str:
    return registry.second if version == registry.first else registry.first


# --- hot swap ------------------------------------------------------------------------------------


@dataclass
class Load:
    """A client thread that keeps scoring until stopped, recording what each answer said."""

    server: Server
    batch: bool
    answers: list[tuple[int, str | None]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        path = "/v1/predict/batch" if self.batch else "/v1/predict"
        with httpx.Client(base_url=self.server.url, timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                i += 1
                application = APPLICANTS[i % len(APPLICANTS)]
                body = {"applications": APPLICANTS[:3]} if self.batch else application
                try:
                    response = client.post(path, json=body, headers=KEY)
                except httpx.HTTPError as error:  # a dropped or refused connection
                    self.errors.append(error)
                    continue
                version = response.json().get("model_version") if response.is_success else None
                if self.batch and response.is_success:
                    versions = {p["model_version"] for p in response.json()["predictions"]}
                    if versions != {version}:
                        self.errors.append(AssertionError(f"one batch, versions {versions}"))
                self.answers.append((response.status_code, version))

    def versions(self) -> list[str | None]:
        return [version for _, version in self.answers]


def test_moving_the_alias_under_load_swaps_versions_without_failing_a_request(
    server: Server, registry: Registry
) -> None:
    old = model_info(server)["version"]
    new = other_good_version(registry, old)
    loads = [Load(server, batch=False), Load(server, batch=False), Load(server, batch=True)]
    threads = [threading.Thread(target=load.run, daemon=True) for load in loads]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: all(len(load.answers) >= 20 for load in loads), what="traffic", timeout=30)

        point_alias(registry.settings, new)
        wait_for(
            lambda: all(load.versions()[-20:].count(new) == 20 for load in loads),
            timeout=60,
            what=f"20 answers from v{new} on every client",
        )
    finally:
        for load in loads:
            load.stop.set()
        for thread in threads:
            thread.join(timeout=30)

    for load in loads:
        assert not load.errors, load.errors[:3]
        assert {status for status, _ in load.answers} == {200}
        versions = load.versions()
        switched = versions.index(new)
        assert switched > 0, "the client saw the old version first"
        assert set(versions[:switched]) == {old}
        assert set(versions[switched:]) == {new}, "once swapped, never back"
    info = model_info(server)
    assert info["version"] == new
    assert info["last_reload_error"] is None
    assert f"serving {registry.settings.model_name} version {new} (was {old})" in server.log()


# --- a version that cannot serve ----------------------------------------------------------------


def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(
    server: Server, registry: Registry
) -> None:
    serving = model_info(server)
    failures_before = serving["reload_failures"]

    point_alias(registry.settings, registry.without_card)
    try:
        wait_for(
            lambda: model_info(server)["last_reload_error_version"] == registry.without_card,
            timeout=30,
            what="the failed reload",
        )
        info = model_info(server)
        predicted = server.client.post("/v1/predict", json=APPLICANTS[0], headers=KEY)
        ready = server.client.get("/readyz")
        failures_metric = metric(server, "loanops_model_reload_failures_total")
    finally:
        point_alias(registry.settings, serving["version"])
    wait_for(
        lambda: model_info(server)["last_reload_error"] is None,
        what="the error to clear once the alias is back on the version serving",
        timeout=30,
    )

    assert info["version"] == serving["version"]
    assert f"v{registry.without_card}" in info["last_reload_error"]
    assert "not logged by loanops" in info["last_reload_error"]
    assert info["reload_failures"] > failures_before
    assert failures_metric >= info["reload_failures"] > 0
    assert predicted.status_code == 200
    assert predicted.json()["model_version"] == serving["version"]
    assert ready.json() == {"status": "ready", "model_version": serving["version"], "detail": None}
    assert f"still serving version {serving['version']}" in server.log()


# --- Redis down ---------------------------------------------------------------------------------


def applicants_csv(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["loan_id", *SCHEMA.feature_names])
    writer.writeheader()
    for i, row in enumerate(rows):
        writer.writerow({"loan_id": i, **{k: "" if v is None else v for k, v in row.items()}})
    return buffer.getvalue().encode()


def test_with_redis_down_batch_jobs_are_503_and_online_scoring_goes_on(server: Server) -> None:
    started = time.monotonic()
    submitted = server.client.post(
        "/v1/batch-jobs",
        params={"filename": "applications.csv"},
        content=applicants_csv(APPLICANTS[:10]),
        headers={**KEY, "Content-Type": "text/csv"},
    )
    took = time.monotonic() - started

    assert submitted.status_code == 503, submitted.text
    detail = submitted.json()["detail"]
    assert "batch-job queue is unavailable" in detail
    assert "Redis" in detail
    assert submitted.headers["retry-after"] == "30"
    assert took < 10, f"the refusal took {took:.1f} s"
    jobs = server.settings.storage_path / "batch-jobs"
    assert not jobs.exists() or not [p for p in jobs.iterdir() if p.is_dir()], "job left behind"

    assert server.process.poll() is None
    assert server.client.get("/healthz").status_code == 200
    predicted = server.client.post("/v1/predict", json=APPLICANTS[1], headers=KEY)
    assert predicted.status_code == 200
    batch = server.client.post(
        "/v1/predict/batch", json={"applications": APPLICANTS[:5]}, headers=KEY
    )
    assert batch.status_code == 200
    assert len(batch.json()["predictions"]) == 5


# --- oversized bodies ------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_body_is_413_over_a_real_connection(server: Server, chunked: bool) -> None:
    limit = server.settings.serving.max_body_bytes
    body = b'{"loan_amnt": 1000, "padding": "' + b"x" * (3 * limit) + b'"}'

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(body), 65_536):
            yield body[start : start + 65_536]

    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post("/v1/predict", content=pieces() if chunked else body, headers=KEY)

    assert ("content-length" in response.request.headers) is not chunked
    assert response.status_code == 413
    assert response.json() == {
        "detail": f"request body is larger than {limit} bytes (LOANOPS_MAX_BODY_BYTES)"
    }
    assert server.client.post("/v1/predict", json=APPLICANTS[0], headers=KEY).status_code == 200


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/predict", "application/json"),
        ("/v1/outcomes", "application/json"),  # a body FastAPI reads itself
        ("/v1/batch-jobs?filename=loans.csv", "text/csv"),  # an upload, streamed
    ],
)
def test_a_body_that_stops_arriving_is_408_and_the_connection_closed(
    server: Server, path: str, content_type: str
) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {API_KEYS[0]}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: 1000\r\n\r\n"
    )
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10 * BODY_TIMEOUT_SECONDS) as raw:
        raw.sendall(head.encode() + b'{"loa')  # headers, then 5 bytes, then silence
        answer = b""
        while chunk := raw.recv(65_536):  # until the server closes the connection
            answer += chunk
    waited = time.monotonic() - started

    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", answer
    assert b"content-type: application/json" in headers.lower()
    assert json.loads(body) == {
        "detail": "the request body stopped arriving: nothing for 1 s "
        "(LOANOPS_BODY_TIMEOUT_SECONDS)"
    }
    assert BODY_TIMEOUT_SECONDS <= waited < BODY_TIMEOUT_SECONDS + 5
    assert server.client.post("/v1/predict", json=APPLICANTS[0], headers=KEY).status_code == 200


# --- shutdown -----------------------------------------------------------------------------------


def test_sigterm_flushes_every_decision_to_the_log_before_exit(
    registry: Registry, tmp_path: Path
) -> None:
    # Pinned, and with a writer that would sit on its batch for a minute: only the flush at
    # shutdown can write these decisions.
    settings = api_settings(
        registry.settings,
        tmp_path,
        serving={"model_ref": f"models:/{registry.settings.model_name}/{registry.second}"},
        decision_log={"flush_seconds": 60.0, "batch_size": 10_000},
    )
    answered: list[dict[str, Any]] = []
    with loanops_serve(settings, tmp_path) as server:
        for application in APPLICANTS[:12]:
            response = server.client.post("/v1/predict", json=application, headers=KEY)
            assert response.status_code == 200, response.text
            answered.append(response.json())
        batch = server.client.post(
            "/v1/predict/batch", json={"applications": APPLICANTS[12:17]}, headers=KEY
        )
        answered.extend(batch.json()["predictions"])
        engine = create_engine_for(settings.decision_db_url)
        written_while_serving = count_decisions(engine)

        os.kill(server.pid, signal.SIGTERM)
        exit_code = server.process.wait(timeout=40)
        log = server.log()

    records = read_decisions(engine)
    engine.dispose()

    assert written_while_serving == 0
    # uvicorn shuts down gracefully, then re-raises the signal, so the exit is "killed by SIGTERM".
    assert exit_code in (0, -signal.SIGTERM), log[-3000:]
    assert "Application shutdown complete" in log
    assert len(records) == len(answered) == 17
    by_id = records.set_index("request_id")
    assert set(by_id.index) == {a["request_id"] for a in answered}
    for answer in answered:
        record = by_id.loc[answer["request_id"]]
        assert record["model_version"] == answer["model_version"] == registry.second
        assert record["probability"] == answer["probability_of_default"]
        assert record["decision"] == answer["decision"]
    for key in API_KEYS:
        assert key not in log
