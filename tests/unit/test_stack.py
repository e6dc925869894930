"""`loanops stack down` stops what `up` started, all of it, and nothing else.

Stand-ins for the services are `sleep` processes and a Python process that ignores SIGTERM,
run the way `up` runs a service (cli.stack.supervisor: a program of the stack's supervisord,
in a process group of its own), so these run in seconds. tests/integration/test_ui_browser.py
runs the real stack.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from cli.stack import commands as stack
from cli.stack.probes import StackError, free_port, port_free
from cli.stack.supervisor import Program, Supervisor
from loanops.settings import Settings
from tests.processes import alive
from tests.waiting import wait_for

# Ignores SIGTERM, and starts one child in its group and one in a session of its own (as the
# API starts its decision-log writer).
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen(["sleep", "120"])
subprocess.Popen(["sleep", "120"], start_new_session=True)
print("children", "up", flush=True)
time.sleep(120)
"""


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> stack.StackPaths:
    monkeypatch.setenv("LOANOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(stack, "STOP_GRACE_SECONDS", 1.0)
    paths = stack.stack_paths(Settings(_env_file=None))  # type: ignore[call-arg]
    paths.logs.mkdir(parents=True)
    return paths


@contextlib.contextmanager
def supervised(paths: stack.StackPaths, *programs: Program) -> Iterator[Supervisor]:
    """The stack's supervisord running `programs`, as `up` starts it; stopped at the end."""
    supervisor = stack.supervisor_for(paths)
    supervisor.launch(programs, dict(os.environ))
    try:
        for program in programs:
            supervisor.start(program.name)
        yield supervisor
    finally:
        supervisor.stop_all([])
        supervisor.forget()


def wait_for_log(path: Path, text: str) -> None:
    wait_for(lambda: text in path.read_text(), timeout=10, what=f"{text!r} in {path}")


def test_down_without_a_stack_is_a_no_op(paths: stack.StackPaths) -> None:
    result = CliRunner().invoke(stack.app, ["down"])
    assert result.exit_code == 0
    assert "not running" in result.output
    result = CliRunner().invoke(stack.app, ["status"])
    assert result.exit_code == 0 and "not running" in result.output


def test_down_stops_every_process_even_those_that_ignore_sigterm(
    paths: stack.StackPaths, tmp_path: Path
) -> None:
    script = tmp_path / "stubborn.py"
    script.write_text(STUBBORN)
    with supervised(
        paths, Program("api", [sys.executable, str(script)]), Program("redis", ["sleep", "120"])
    ) as supervisor:
        wait_for_log(supervisor.program_log("api"), "children up")
        api, redis = supervisor.info("api"), supervisor.info("redis")
        daemon = supervisor.pid()
        members = {api.pid, *(p.pid for p in psutil.Process(api.pid).children(recursive=True))}
        assert len(members) == 3  # the leader, its child, and the child in its own session
        stack.write_services(paths, {"api": None, "redis": None})

        result = CliRunner().invoke(stack.app, ["down"])

        assert result.exit_code == 0, result.output
        assert "Stopped 4 process(es)" in result.output
        assert not [pid for pid in members | {redis.pid, daemon} if alive(pid)]
        assert not paths.services.exists() and not supervisor.config.exists()
        assert "stopped: api (terminated by SIGKILL)" in supervisor.log.read_text()


def test_down_leaves_a_reused_pid_alone(paths: stack.StackPaths) -> None:
    # A supervisord that is gone left its PID file, and another process now has that PID.
    with subprocess.Popen(["sleep", "120"]) as stranger:
        try:
            supervisor = stack.supervisor_for(paths)
            supervisor.config.write_text("[supervisord]\n")
            supervisor.pidfile.write_text(f"{stranger.pid}\n")
            stack.write_services(paths, {"mlflow": "http://127.0.0.1:1"})
            result = CliRunner().invoke(stack.app, ["down"])
            assert result.exit_code == 0, result.output
            assert alive(stranger.pid)
            assert not paths.services.exists() and not supervisor.pidfile.exists()
        finally:
            stranger.kill()
            stranger.wait()


def test_up_refuses_while_a_stack_runs(paths: stack.StackPaths) -> None:
    with supervised(paths, Program("mlflow", ["sleep", "120"])) as supervisor:
        pid = supervisor.info("mlflow").pid
        with pytest.raises(StackError, match="already running"):
            stack.start(Settings(_env_file=None), paths, 1, 2, 3)  # type: ignore[call-arg]
        assert supervisor.info("mlflow").pid == pid and alive(pid)


def test_up_names_a_taken_port_and_starts_nothing(paths: stack.StackPaths) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        with pytest.raises(StackError, match=f"port {port} for the API.*--api-port"):
            stack.start(settings, paths, free_port(), free_port(), port)
    assert not paths.services.exists()
    assert not stack.supervisor_for(paths).answers()


def test_a_stale_state_does_not_block_up(paths: stack.StackPaths) -> None:
    supervisor = stack.supervisor_for(paths)
    supervisor.config.write_text("[supervisord]\n")
    supervisor.socket.write_text("")  # a socket file nothing listens on
    stack.write_services(paths, {"api": "http://127.0.0.1:1"})
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    with socket.socket() as taken:  # stop `up` right after the stale state is cleared
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(StackError, match="taken"):
            stack.start(settings, paths, taken.getsockname()[1], 2, 3)
    assert not paths.services.exists() and not supervisor.config.exists()


def test_a_port_in_time_wait_counts_as_free() -> None:
    # Right after `down`, the old servers' closed connections linger in TIME_WAIT on the port;
    # the servers bind with SO_REUSEADDR, so `up` must not call the port taken.
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()  # the server side closes first: its end waits in TIME_WAIT
            client.recv(1)
    assert port_free(port)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert not port_free(listening.getsockname()[1])
