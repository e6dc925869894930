"""Writing decisions: one idempotent insert per batch, keyed by ``request_id``.

Batch workers write whole chunks at once with `write_decisions`, so a redelivered chunk adds
nothing; the API's writer process writes its batches the same way. `check_storable` refuses, in
the caller, a decision the database would refuse later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from operator import itemgetter
from typing import Any

from sqlalchemy import Engine, Insert
from sqlalchemy.dialects import postgresql, sqlite

from loanops.decisions.database import json_dumps, write_transaction
from loanops.decisions.record import Decision
from loanops.decisions.table import DECISIONS_TABLE


def decision_row(decision: Decision) -> dict[str, Any]:
    """The decision as a row of the ``decisions`` table (plain dicts and floats)."""
    inputs = decision.inputs
    return {
        "request_id": decision.request_id,
        "decided_at": decision.decided_at,
        "model_name": decision.model_name,
        "model_version": decision.model_version,
        "threshold": float(decision.threshold),
        "inputs": inputs if type(inputs) is dict else dict(inputs),
        "probability": float(decision.probability),
        "decision": decision.decision,
        "reasons": [r if type(r) is dict else dict(r) for r in decision.reasons],
        "source": decision.source,
        "job_id": decision.job_id,
    }


def check_storable(decision: Decision) -> None:
    """Refuse a decision that no database write could store, so no writer retries it forever.

    Raises:
        TypeError: Its inputs or reasons cannot be encoded as JSON.
        ValueError: It holds a NUL character, which PostgreSQL cannot store.
    """
    row = decision_row(decision)
    json_dumps((row["inputs"], row["reasons"]))
    if _holds_nul(row):
        raise ValueError("decisions may not hold NUL characters, which PostgreSQL refuses")


def _holds_nul(value: Any) -> bool:
    """Whether a string in ``value`` (nested in dicts and lists too) holds a NUL character."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(item) for item in value)
    return False


def _insert_ignoring_duplicates(dialect_name: str) -> Insert:
    if dialect_name == "postgresql":
        return postgresql.insert(DECISIONS_TABLE).on_conflict_do_nothing(
            index_elements=["request_id"]
        )
    if dialect_name == "sqlite":
        return sqlite.insert(DECISIONS_TABLE).on_conflict_do_nothing(index_elements=["request_id"])
    raise ValueError(f"the decision log supports SQLite and PostgreSQL, not {dialect_name}")


def write_decisions(engine: Engine, decisions: Iterable[Decision]) -> int:
    """Insert decisions in one transaction, skipping any whose ``request_id`` is already stored.

    Idempotent: writing the same decisions again (a redelivered batch chunk, or a retry after
    an ambiguous failure) inserts nothing more.

    Args:
        engine: Engine of a migrated decision-log database.
        decisions: The decisions to store.

    Returns:
        How many rows were newly inserted.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: The database refused or could not be reached; nothing
            was written.
    """
    rows = [decision_row(decision) for decision in decisions]
    if not rows:
        return 0
    # One key order for every writer, so two overlapping batches (a redelivered chunk racing
    # its first delivery) wait for each other on PostgreSQL instead of deadlocking.
    rows.sort(key=itemgetter("request_id"))
    with write_transaction(engine) as connection:
        statement = _insert_ignoring_duplicates(connection.dialect.name)
        # A list of parameter sets runs as one executemany; skipped conflicts are not counted.
        result = connection.execute(statement, rows)
        return int(result.rowcount)
