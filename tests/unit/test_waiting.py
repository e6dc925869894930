"""The suite's wait helper: it returns the first truthy value and fails with what it waited for."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from tests.waiting import exited, poll_until, wait_for


def test_the_first_truthy_value_is_returned() -> None:
    values = iter([None, 0, "", {"ready": True}])

    assert wait_for(lambda: next(values), timeout=5, what="a body", interval=0) == {"ready": True}


def test_a_timeout_names_what_was_awaited_and_the_last_value_seen() -> None:
    counter = itertools.count()

    with pytest.raises(AssertionError, match=r"timed out after 0.05 s waiting for the count; last"):
        wait_for(lambda: next(counter) < 0, timeout=0.05, what="the count", interval=0.01)
    with pytest.raises(AssertionError, match=r"last seen: ConnectionRefusedError\('down'\)\nlog"):
        wait_for(
            lambda: (_ for _ in ()).throw(ConnectionRefusedError("down")),
            timeout=0.05,
            what="a server",
            interval=0.01,
            ignoring=(ConnectionRefusedError,),
            details=lambda: "log",
        )


def test_an_exception_not_ignored_is_raised_at_once() -> None:
    with pytest.raises(ZeroDivisionError):
        wait_for(lambda: 1 / 0, timeout=5, what="a bug")


def test_an_exited_process_ends_the_wait_at_once() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait(timeout=30)

    with pytest.raises(AssertionError, match="the server exited with code 3 waiting for it"):
        wait_for(
            lambda: False, timeout=60, what="it", given_up=lambda: exited(process, "the server")
        )


def test_poll_until_says_whether_the_condition_held() -> None:
    assert poll_until(lambda: True, timeout=1)
    assert not poll_until(lambda: False, timeout=0.05, interval=0.01)


def test_poll_until_lets_a_failed_assert_in_the_condition_through() -> None:
    def condition() -> bool:
        raise AssertionError("the job finished too early")

    with pytest.raises(AssertionError, match="the job finished too early"):
        poll_until(condition, timeout=1)
