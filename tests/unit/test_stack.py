"""`python -m flows.stack down` stops what `up` recorded, all of it, and nothing else.

Stand-ins for the services are `sleep` processes and a Python process that ignores SIGTERM,
started the way `up` starts a service (flows.stack._spawn: a process group of its own), so
these run in about a second. tests/integration/test_ui_browser.py runs the real stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows import stack
from flows.local_stack import StackError
from loanops.settings import Settings

# Ignores SIGTERM, and starts one child in its group and one in a session of its own (as the
# API starts its decision-log writer). It prints "children up" from two words: the log also
# holds the command line, this very source.
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
def spawned(
    paths: stack.StackPaths, name: str, command: list[str]
) -> Iterator[tuple[stack.Service, subprocess.Popen[bytes]]]:
    service, child = stack._spawn(
        name, command, paths.logs / f"{name}.log", dict(os.environ), paths.root, None
    )
    try:
        yield service, child
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def wait_for_log(path: Path, text: str) -> None:
    for _ in range(200):
        if text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_down_without_a_stack_is_a_no_op(paths: stack.StackPaths) -> None:
    result = CliRunner().invoke(stack.app, ["down"])
    assert result.exit_code == 0
    assert "not running" in result.output
    result = CliRunner().invoke(stack.app, ["status"])
    assert result.exit_code == 0 and "not running" in result.output


def test_down_stops_every_process_even_those_that_ignore_sigterm(paths: stack.StackPaths) -> None:
    with (
        spawned(paths, "api", [sys.executable, "-c", STUBBORN]) as (api, api_child),
        spawned(paths, "redis", ["sleep", "120"]) as (redis, _),
    ):
        wait_for_log(paths.logs / "api.log", "children up")
        members = stack._alive_members([api])
        assert len(members) == 3  # the leader, its child, and the child in its own session
        stack.write_services(paths, [redis, api])

        result = CliRunner().invoke(stack.app, ["down"])

        assert result.exit_code == 0, result.output
        assert "Stopped 4 process(es)" in result.output
        assert not [pid for pid in members | {redis.pid} if alive(pid)]
        assert not paths.pids.exists()
        api_child.wait(timeout=5)
        assert api_child.returncode == -signal.SIGKILL


def test_down_leaves_a_reused_pid_alone(paths: stack.StackPaths) -> None:
    # A process that took the PID of a recorded service has another start time.
    with spawned(paths, "stranger", ["sleep", "120"]) as (stranger, _):
        assert stranger.started is not None
        recorded = stack.Service("mlflow", stranger.pid, stranger.started - 1, "log")
        stack.write_services(paths, [recorded])
        result = CliRunner().invoke(stack.app, ["down"])
        assert result.exit_code == 0, result.output
        assert alive(stranger.pid)
        assert not paths.pids.exists()


def test_up_refuses_while_a_stack_runs(paths: stack.StackPaths) -> None:
    with spawned(paths, "mlflow", ["sleep", "120"]) as (mlflow, _):
        stack.write_services(paths, [mlflow])
        with pytest.raises(StackError, match="already running"):
            stack.start(Settings(_env_file=None), paths, 1, 2, 3)  # type: ignore[call-arg]
        assert json.loads(paths.pids.read_text())["services"][0]["pid"] == mlflow.pid


def test_up_names_a_taken_port_and_starts_nothing(paths: stack.StackPaths) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        with pytest.raises(StackError, match=f"port {port} for the API.*--api-port"):
            stack.start(settings, paths, stack.free_port(), stack.free_port(), port)
    assert not paths.pids.exists()


def test_a_stale_pids_file_does_not_block_up(paths: stack.StackPaths) -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    stack.write_services(paths, [stack.Service("api", child.pid, None, "log")])
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    with socket.socket() as taken:  # stop `up` right after the stale file is cleared
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(StackError, match="taken"):
            stack.start(settings, paths, taken.getsockname()[1], 2, 3)
    assert not paths.pids.exists()


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
    assert stack._port_free(port)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert not stack._port_free(listening.getsockname()[1])
