"""Concurrent migrations of the decision log, as several replicas starting at once run them."""

from __future__ import annotations

import multiprocessing
from multiprocessing.process import BaseProcess

from loanops.decisions.database import migrate


def start_migrations(url: str, count: int) -> list[BaseProcess]:
    """Start `migrate(url)` in `count` new processes.

    They fork from a forkserver that has already imported the decision log, so they reach the
    database within milliseconds of each other, and without paying for the imports each.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["loanops.decisions.database", "alembic.command"])
    processes: list[BaseProcess] = [
        context.Process(target=migrate, args=(url,)) for _ in range(count)
    ]
    for process in processes:
        process.start()
    return processes


def finish(processes: list[BaseProcess], timeout: float = 60) -> list[int | None]:
    """Wait for the processes; kill any still running after `timeout`. Their exit codes."""
    for process in processes:
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
    return [process.exitcode for process in processes]
