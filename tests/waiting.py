"""The suite's one way to wait for something: poll a condition until it holds, within a time.

`wait_for` fails the test, naming what it waited for and the last value it saw; `poll_until`
is the same loop for waits whose timeout is not a failure (a grace period before SIGKILL).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """What `wait_for` raises when the condition did not hold: a test failure, as an assert is."""


def wait_for(
    condition: Callable[[], T | None | Literal[False]],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    ignoring: tuple[type[Exception], ...] = (),
    given_up: Callable[[], str | None] | None = None,
    details: Callable[[], str] | None = None,
) -> T:
    """Poll `condition()` until it returns a truthy value, and return that value.

    Args:
        condition: Called every `interval` seconds; a truthy result ends the wait.
        timeout: Seconds to wait before failing.
        what: What is awaited, for the failure message ("the worker's ready line").
        interval: Seconds between calls.
        ignoring: Exceptions that count as "not yet" (a server not listening yet), not as errors.
        given_up: Called each round; a message means waiting longer is pointless (the process
            exited), and the wait fails at once with it.
        details: Called on failure; its text (a log tail) is added to the message.

    Returns:
        The first truthy value `condition()` returned.

    Raises:
        WaitTimeout: The condition did not hold within `timeout`, or `given_up` said so.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = condition()
        except ignoring as error:
            last = error
        else:
            if value:
                return value
            last = value
        reason = given_up() if given_up is not None else None
        if reason is None and time.monotonic() > deadline:
            reason = f"timed out after {timeout:g} s"
        if reason is not None:
            message = f"{reason} waiting for {what}; last seen: {last!r}"
            if details is not None:
                message += f"\n{details()}"
            raise WaitTimeout(message)
        time.sleep(interval)


def poll_until(condition: Callable[[], object], *, timeout: float, interval: float = 0.05) -> bool:
    """Poll `condition()` until it is truthy or `timeout` passes; whether it became truthy."""
    try:
        wait_for(condition, timeout=timeout, what="a condition", interval=interval)
    except WaitTimeout:
        return False
    return True


def exited(process: subprocess.Popen[Any], name: str) -> str | None:
    """For `given_up`: a message once `process` has exited, None while it runs."""
    code = process.poll()
    return None if code is None else f"{name} exited with code {code}"
