"""`prefect deploy --all` accepts prefect.yaml, against a real Prefect server process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _prefect(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "prefect"), *args], env=env, cwd=ROOT, capture_output=True, text=True
    )


def test_prefect_deploy_all_accepts_the_project_file(prefect_server: tuple[str, dict]) -> None:
    api_url, server_env = prefect_server
    env = {**os.environ, **server_env, "LOANOPS_PROJECT_DIR": str(ROOT)}
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

    monitor = deployments["monitor-daily"]
    assert [s["schedule"]["cron"] for s in monitor["schedules"]] == ["0 4 * * *"]
    performance = deployments["performance-weekly"]
    assert [s["schedule"]["cron"] for s in performance["schedules"]] == ["0 5 * * 1"]
    compare = deployments["compare-weekly"]
    assert compare["entrypoint"] == "flows/compare.py:compare_flow"
    assert compare["parameters"] == {"days": 30}
    assert [s["schedule"]["cron"] for s in compare["schedules"]] == ["0 6 * * 1"]
    on_drift = deployments["retrain-on-drift"]
    assert on_drift["entrypoint"] == "flows/retrain.py:retrain_flow"
    automations = httpx.post(f"{api_url}/automations/filter", json={}, timeout=10).json()
    expected = [a["trigger"].get("expect") for a in automations]
    assert ["loanops.retrain.requested"] in expected, automations
