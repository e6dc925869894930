"""The slim rows of a batch into SQLite: one statement, its shared values bound once."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import repeat
from typing import TYPE_CHECKING, Any, Final

import orjson

from loanops.decisions.bulk_columns import ROW_COLUMNS, one_value, plain_text

if TYPE_CHECKING:
    import pyarrow as pa
    from sqlalchemy.engine import Connection

_SQLITE_INSERT: Final = (
    f"INSERT INTO decisions ({', '.join(ROW_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(ROW_COLUMNS))}) ON CONFLICT (request_id) DO NOTHING"
)


# A batch whose rows differ only by request id: the ids go in as one JSON array, which SQLite
# walks in C, and the other values are bound once. ("WHERE true" lets SQLite parse the upsert
# after a SELECT.)
_SQLITE_INSERT_IDS: Final = (
    f"INSERT INTO decisions ({', '.join(ROW_COLUMNS)}) "
    f"SELECT {', '.join('value' if name == 'request_id' else '?' for name in ROW_COLUMNS)} "
    "FROM json_each(?) WHERE true ON CONFLICT (request_id) DO NOTHING"
)


# SQLite's limit on bound parameters of one statement, with a margin.
_SQLITE_IN_CHUNK: Final = 900


def insert_sqlite(connection: Connection, rows: pa.Table) -> set[str] | None:
    """Insert on SQLite; the set of inserted ids, or None when every row was inserted."""
    dbapi = connection.connection.driver_connection
    assert dbapi is not None
    n = rows.num_rows
    ids = plain_text(rows["request_id"]).to_pylist()
    shared = {name: one_value(rows[name]) for name in ROW_COLUMNS if name != "request_id"}
    cursor = dbapi.cursor()
    try:
        # The write lock is held (BEGIN IMMEDIATE), so what is stored cannot change under us.
        before = dbapi.total_changes
        if all(found for found, _ in shared.values()):
            # A batch chunk: binding costs about a microsecond a value, so the shared values
            # are bound once and the ids passed as one JSON array.
            constants = [
                _sqlite_time(value) if name == "decided_at" else value
                for name, (_, value) in shared.items()
            ]
            cursor.execute(_SQLITE_INSERT_IDS, (*constants, orjson.dumps(ids).decode()))
        else:
            values = [
                ids
                if name == "request_id"
                else _sqlite_times(rows[name])
                if name == "decided_at"
                else _values(rows[name])
                for name in ROW_COLUMNS
            ]
            cursor.executemany(_SQLITE_INSERT, zip(*values, strict=True))
        changed = dbapi.total_changes - before
        if changed == n:
            return None
        if changed == 0:
            return set()
        # Some were stored already: the new rows are those that point to this batch's segment.
        segment_id = rows["segment_id"][0].as_py()
        new: set[str] = set()
        for start in range(0, n, _SQLITE_IN_CHUNK):
            part = ids[start : start + _SQLITE_IN_CHUNK]
            cursor.execute(
                "SELECT request_id FROM decisions WHERE segment_id = ? "
                f"AND request_id IN ({', '.join('?' * len(part))})",
                (segment_id, *part),
            )
            new.update(row[0] for row in cursor.fetchall())
        return new
    finally:
        cursor.close()


def _sqlite_time(value: datetime) -> str:
    """A time as `UTCDateTime` stores it on SQLite (SQLAlchemy's fixed-width naive UTC)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _values(column: pa.ChunkedArray) -> Any:
    """A column's values for executemany: a repeat of one value when they are all the same."""
    import pyarrow as pa

    if pa.types.is_dictionary(column.type) and column.num_chunks == 1 and not column.null_count:
        dictionary = column.chunk(0).dictionary
        if len(dictionary) == 1:
            return repeat(dictionary[0].as_py(), len(column))
    return plain_text(column).to_pylist()


def _sqlite_times(times: pa.ChunkedArray) -> list[str] | Any:
    """UTC as `UTCDateTime` stores it on SQLite (SQLAlchemy's fixed-width text).

    A batch chunk shares one timestamp, formatted once; the API's decisions each have their
    own, formatted by Arrow (whose ``%S`` carries the microseconds), which costs a fifth of
    formatting each in Python.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    found, value = one_value(times)
    if found:
        return repeat(_sqlite_time(value), len(times))
    utc = times.cast(pa.timestamp("us", tz="UTC"))
    if pc.min(pc.year(utc)).as_py() < 1000:  # Arrow would not pad the year to four digits
        return [_sqlite_time(value) for value in utc.to_pylist()]
    return pc.strftime(utc, format="%Y-%m-%d %H:%M:%S").to_pylist()
