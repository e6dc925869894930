"""The container tier's session: a Docker engine, the image built on a Debian base, and the
real services the containers talk to (an `mlflow server` holding a production model, a Redis
database, PostgreSQL databases), all on 127.0.0.1.

No engine is an error, never a skip: the tier exists to run the image. What it measures (build
time, image size, start-to-ready) is printed at the end of the run and kept in
`test-artifacts/container/figures.json` (or under `$LOANOPS_TEST_ARTIFACTS`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.container.engine import (
    BASE_IMAGE,
    Engine,
    EngineMissing,
    build_image,
    docker_engine,
    ensure_base_image,
)
from tests.integration.api_fixtures import registry_settings
from tests.integration.serving_fixtures import claimed_redis_db, promote, register_version
from tests.manifests.kube import ROOT
from tests.services import fresh_database, mlflow_server, postgres_server_url, redis_url

IMAGE = "loanops:container-test"
FIGURES: dict[str, str] = {}
"""What the tier measured, by name; printed in the terminal summary."""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("container image")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(scope="session")
def artifacts() -> Iterator[Path]:
    """Where the container logs and the figures stay after the run."""
    configured = os.environ.get("LOANOPS_TEST_ARTIFACTS")
    folder = (Path(configured) if configured else ROOT / "test-artifacts") / "container"
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    (folder / "figures.json").write_text(json.dumps(FIGURES, indent=2) + "\n")


@pytest.fixture(scope="session")
def engine(artifacts: Path) -> Iterator[Engine]:
    try:
        with docker_engine(artifacts) as running:
            yield running
    except EngineMissing as missing:
        pytest.fail(f"the container tier cannot run: {missing}", pytrace=False)


@pytest.fixture(scope="session")
def image(engine: Engine, artifacts: Path) -> str:
    """The repository's image, built on the Debian base (made first if the engine lacks it)."""
    try:
        made = ensure_base_image(engine, artifacts)
    except EngineMissing as missing:
        pytest.fail(f"the container tier cannot run: {missing}", pytrace=False)
    if made is not None:
        FIGURES["base image made (debootstrap + import)"] = f"{made:.0f} s"
    started = time.monotonic()
    build_image(engine, ROOT, IMAGE, artifacts / "build.log")
    FIGURES["image build (BuildKit cache as found)"] = f"{time.monotonic() - started:.1f} s"
    size = engine.image_size(IMAGE)
    base = engine.image_size(BASE_IMAGE)
    FIGURES["image size"] = f"{size / 1e9:.2f} GB ({base / 1e6:.0f} MB of it the base)"
    return IMAGE


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    with postgres_server_url() as url:
        yield url


@dataclass(frozen=True)
class Registry:
    """A real `mlflow server` on loopback and the production model registered in it."""

    tracking_uri: str
    model_name: str
    version: str


@pytest.fixture(scope="session")
def registry(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """An `mlflow server` (store in a fresh database) whose model has a production version."""
    folder = tmp_path_factory.mktemp("registry")
    with (
        fresh_database(postgres_server) as store,
        mlflow_server(store, folder / "artifacts") as url,
    ):
        settings = registry_settings(folder / "home", tracking_uri=url)
        version = register_version(settings, seed=0)
        promote(settings, version)
        yield Registry(url, settings.model_name, version)


@pytest.fixture(scope="session")
def queue() -> Iterator[str]:
    """A Redis database of this session's own, for the batch-job queue."""
    with redis_url() as server, claimed_redis_db(server) as url:
        yield url


@pytest.fixture(scope="session")
def decisions_url(postgres_server: str) -> Iterator[str]:
    """The decision log's and the batch jobs' database, as in the production overlay."""
    with fresh_database(postgres_server) as url:
        yield url
