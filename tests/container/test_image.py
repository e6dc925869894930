"""The built image, run as the manifests run it: the API scores, a worker finishes a batch job,
and `loanops retrain` trains, gates and registers a model, each in its own container.

Each container gets its pod's user, read-only root filesystem, capabilities, limits and volumes
(tests/container/pods.py), the ConfigMap and Secret as its environment with the cluster's
addresses replaced by loopback ones, and host networking.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pandas as pd
import pytest
from mlflow import MlflowClient

from loanops.data import synthetic as syn
from tests.container.conftest import FIGURES, Registry
from tests.container.engine import Container, Engine, running_container
from tests.container.pods import (
    PodSpec,
    deployment,
    env_options,
    flow_run_job,
    manifest_environment,
)
from tests.factories import synthetic_applications
from tests.services import free_port
from tests.waiting import wait_for

pytestmark = [pytest.mark.container, pytest.mark.integration]

API_KEY = "container-k1-5e0c"
LOANOPS = Path(sys.executable).parent / "loanops"
BATCH_ROWS = 300
RETRAIN_TIMEOUT_S = 900


def environment(
    registry: Registry, queue: str, decisions_url: str, **overrides: str
) -> dict[str, str]:
    """The pods' environment, pointed at the services on loopback."""
    values = manifest_environment() | {
        "LOANOPS_TRACKING_URI": registry.tracking_uri,
        "LOANOPS_REDIS_URL": queue,
        "LOANOPS_DATABASE_URL": decisions_url,
        "LOANOPS_API_KEYS": API_KEY,
        "LOANOPS_MODEL_NAME": registry.model_name,
        "LOANOPS_DATASET": "synthetic",
        # No cluster here: retrain stops at the registry.
        "LOANOPS_DEPLOY_TARGET": "none",
        **overrides,
    }
    for name, value in values.items():
        if "://" in value and not value.startswith("sqlite:"):
            host = urlparse(value).hostname
            assert host == "127.0.0.1", f"{name} would leave loopback: {value}"
    return values


@dataclass(frozen=True)
class Deployed:
    """The API container and what the other tests need to reach it."""

    container: Container
    url: str
    storage: Path
    environment: dict[str, str]


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `loanops-storage` claim: a host folder owned by the pods' user, as fsGroup makes it."""
    folder = tmp_path_factory.mktemp("storage")
    uid, gid = deployment("api.yaml", "loanops-api").user
    os.chown(folder, uid, gid)
    return folder


@pytest.fixture(scope="module")
def api(
    engine: Engine,
    image: str,
    registry: Registry,
    queue: str,
    decisions_url: str,
    storage: Path,
    artifacts: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployed]:
    spec = deployment("api.yaml", "loanops-api")
    port = free_port()
    argv = spec.args
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    env = environment(registry, queue, decisions_url)
    options = spec.run_options({"loanops-storage": storage})
    options += env_options(env, tmp_path_factory.mktemp("api-env"))
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with running_container(engine, image, "loanops-api-test", options, argv, artifacts) as api:
        wait_for(
            lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200,
            timeout=120,
            what="the API container's /healthz",
            interval=0.25,
            ignoring=(httpx.TransportError,),
            given_up=api.exited,
            details=api.logs,
        )
        FIGURES["API container: docker run to /healthz"] = f"{time.monotonic() - started:.1f} s"
        wait_for(
            lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200,
            timeout=180,
            what="the API container's /readyz (the model loaded from the mlflow server)",
            interval=0.25,
            ignoring=(httpx.TransportError,),
            given_up=api.exited,
            details=api.logs,
        )
        FIGURES["API container: docker run to /readyz (model loaded)"] = (
            f"{time.monotonic() - started:.1f} s"
        )
        yield Deployed(api, url, storage, env)


