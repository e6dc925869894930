"""`prefect deploy --all` accepts prefect.yaml, against a real Prefect server process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.services import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A real `prefect server` on a free port, with its own PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "LOANOPS_PROJECT_DIR": str(ROOT),
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
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"prefect server exited: {(home / 'server.log').read_text()}")
            try:
                if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("prefect server did not become healthy within 90 s")
            time.sleep(0.5)
        yield api_url, env
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _prefect(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "prefect"), *args], env=env, cwd=ROOT, capture_output=True, text=True
    )


def test_prefect_deploy_all_accepts_the_project_file(prefect_api: tuple[str, dict]) -> None:
    api_url, env = prefect_api
    pool = _prefect(env, "work-pool", "create", "loanops-process", "--type", "process")
    assert pool.returncode == 0, pool.stderr + pool.stdout

    deployed = _prefect(env, "--no-prompt", "deploy", "--all")

    assert deployed.returncode == 0, deployed.stderr + deployed.stdout
    response = httpx.post(f"{api_url}/deployments/filter", json={}, timeout=10)
    response.raise_for_status()
    deployments = {d["name"]: d for d in response.json()}
    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    assert set(deployments) == {d["name"] for d in declared}
    weekly = deployments["retrain-weekly"]
    assert weekly["entrypoint"] == "flows/retrain.py:retrain_flow"
    assert weekly["parameters"] == {"dataset": "lending_club", "trials": 30}
    assert [s["schedule"]["cron"] for s in weekly["schedules"]] == ["0 3 * * 1"]
    assert weekly["work_pool_name"] == "loanops-process"
