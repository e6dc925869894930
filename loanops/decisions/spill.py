"""Spill files: decisions saved to disk, one JSON line each, when the database cannot take them.

A writer that cannot reach the database in time saves what it holds with `write_spill` and logs
the path; an operator replays it with ``write_decisions(engine, load_spill(path))``, which skips
what the database already holds.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import orjson

from loanops.decisions.database import json_default
from loanops.decisions.record import Decision
from loanops.decisions.write import decision_row

SPILL_GLOB: Final = "decisions-spill-*.jsonl"
"""The names of spill files in their folder."""


def spill_line(decision: Decision) -> bytes:
    """The decision as one line of a spill file (JSON, newline-terminated).

    Raises:
        TypeError: Its inputs or reasons cannot be encoded as JSON.
    """
    record = decision_row(decision)
    record["decided_at"] = decision.decided_at.astimezone(UTC).isoformat()
    return orjson.dumps(
        record, default=json_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
    )


def decision_from_line(line: bytes) -> Decision:
    """The decision one spill line holds (the inverse of `spill_line`).

    Raises:
        orjson.JSONDecodeError: The line is not JSON.
        TypeError: A field is missing or unknown.
        ValueError: The fields make no valid `Decision`.
    """
    record = orjson.loads(line)
    record["decided_at"] = datetime.fromisoformat(record["decided_at"])
    return Decision(**record)


def new_spill_path(folder: Path) -> Path:
    """A name no other spill file has, in ``folder`` (created if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return folder / f"decisions-spill-{stamp}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"


def write_spill_lines(folder: Path, lines: Sequence[bytes]) -> Path:
    """Save lines made by `spill_line` to a new spill file, synced to disk before returning.

    Returns:
        The file's path. It is readable by its owner only, since inputs may be personal data.
    """
    path = new_spill_path(folder)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.writelines(lines)
        file.flush()
        os.fsync(file.fileno())
    return path


def write_spill(folder: Path, decisions: Sequence[Decision]) -> Path:
    """Save decisions to a new spill file in ``folder``; see `write_spill_lines`."""
    return write_spill_lines(folder, [spill_line(decision) for decision in decisions])


def load_spill(path: Path) -> list[Decision]:
    """Read back the decisions a writer spilled when its database was unreachable.

    Replay them with ``write_decisions(engine, load_spill(path))``; as that skips decisions
    already stored, replaying twice, or a file holding some that did reach the database, is
    harmless.

    Args:
        path: A ``decisions-spill-*.jsonl`` file.

    Returns:
        The decisions, in the order they were recorded.
    """
    with path.open("rb") as file:
        return [decision_from_line(line) for line in file if line.strip()]
