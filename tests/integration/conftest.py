"""Real services for the integration tier: PostgreSQL, and an `mlflow server` backed by it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import fresh_database, mlflow_server, postgres_server_url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A reachable PostgreSQL server: the configured one, or a throwaway one."""
    with postgres_server_url() as url:
        yield url


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