def test_the_api_container_scores_a_request_with_the_production_model(
    api: Deployed, registry: Registry
) -> None:
    (applicant,) = synthetic_applications(1)

    predicted = httpx.post(
        f"{api.url}/v1/predict", json=applicant, headers={"X-API-Key": API_KEY}, timeout=30
    )

    assert predicted.status_code == 200, predicted.text
    body = predicted.json()
    assert 0 <= body["probability_of_default"] <= 1
    assert body["model_version"] == registry.version
    # As the pod runs: its own user, and nothing written outside the mounted folders.
    assert api.container.exec("id", "-u").stdout.strip() == "10001"
    written = api.container.exec("touch", "/app/written")
    assert written.returncode != 0 and "Read-only file system" in written.stderr
    assert "Traceback" not in api.container.logs()


def test_the_worker_container_completes_a_batch_job(
    engine: Engine,
    image: str,
    api: Deployed,
    artifacts: Path,
    tmp_path: Path,
) -> None:
    spec = deployment("worker.yaml", "loanops-worker")
    options = spec.run_options({"loanops-storage": api.storage})
    options += env_options(api.environment, tmp_path)
    started = time.monotonic()
    with running_container(
        engine, image, "loanops-worker-test", options, spec.args, artifacts
    ) as worker:
        probe = spec.probe("startupProbe")
        wait_for(
            lambda: worker.exec(*probe, timeout=30).returncode == 0,
            timeout=360,
            what="the worker container's startup probe",
            interval=2,
            given_up=worker.exited,
            details=worker.logs,
        )
        FIGURES["worker container: docker run to its startup probe passing"] = (
            f"{time.monotonic() - started:.1f} s"
        )
        path = tmp_path / "applications.csv"
        applicants = pd.DataFrame(synthetic_applications(BATCH_ROWS))[syn.SCHEMA.feature_names]
        applicants.assign(loan_id=range(1, BATCH_ROWS + 1)).to_csv(path, index=False)

        submitted = loanops_batch(api, "submit", str(path), cwd=tmp_path)
        assert submitted.returncode == 0, f"{submitted.stderr}\n{worker.logs()[-3000:]}"
        job_id = re.search(r"batch job (\w+): succeeded", submitted.stdout)
        assert job_id, submitted.stdout
        fetched = loanops_batch(api, "result", job_id[1], cwd=tmp_path)
        assert fetched.returncode == 0, fetched.stderr

        scored = pd.read_csv(tmp_path / f"{job_id[1]}-scored.csv")
        assert sorted(scored["loan_id"]) == list(range(1, BATCH_ROWS + 1))
        assert scored["probability"].between(0, 1).all()
        assert job_id[1] in worker.logs()


def loanops_batch(api: Deployed, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The `loanops batch` CLI on the host, as a user runs it against the API container."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOANOPS_")}
    env |= {"LOANOPS_API_URL": api.url, "LOANOPS_API_KEY": API_KEY, "COLUMNS": "200"}
    return subprocess.run(
        [str(LOANOPS), "batch", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_retrain_in_the_container_registers_and_promotes_a_model(
    engine: Engine,
    image: str,
    registry: Registry,
    queue: str,
    decisions_url: str,
    artifacts: Path,
    tmp_path: Path,
) -> None:
    spec: PodSpec = flow_run_job()
    model_name = f"loan-default-{uuid.uuid4().hex[:8]}"
    env = environment(
        registry,
        queue,
        decisions_url,
        LOANOPS_MODEL_NAME=model_name,
        LOANOPS_DATASET="lending_club",
        LOANOPS_TUNE_TRIALS="3",
        LOANOPS_BOOTSTRAP_SAMPLES="200",
    )
    options = spec.run_options({}) + env_options(env, tmp_path)
    started = time.monotonic()
    with running_container(
        engine, image, "loanops-retrain-test", options, ["loanops", "retrain"], artifacts
    ) as job:
        code = job.wait(timeout=RETRAIN_TIMEOUT_S)
        log = job.logs()
    FIGURES["retrain container: docker run to exit"] = f"{time.monotonic() - started:.0f} s"

    assert code == 0, log[-4000:]
    client = MlflowClient(registry.tracking_uri)
    production = client.get_model_version_by_alias(model_name, "production")
    assert production.tags["loanops.dataset"] == "lending_club"
    assert production.tags["loanops.prefect_flow_run_id"]
