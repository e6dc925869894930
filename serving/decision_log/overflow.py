"""Overflow files: where the server puts decisions while the writer process is too far behind.

Past its memory bound, `DecisionLogProcess` appends new decisions to a spill file (synced to
disk) instead of sending them, and sends the file to the writer once it has caught up. The files
are ordinary spill files, so one left behind (the server was killed) replays with
``write_decisions(engine, load_spill(path))``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from loanops.decisions.spill import new_spill_path


@dataclass(frozen=True, slots=True)
class OverflowPart:
    """One closed overflow file and how many decisions it holds."""

    path: Path
    count: int


class OverflowFiles:
    """Append-only spill files of at most ``file_decisions`` decisions each; one thread uses it."""

    def __init__(self, folder: Path, file_decisions: int) -> None:
        self._folder = folder
        self._file_decisions = file_decisions
        self._closed: deque[OverflowPart] = deque()
        self._open: tuple[Path, BinaryIO] | None = None
        self._open_count = 0
        self.count = 0
        """Decisions in files not yet taken."""

    def __bool__(self) -> bool:
        return self.count > 0

    def append(self, lines: Sequence[bytes]) -> Path:
        """Append encoded decisions, synced to disk before returning; the last file they went to."""
        start = 0
        while True:
            if self._open is None:
                path = new_spill_path(self._folder)
                # Owner-only: the inputs may be personal data.
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
                self._open = (path, os.fdopen(os.open(path, flags, 0o600), "wb"))
            path, file = self._open
            part = lines[start : start + self._file_decisions - self._open_count]
            file.writelines(part)
            file.flush()
            os.fsync(file.fileno())
            self._open_count += len(part)
            self.count += len(part)
            start += len(part)
            if self._open_count >= self._file_decisions:
                self._close_open()
            if start >= len(lines):
                return path

    def next_count(self) -> int:
        """How many decisions `take` would return now."""
        if self._closed:
            return self._closed[0].count
        return self._open_count

    def take(self) -> OverflowPart | None:
        """The oldest file, closed, for the writer to write; None when there is none."""
        if not self._closed:
            self._close_open()
        if not self._closed:
            return None
        part = self._closed.popleft()
        self.count -= part.count
        return part

    def paths(self) -> list[Path]:
        """Every file not yet taken, closing the open one."""
        self._close_open()
        return [part.path for part in self._closed]

    def _close_open(self) -> None:
        if self._open is None:
            return
        path, file = self._open
        file.close()
        self._closed.append(OverflowPart(path, self._open_count))
        self._open = None
        self._open_count = 0
