"""Whether a process a test started is still there."""

from __future__ import annotations

import psutil


def alive(process: int | psutil.Process) -> bool:
    """Whether `process` (a pid, or a psutil handle that also guards against pid reuse) runs.

    A zombie, exited but not yet reaped by its parent, counts as gone: it holds no port,
    memory or files.
    """
    try:
        handle = process if isinstance(process, psutil.Process) else psutil.Process(process)
        return handle.is_running() and handle.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
