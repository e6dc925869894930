"""Writing decisions: one idempotent insert per batch, keyed by ``request_id``.

Batch workers write whole chunks at once with `write_decisions`, so a redelivered chunk adds
nothing; the API's writer process writes its batches the same way. `check_storable` refuses, in
the caller, a decision the database would refuse later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Final

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from loanops.decisions.database import json_dumps, write_transaction
from loanops.decisions.record import Decision
from loanops.decisions.segments import insert_segments, segment_rows
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


_COLUMNS: Final = tuple(column.name for column in DECISIONS_TABLE.columns)
_SQLITE_INSERT: Final = (
    f"INSERT INTO decisions ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT (request_id) DO NOTHING"
)
_PG_STAGE: Final = (
    "CREATE TEMPORARY TABLE decisions_incoming (LIKE decisions INCLUDING DEFAULTS) ON COMMIT DROP"
)
_PG_COPY: Final = f"COPY decisions_incoming ({', '.join(_COLUMNS)}) FROM STDIN"
_PG_COPY_DIRECT: Final = f"COPY decisions ({', '.join(_COLUMNS)}) FROM STDIN"
_PG_MOVE: Final = (
    f"INSERT INTO decisions ({', '.join(_COLUMNS)}) "
    f"SELECT {', '.join(_COLUMNS)} FROM decisions_incoming ORDER BY request_id "
    "ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
)
# SQLite's limit on bound parameters of one statement, with a margin.
_SQLITE_IN_CHUNK: Final = 900


def _sqlite_times(decisions: list[Decision]) -> list[str]:
    """UTC as `UTCDateTime` stores it on SQLite (SQLAlchemy's fixed-width text).

    A batch chunk shares one timestamp, so each distinct one is formatted once.
    """
    formatted: dict[datetime, str] = {}
    out = []
    for d in decisions:
        text = formatted.get(d.decided_at)
        if text is None:
            naive = d.decided_at.astimezone(UTC).replace(tzinfo=None)
            text = formatted[d.decided_at] = naive.isoformat(" ", "microseconds")
        out.append(text)
    return out


def write_decisions(engine: Engine, decisions: Iterable[Decision]) -> int:
    """Insert decisions in one transaction, skipping any whose ``request_id`` is already stored.

    Idempotent: writing the same decisions again (a redelivered batch chunk, or a retry after
    an ambiguous failure) inserts nothing more. The newly inserted decisions also go, in the
    same transaction, into the columnar segments that reads use (`loanops.decisions.segments`).
    Rows go in by the database's bulk path: COPY into a staging table on PostgreSQL, one
    executemany on SQLite.

    Args:
        engine: Engine of a migrated decision-log database.
        decisions: The decisions to store.

    Returns:
        How many rows were newly inserted.

    Raises:
        TypeError: An input or reason cannot be encoded as JSON; nothing was written.
        sqlalchemy.exc.SQLAlchemyError: The database refused or could not be reached; nothing
            was written.
    """
    # One key order for every writer, so two overlapping batches (a redelivered chunk racing
    # its first delivery) wait for each other on PostgreSQL instead of deadlocking.
    ordered = sorted(decisions, key=attrgetter("request_id"))
    if not ordered:
        return 0
    inputs = [json_dumps(_plain(d.inputs)).encode() for d in ordered]
    reasons = [json_dumps([_plain(r) for r in d.reasons]) for d in ordered]
    with write_transaction(engine) as connection:
        dialect = connection.dialect.name
        if dialect == "postgresql":
            inserted = _copy_postgres(connection, ordered, inputs, reasons)
        elif dialect == "sqlite":
            inserted = _insert_sqlite(connection, ordered, inputs, reasons)
        else:
            raise ValueError(f"the decision log supports SQLite and PostgreSQL, not {dialect}")
        if inserted is not None:
            keep = [i for i, d in enumerate(ordered) if d.request_id in inserted]
            ordered = [ordered[i] for i in keep]
            inputs = [inputs[i] for i in keep]
            reasons = [reasons[i] for i in keep]
        insert_segments(connection, _segments(ordered, inputs, reasons))
        return len(ordered)


def _plain(value: Mapping[str, Any]) -> dict[str, Any]:
    return value if type(value) is dict else dict(value)


def _segments(
    decisions: list[Decision], inputs: list[bytes], reasons: list[str]
) -> list[dict[str, Any]]:
    meta: dict[str, list[Any]] = {
        "request_id": [d.request_id for d in decisions],
        "decided_at": [d.decided_at for d in decisions],
        "threshold": [float(d.threshold) for d in decisions],
        "probability": [float(d.probability) for d in decisions],
        "decision": [d.decision for d in decisions],
        "reasons": reasons,
        "source": [d.source for d in decisions],
        "job_id": [d.job_id for d in decisions],
    }
    models = [(d.model_name, d.model_version) for d in decisions]
    return segment_rows(meta, inputs, models, [d.inputs for d in decisions])


def _insert_sqlite(
    connection: Connection, ordered: list[Decision], inputs: list[bytes], reasons: list[str]
) -> set[str] | None:
    """Insert on SQLite; the set of inserted ids, or None when every row was inserted."""
    dbapi = connection.connection.driver_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        # The write lock is held (BEGIN IMMEDIATE), so what is stored cannot change under us.
        before = dbapi.total_changes
        times = _sqlite_times(ordered)
        cursor.executemany(
            _SQLITE_INSERT,
            (_row(d, times[i], inputs[i], reasons[i]) for i, d in enumerate(ordered)),
        )
        if dbapi.total_changes - before == len(ordered):
            return None
        # Some were stored already: which of ours are new is told by the rowid order, since
        # this transaction's rows were inserted last.
        return _sqlite_new_ids(cursor, ordered, dbapi.total_changes - before)
    finally:
        cursor.close()


def _sqlite_new_ids(cursor: Any, ordered: list[Decision], count: int) -> set[str]:
    if count == 0:
        return set()
    cursor.execute("SELECT request_id FROM decisions ORDER BY rowid DESC LIMIT ?", (count,))
    return {row[0] for row in cursor.fetchall()}


def _copy_postgres(
    connection: Connection, ordered: list[Decision], inputs: list[bytes], reasons: list[str]
) -> set[str] | None:
    """COPY straight into the table; the set of inserted ids, or None when all were.

    A stored request id fails that COPY (a redelivered chunk, which is rare); then, back at the
    savepoint, the rows are copied into a staging table and only the new ones moved over.
    """
    import psycopg

    dbapi = connection.connection.driver_connection
    assert dbapi is not None
    with dbapi.cursor() as cursor:
        cursor.execute("SAVEPOINT decisions_copy")
        try:
            _copy_rows(cursor, _PG_COPY_DIRECT, ordered, inputs, reasons)
            cursor.execute("RELEASE SAVEPOINT decisions_copy")
            return None
        except psycopg.errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT decisions_copy")
        cursor.execute(_PG_STAGE)
        _copy_rows(cursor, _PG_COPY, ordered, inputs, reasons)
        cursor.execute(_PG_MOVE)
        inserted = {row[0] for row in cursor.fetchall()}
        cursor.execute("DROP TABLE decisions_incoming")
    return None if len(inserted) == len(ordered) else inserted


def _copy_rows(
    cursor: Any, statement: str, ordered: list[Decision], inputs: list[bytes], reasons: list[str]
) -> None:
    with cursor.copy(statement) as copy:
        for i, d in enumerate(ordered):
            copy.write_row(_row(d, d.decided_at, inputs[i], reasons[i]))


def _row(decision: Decision, decided_at: Any, inputs: bytes, reasons: Any) -> tuple[Any, ...]:
    """One decision's values in the table's column order, for executemany and COPY alike."""
    return (
        decision.request_id,
        decided_at,
        decision.model_name,
        decision.model_version,
        float(decision.threshold),
        inputs.decode(),
        float(decision.probability),
        decision.decision,
        reasons,
        decision.source,
        decision.job_id,
    )
