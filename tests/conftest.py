"""Session-wide test environment.

Prefect and MLflow read some settings when first imported, so they are set here, before any
test module imports them: a throwaway PREFECT_HOME (its temporary API server and database), no
telemetry from either library, and one OpenMP thread so model timings stay steady on 2 cores.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from threadpoolctl import threadpool_limits

_PREFECT_HOME = tempfile.mkdtemp(prefix="loanops-test-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
# As the CLI's embedded defaults (cli/environment.py): a temporary server's first start migrates
# its database, which on 2 busy cores took longer than Prefect's default 20 s wait.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")
for _name in [name for name in os.environ if name.startswith("LOANOPS_") and "TEST" not in name]:
    # Tests build their own settings; a developer's shell must not leak into them.
    del os.environ[_name]


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """BLAS and OpenMP threads only contend with each other on a 2-core runner."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session", autouse=True)
def _remove_prefect_home() -> Iterator[None]:
    yield
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    # Registered here, not in pyproject.toml, next to the skip that goes with it.
    config.addinivalue_line(
        "markers",
        "real_cluster: runs against the real Kubernetes cluster of LOANOPS_TEST_KUBECONFIG; "
        "skipped without one",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("LOANOPS_TEST_KUBECONFIG"):
        return
    skip = pytest.mark.skip(
        reason="no Kubernetes API server can run here, and the emulator runs these tests "
        "already; set LOANOPS_TEST_KUBECONFIG to a cluster's kubeconfig to run them there"
    )
    for item in items:
        if "real_cluster" in item.keywords:
            item.add_marker(skip)
