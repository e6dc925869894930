"""`loanops batch submit | status | result` end to end: the CLI, a real API, a real worker.

The API is `loanops serve` (uvicorn) on the session's production model, with API keys and its
job queue on a Redis database of its own; a `loanops worker` scores the chunks (`keyed_api`).
The CLI runs as its installed entry point, as a user types it, and speaks only HTTP to the API.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from loanops.data import synthetic as syn
from serving.app import OPEN_API_WARNING
from tests.integration.api_fixtures import API_KEYS, Server
from tests.integration.served_api import keyed_api  # noqa: F401
from tests.integration.serving_fixtures import ServingModel, serving_model  # noqa: F401

pytestmark = pytest.mark.integration

LOANOPS = Path(sys.executable).parent / "loanops"
ROWS = 300


@pytest.fixture(scope="module")
def api(keyed_api: Server) -> Server:  # noqa: F811
    return keyed_api


def loanops(
    api: Server, *args: str, key: str | None = API_KEYS[0], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOANOPS_")}
    env |= {"LOANOPS_API_URL": api.url, "COLUMNS": "200"}
    if key is not None:
        env["LOANOPS_API_KEY"] = key
    return subprocess.run(
        [str(LOANOPS), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def applications_file(serving_model: ServingModel, folder: Path) -> Path:  # noqa: F811
    """ROWS applicants' features with a loan id passed through, the last one out of range."""
    frame = serving_model.applicants.head(ROWS)[syn.SCHEMA.feature_names]
    frame = frame.assign(loan_id=range(1, ROWS + 1))
    amount = next(f for f in syn.SCHEMA.features if f.minimum is not None and f.kind != "category")
    assert amount.minimum is not None
    frame.loc[frame.index[-1], amount.name] = amount.minimum - 1
    path = folder / "applications.csv"
    frame.to_csv(path, index=False)
    return path


def job_id_of(output: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith("batch job "))
    return line.removeprefix("batch job ").split(":")[0]


def test_submit_waits_then_status_and_result_give_every_row_once(
    api: Server,
    serving_model: ServingModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    path = applications_file(serving_model, tmp_path)

    submitted = loanops(api, "batch", "submit", str(path))

    assert submitted.returncode == 0, submitted.stderr
    assert submitted.stderr == ""
    job_id = job_id_of(submitted.stdout)
    assert f"batch job {job_id}: succeeded" in submitted.stdout
    assert f"{ROWS - 1:,} / 1" in submitted.stdout  # valid / rejected

    status = loanops(api, "batch", "status", job_id)
    assert status.returncode == 0, status.stderr
    assert f"batch job {job_id}: succeeded" in status.stdout
    assert f"{ROWS:,} done of {ROWS:,}" in status.stdout

    fetched = loanops(api, "batch", "result", job_id, cwd=tmp_path)
    assert fetched.returncode == 0, fetched.stderr
    scored = pd.read_csv(tmp_path / f"{job_id}-scored.csv")
    assert sorted(scored["loan_id"]) == list(range(1, ROWS + 1))
    rejected = scored[scored["rejection_reason"].notna()]
    assert rejected["loan_id"].tolist() == [ROWS]
    assert scored.drop(rejected.index)["probability"].between(0, 1).all()
    assert not list(tmp_path.glob(".*.part"))


def test_no_wait_returns_at_once_with_the_job_id(
    api: Server,
    serving_model: ServingModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    submitted = loanops(
        api, "batch", "submit", str(applications_file(serving_model, tmp_path)), "--no-wait"
    )

    assert submitted.returncode == 0, submitted.stderr
    job_id = job_id_of(submitted.stdout)
    assert len(job_id) == 32 and int(job_id, 16) >= 0


@pytest.mark.parametrize(
    ("args", "key", "error"),
    [
        (("status", "0" * 32), "wrong-key", "error: the API at http://127.0.0.1:"),
        (("status", "0" * 32), API_KEYS[0], "error: GET /v1/batch-jobs/"),
        (("result", "f" * 32), API_KEYS[0], "answered 404: no batch job"),
    ],
    ids=["wrong key", "unknown job", "no result"],
)
def test_a_refusal_is_one_line(api: Server, args: tuple[str, ...], key: str, error: str) -> None:
    result = loanops(api, "batch", *args, key=key)

    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and error in result.stderr
    if key == "wrong-key":
        assert "LOANOPS_API_KEY" in result.stderr


def test_a_file_the_api_refuses_is_one_line_with_its_detail(api: Server, tmp_path: Path) -> None:
    path = tmp_path / "wrong.csv"
    path.write_text("not_a_feature\n1\n")

    result = loanops(api, "batch", "submit", str(path))

    assert result.returncode == 1
    assert result.stderr.startswith("error: POST /v1/batch-jobs answered 422: body: ")
    assert len(result.stderr.splitlines()) == 1


def test_an_api_with_keys_gives_no_open_api_warning(api: Server) -> None:
    assert "Application startup complete" in api.log()
    assert OPEN_API_WARNING not in api.log()


def test_an_unreachable_api_is_one_line_naming_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOANOPS_")}
    result = subprocess.run(
        [str(LOANOPS), "batch", "status", "0" * 32, "--url", "http://127.0.0.1:9"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach the API at http://127.0.0.1:9")
