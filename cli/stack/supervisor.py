"""A supervisord of our own, in one folder, driven over its XML-RPC interface.

supervisord starts each program in a process group of its own, knows its PID for as long as it
runs (so a PID the system has since given to another process is never signalled), stops it with
SIGTERM and then SIGKILL after `stopwaitsecs`, to the whole group. What a program started in a
session of its own (the API's decision-log writer) is outside that group: `stop` finds it through
psutil before the stop, and gives it the same grace before SIGKILL.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
import tempfile
import xmlrpc.client
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from supervisor.xmlrpc import SupervisorTransport

from cli.stack.probes import StackError, tail_of, wait_until

SUPERVISORD_TIMEOUT = 30.0
# Longer socket paths do not fit in sockaddr_un (108 bytes on Linux).
MAX_SOCKET_PATH = 100
RUNNING_STATES = frozenset({"STARTING", "RUNNING", "BACKOFF", "STOPPING"})


@dataclass(frozen=True)
class Program:
    """One process for supervisord to run.

    Attributes:
        name: the program's name in supervisord, and its log's (`LOGS/NAME.log`).
        command: what to run.
        environment: on top of supervisord's own environment.
        priority: lower starts first and stops last, as in supervisord.
    """

    name: str
    command: Sequence[str]
    environment: Mapping[str, str] = field(default_factory=dict)
    priority: int = 999


@dataclass(frozen=True)
class ProcessInfo:
    """A program as supervisord reports it: `state` is RUNNING, EXITED, STOPPED and so on."""

    name: str
    pid: int
    state: str
    exit_status: int


class Supervisor:
    """The supervisord whose configuration, PID file and socket are in `root`.

    Args:
        root: its state folder.
        logs: where its own log and each program's log go.
        stop_grace: seconds between SIGTERM and SIGKILL, for a program and for what it started
            outside its process group.
        kill_wait: seconds to wait for a process to go after SIGKILL.
    """

    def __init__(
        self, root: Path, logs: Path, *, stop_grace: float = 20.0, kill_wait: float = 10.0
    ) -> None:
        self.root = root
        self.logs = logs
        self.stop_grace = stop_grace
        self.kill_wait = kill_wait
        self.config = root / "supervisord.conf"
        self.pidfile = root / "supervisord.pid"
        self.log = logs / "supervisord.log"
        socket = root / "supervisor.sock"
        if len(str(socket)) > MAX_SOCKET_PATH:
            digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
            socket = Path(tempfile.gettempdir()) / f"loanops-supervisor-{digest}.sock"
        self.socket = socket

    def program_log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def launch(self, programs: Sequence[Program], environment: Mapping[str, str]) -> None:
        """Write the configuration and start supervisord in the background, programs stopped.

        Raises:
            StackError: supervisord refused the configuration or did not answer in time.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self._configuration(programs))
        started = subprocess.run(
            [str(Path(sys.executable).with_name("supervisord")), "-c", str(self.config)],
            env=dict(environment),
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=SUPERVISORD_TIMEOUT,
            check=False,
        )
        if started.returncode != 0:
            raise StackError(f"supervisord did not start: {started.stderr or started.stdout}")
        wait_until("supervisord", self.answers, SUPERVISORD_TIMEOUT, log=self.log)

    def _configuration(self, programs: Sequence[Program]) -> str:
        sections = [
            "[supervisord]",
            f"logfile={_value(self.log)}",
            f"pidfile={_value(self.pidfile)}",
            f"childlogdir={_value(self.logs)}",
            f"directory={_value(self.root)}",
            "nodaemon=false",
            "",
            "[unix_http_server]",
            f"file={_value(self.socket)}",
            "chmod=0700",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[supervisorctl]",
            f"serverurl=unix://{_value(self.socket)}",
        ]
        for program in programs:
            environment = ",".join(
                f'{key}="{_value(value, quoted=True)}"'
                for key, value in program.environment.items()
            )
            sections += [
                "",
                f"[program:{program.name}]",
                f"command={_value(shlex.join(program.command))}",
                f"directory={_value(self.root)}",
                f"priority={program.priority}",
                # Started and stopped by `start` and `stop` only, never restarted: a service that
                # exits is reported, as before supervisord ran the stack.
                "autostart=false",
                "autorestart=false",
                "startsecs=0",
                "startretries=0",
                "stopasgroup=true",
                "killasgroup=true",
                f"stopwaitsecs={max(1, round(self.stop_grace))}",
                "redirect_stderr=true",
                f"stdout_logfile={_value(self.program_log(program.name))}",
                "stdout_logfile_maxbytes=0",
            ]
            if environment:
                sections.append(f"environment={environment}")
        return "\n".join(sections) + "\n"

    def _rpc(self) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def answers(self) -> bool:
        """Whether a supervisord listens on our socket."""
        try:
            self._rpc().getState()
        except (OSError, xmlrpc.client.Error):
            return False
        return True

    def pid(self) -> int:
        return int(self._rpc().getPID())

    def processes(self) -> list[ProcessInfo]:
        """Every program, in the order of the configuration."""
        return [_info(entry) for entry in self._rpc().getAllProcessInfo()]

    def info(self, name: str) -> ProcessInfo:
        return _info(self._rpc().getProcessInfo(name))

    def start(self, name: str) -> ProcessInfo:
        """Start one program.

        Raises:
            StackError: it could not be spawned; the message ends with its log's tail.
        """
        try:
            self._rpc().startProcess(name, True)
        except xmlrpc.client.Fault as fault:
            raise StackError(
                f"{name} did not start ({fault.faultString}):\n{tail_of(self.program_log(name))}"
            ) from None
        return self.info(name)

    def require_running(self, name: str) -> None:
        """Raise `StackError` with the log's tail when the program is no longer running."""
        info = self.info(name)
        if info.state not in RUNNING_STATES:
            what = f"exited with code {info.exit_status}" if info.state == "EXITED" else info.state
            raise StackError(f"{name} {what}:\n{tail_of(self.program_log(name))}")

    def stop(self, names: Sequence[str]) -> int:
        """Stop the named programs together, and what they started; how many processes stopped.

        Raises:
            StackError: a process outlived SIGKILL.
        """
        infos = [self.info(name) for name in names]
        running = [info for info in infos if info.state in RUNNING_STATES and info.pid]
        processes: list[psutil.Process] = []
        for info in running:
            try:
                leader = psutil.Process(info.pid)
                processes += [leader, *leader.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        alive = [p for p in processes if _alive(p)]
        for info in running:
            try:
                self._rpc().stopProcess(info.name, False)
            except xmlrpc.client.Fault as fault:
                if "NOT_RUNNING" not in fault.faultString:
                    raise
        # supervisord sends SIGKILL to each group after `stopwaitsecs`.
        wait_until(
            f"stopping {', '.join(names)}",
            lambda: all(self.info(n).state not in RUNNING_STATES for n in names),
            self.stop_grace + self.kill_wait,
            log=self.log,
        )
        # Only what left the group remains; the decision-log writer, for one, flushes and exits
        # once the API closed its pipe, so it gets time rather than a signal.
        _, left = psutil.wait_procs([p for p in alive if _alive(p)], timeout=self.stop_grace)
        for process in left:
            process.kill()  # psutil checks first that the PID still is this process
        _, survivors = psutil.wait_procs(left, timeout=self.kill_wait)
        if survivors:
            raise StackError(f"processes {sorted(p.pid for p in survivors)} outlived SIGKILL")
        return len(alive)

    def stop_all(self, order: Sequence[Sequence[str]]) -> int:
        """Stop every program, tier by tier of `order` (the rest last), then supervisord.

        Returns:
            How many processes were stopped; 0 when supervisord is not running.

        Raises:
            StackError: a process outlived SIGKILL.
        """
        if not self.answers():
            return 0
        try:
            names = {info.name for info in self.processes()}
            tiers = [[name for name in tier if name in names] for tier in order]
            tiers.append(sorted(names.difference(*order)))
            stopped = sum(self.stop(tier) for tier in tiers if tier)
            self.shutdown()
        except (OSError, xmlrpc.client.Error) as error:
            raise StackError(f"supervisord stopped answering ({error}); see {self.log}") from None
        return stopped

    def shutdown(self) -> None:
        """Stop supervisord itself (its programs stopped first) and wait until it is gone."""
        try:
            daemon = psutil.Process(self.pid())
            self._rpc().shutdown()
        except (OSError, xmlrpc.client.Error, psutil.NoSuchProcess):
            return
        _, left = psutil.wait_procs([daemon], timeout=SUPERVISORD_TIMEOUT)
        if left:
            raise StackError(f"supervisord (PID {daemon.pid}) did not exit; see {self.log}")

    def forget(self) -> None:
        """Remove the configuration, PID file and socket of a supervisord that is gone."""
        for path in (self.config, self.pidfile, self.socket):
            path.unlink(missing_ok=True)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _info(entry: dict[str, Any]) -> ProcessInfo:
    return ProcessInfo(
        name=str(entry["name"]),
        pid=int(entry["pid"]),
        state=str(entry["statename"]),
        exit_status=int(entry.get("exitstatus", 0)),
    )


def _value(value: object, *, quoted: bool = False) -> str:
    """`value` for supervisord's configuration file, which expands `%(name)s` in values."""
    text = str(value)
    if "\n" in text or (quoted and '"' in text):
        raise StackError(f"supervisord cannot be given {text!r} in its configuration")
    return text.replace("%", "%%")
