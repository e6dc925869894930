"""Batch-job storage for tests: a local folder, or a bucket on a real S3 API server on loopback.

- `s3_endpoint` (session): moto's standalone S3 server (`tests.services.s3_server`), with this
  process's AWS variables pointing boto3 at its test credentials for the session.
- `s3_bucket`: a bucket of one test's own on that server.
- `job_storage`: a `JobStorage` on each backend, for tests parametrised with `BACKENDS`
  (`@pytest.mark.parametrize("backend", BACKENDS)`, or `params=` of a fixture).

Import the fixtures into a test module: `from tests.storage_fixtures import s3_endpoint  # noqa`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from serving.batch.s3 import S3Storage
from serving.batch.storage import JobStorage, LocalStorage
from tests.services import S3_CREDENTIALS, s3_server

BACKENDS = ("local", pytest.param("s3", marks=pytest.mark.integration))
"""The backends, for `parametrize`; the S3 one talks to a server, so it is an integration test."""


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The endpoint URL of a throwaway S3 API server; the AWS variables point at its account."""
    with pytest.MonkeyPatch.context() as patch, s3_server() as server:
        for name, value in S3_CREDENTIALS.items():
            patch.setenv(name, value)
        yield server.url


def create_bucket(endpoint: str) -> str:
    """A new, empty bucket on the server at `endpoint`; its name."""
    name = f"loanops-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A bucket of this test's own (the server is thrown away after the session)."""
    return create_bucket(s3_endpoint)


def make_storage(backend: str, folder: Path, request: pytest.FixtureRequest) -> JobStorage:
    """Job storage on `backend`: under `folder`, or in a new bucket staging under `folder`."""
    if backend == "local":
        return LocalStorage(folder / "batch-jobs")
    endpoint = request.getfixturevalue("s3_endpoint")
    return S3Storage(
        create_bucket(endpoint), "jobs", folder / "batch-staging", endpoint_url=endpoint
    )


@pytest.fixture(params=BACKENDS)
def job_storage(request: pytest.FixtureRequest, tmp_path: Path) -> JobStorage:
    """Job storage on each backend in turn; the S3 server starts only when a test needs it."""
    return make_storage(str(request.param), tmp_path, request)
