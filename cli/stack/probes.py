"""Whether a local service answers, and waiting until it does."""

from __future__ import annotations

import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tenacity import (
    RetryError,
    Retrying,
    before_sleep_log,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

logger = logging.getLogger(__name__)


class StackError(RuntimeError):
    """A local service did not start or stop; the message ends with its log's tail."""


def wait_until(
    what: str,
    ready: Callable[[], bool],
    timeout: float,
    *,
    interval: float = 0.25,
    log: Path | None = None,
) -> None:
    """Call `ready` until it returns True, every `interval` seconds for at most `timeout`.

    The one wait of the stack, after fastapi/full-stack-fastapi-template's backend_pre_start.py:
    a tenacity retry with a stop, a wait and a logging hook (each attempt at DEBUG).

    An exception from `ready` (a `StackError` saying the service exited, say) ends the wait
    at once.

    Args:
        what: the service waited for, as the error names it.
        ready: the probe.
        timeout: seconds before giving up.
        interval: seconds between attempts.
        log: the service's log, whose tail the error shows.

    Raises:
        StackError: `ready` never returned True in time; the message ends with `log`'s tail.
    """
    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        retry=retry_if_result(lambda answered: answered is not True),
        before_sleep=before_sleep_log(logger, logging.DEBUG),
    )
    try:
        retrying(ready)
    except RetryError:
        tail = f":\n{tail_of(log)}" if log is not None else ""
        raise StackError(f"{what} was not ready after {timeout:g} s{tail}") from None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now."""
    with socket.socket() as probe:
        # As the servers do: connections of a stack just stopped, in TIME_WAIT, do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return not listening(port)


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def http_get(url: str, timeout: float = 2.0) -> tuple[int | None, str]:
    """The status and body of a GET; (None, "") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return None, ""


def http_ok(url: str) -> bool:
    return http_get(url)[0] == 200


def celery_ready(log: Path, offset: int) -> bool:
    """Whether the worker logging to `log` said it is ready, after byte `offset` (this start)."""
    try:
        with log.open("rb") as text:
            text.seek(offset)
            return b" ready." in text.read()
    except OSError:
        return False


def tail_of(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
