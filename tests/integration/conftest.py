"""Real services for the integration tier: PostgreSQL, and an `mlflow server` backed by it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from loanops.decisions.database import create_engine_for, migrate
from loanops.settings import Settings
from tests.services import free_port, fresh_database, mlflow_server, postgres_server_url
from tests.waiting import exited, wait_for

BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A reachable PostgreSQL server: the configured one, or a throwaway one."""
    with postgres_server_url() as url:
        yield url


LoanopsEnvironment = Callable[[Mapping[str, str]], Settings]
"""Sets `LOANOPS_*` (and other) variables for one test and returns the Settings they give."""


@pytest.fixture
def loanops_env(monkeypatch: pytest.MonkeyPatch) -> LoanopsEnvironment:
    """Set a test's environment variables, undone after it, and read the settings they give."""

    def apply(values: Mapping[str, str]) -> Settings:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        return Settings()

    return apply


@pytest.fixture
def database_url(postgres_server: str) -> Iterator[str]:
    """A fresh PostgreSQL database of one test's own, dropped after it."""
    with fresh_database(postgres_server) as url:
        yield url


@pytest.fixture(name="url", params=["sqlite", "postgresql"])
def sqlite_or_postgresql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each kind the stores support: a SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'decisions.db'}"
    value: str = request.getfixturevalue("database_url")
    return value


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh, migrated decision-log database of one test's own."""
    migrate(database_url)
    engine = create_engine_for(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def mlflow_server_url(
    postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real `mlflow server` on a free port, with its store in a fresh database.

    The database is created for this test session and dropped after it.
    """
    artifacts: Path = tmp_path_factory.mktemp("mlflow-artifacts")
    with (
        fresh_database(postgres_server) as database_url,
        mlflow_server(database_url, artifacts) as url,
    ):
        yield url


@pytest.fixture(scope="session")
def prefect_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, str]]]:
    """A real `prefect server` on a free port, with its own PREFECT_HOME.

    Yields the API URL and the environment variables that point a process at it.
    """
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    client_env = {"PREFECT_HOME": str(home), "PREFECT_API_URL": api_url}
    env = {
        **os.environ,
        **client_env,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: httpx.get(f"{api_url}/health", timeout=2).status_code == 200,
            timeout=90,
            what="the prefect server's /health",
            interval=0.5,
            ignoring=(httpx.HTTPError,),
            given_up=lambda: exited(server, "prefect server"),
            details=lambda: (home / "server.log").read_text(),
        )
        yield api_url, client_env
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
