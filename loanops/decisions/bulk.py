"""Writing decisions as columns: one model version's batch as its segment and its slim rows.

`write_segment` takes a batch already laid out as a segment (`loanops.decisions.segments`: the
`META_FIELDS` columns, then the inputs as ``in:`` or ``js:`` columns) and stores it in one
transaction: a row per decision in ``decisions`` (keyed by ``request_id``, pointing to its
segment) and the newly inserted decisions as one row of ``decision_segments``. A batch worker
builds that table from a scored chunk's Arrow columns (`serving.batch.chunks.decision_columns`),
so recording a chunk makes no Python object per decision beyond the few values each row of the
key table binds; `loanops.decisions.write.write_decisions` lays out `Decision` records the same
way and comes here too.

Why the rows are slim: reads of a window (monitoring) and of labelled decisions (the outcomes
join) take every field but the key from the segments, so keeping the inputs and reasons a second
time as JSON per row cost most of a write (the JSON encoding, and a row several times wider) for
no reader, and each further column costs every insert its binding. A row keeps what keyed work
and a window count need: the key that makes writes idempotent and that outcomes refer to, the
time, the model version, the job, and the segment that holds the rest. Rows go in by each
database's bulk path: one statement on SQLite, binary COPY on PostgreSQL, its fields joined by
Arrow's kernels (a chunk's time, model and job are one value each, encoded once). On PostgreSQL
the server's work on those rows (parsing them, its key index) is most of a write, so the segment
is encoded while a thread sends them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import repeat
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson
from sqlalchemy import Engine, Integer

from loanops.decisions.database import write_transaction
from loanops.decisions.record import ARMS, DECISIONS, SOURCES
from loanops.decisions.segments import (
    JSON_PREFIX,
    META_FIELDS,
    PAIRED_FIELDS,
    TYPED_PREFIX,
    encode,
)
from loanops.decisions.table import DECISIONS_TABLE, SEGMENTS_TABLE, UTCDateTime

if TYPE_CHECKING:
    import pyarrow as pa
    from sqlalchemy.engine import Connection

_T = TypeVar("_T")

ROW_COLUMNS: Final = tuple(column.name for column in DECISIONS_TABLE.columns)
"""Columns of ``decisions``, in the order every statement here lists them."""
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
_PG_STAGE: Final = (
    "CREATE TEMPORARY TABLE decisions_incoming (LIKE decisions INCLUDING DEFAULTS) ON COMMIT DROP"
)
_PG_COPY: Final = "COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"
# How each column of ``decisions`` goes into binary COPY: as its PostgreSQL type sends it.
_PG_KINDS: Final = {
    column.name: "timestamptz"
    if isinstance(column.type, UTCDateTime)
    else "int4"
    if isinstance(column.type, Integer)
    else "text"
    for column in DECISIONS_TABLE.columns
}
_PG_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)
_PG_EPOCH_US: Final = (_PG_EPOCH - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
_PG_BINARY_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_PG_BINARY_TRAILER: Final = struct.pack(">h", -1)
_PG_NULL: Final = struct.pack(">i", -1)
_PG_MOVE: Final = (
    f"INSERT INTO decisions ({', '.join(ROW_COLUMNS)}) "
    f"SELECT {', '.join(ROW_COLUMNS)} FROM decisions_incoming ORDER BY request_id "
    "ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
)
_PG_NEXT_SEGMENT: Final = (
    "SELECT nextval(pg_get_serial_sequence('decision_segments', 'segment_id'))"
)


def check_columns(model_name: str, model_version: str, table: pa.Table) -> None:
    """Refuse a batch that the log could not store, before anything is written.

    The same rules as `loanops.decisions.record.Decision` and `write.check_storable`, checked
    column by column.

    Raises:
        ValueError: A column is missing or of the wrong kind, a request id is empty, a time is
            missing, a probability or threshold lies outside [0, 1], a decision or source is
            not one of its allowed values, or a text holds a NUL character (PostgreSQL refuses
            them).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    missing = [name for name in META_FIELDS if name not in table.column_names]
    if missing:
        raise ValueError(f"a decision batch needs the columns {missing}")
    others = [
        name
        for name in table.column_names
        if name not in META_FIELDS
        and name not in PAIRED_FIELDS
        and not name.startswith((TYPED_PREFIX, JSON_PREFIX))
    ]
    if others:
        raise ValueError(f"a decision batch holds columns that are not inputs: {others}")
    if not model_name or not model_version:
        raise ValueError("a decision batch needs its model name and version")
    ids = table["request_id"]
    if ids.null_count or pc.any(pc.equal(pc.utf8_length(ids), 0)).as_py():
        raise ValueError("request_id must be non-empty")
    if table["decided_at"].null_count or not pa.types.is_timestamp(table["decided_at"].type):
        raise ValueError("decided_at must be a timestamp on every decision")
    for name in ("probability", "threshold"):
        values = table[name]
        inside = pc.and_(pc.greater_equal(values, 0.0), pc.less_equal(values, 1.0))
        if values.null_count or not pc.all(inside).as_py():
            raise ValueError(f"{name} must lie in [0, 1] on every decision")
    for name, allowed in (("decision", DECISIONS), ("source", SOURCES)):
        values = _plain_text(table[name])
        known = pc.is_in(values, value_set=pa.array(sorted(allowed)))
        if values.null_count or not pc.all(known).as_py():
            raise ValueError(f"{name} must be one of {sorted(allowed)} on every decision")
    _check_paired(table)
    texts = [model_name, model_version]
    if any("\x00" in text for text in texts) or any(
        _holds_nul(table[name])
        for name, field in zip(table.column_names, table.schema, strict=True)
        if _is_text(field.type)
    ):
        raise ValueError("decisions may not hold NUL characters, which PostgreSQL refuses")


def _check_paired(table: pa.Table) -> None:
    """The paired-record columns, where a batch has them (a batch without is the champion's)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if "arm" in table.column_names:
        arms = _plain_text(table["arm"])
        if arms.null_count or not pc.all(pc.is_in(arms, value_set=pa.array(sorted(ARMS)))).as_py():
            raise ValueError(f"arm must be one of {sorted(ARMS)} on every decision")
    for name in ("challenger_probability", "challenger_threshold"):
        if name in table.column_names:
            values = table[name]
            inside = pc.and_(pc.greater_equal(values, 0.0), pc.less_equal(values, 1.0))
            if pc.any(pc.invert(inside)).as_py():
                raise ValueError(f"{name} must lie in [0, 1] where a challenger scored")
    if "challenger_decision" in table.column_names:
        values = _plain_text(table["challenger_decision"])
        known = pc.is_in(values, value_set=pa.array(sorted(DECISIONS)))
        if pc.any(pc.and_(pc.is_valid(values), pc.invert(known))).as_py():
            raise ValueError(f"challenger_decision must be one of {sorted(DECISIONS)} or null")


def _is_text(kind: pa.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _plain_text(values: pa.ChunkedArray) -> pa.ChunkedArray:
    import pyarrow as pa

    return values.cast(pa.string()) if pa.types.is_dictionary(values.type) else values


def _holds_nul(values: pa.ChunkedArray) -> bool:
    """Whether a text holds a NUL character: a byte search over each chunk's values."""
    import numpy as np
    import pyarrow as pa

    for chunk in values.chunks:
        if pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary
        data = chunk.buffers()[2]
        # The buffer may hold bytes beyond the chunk's own values: a hit there is no NUL of
        # the chunk's, so a hit is checked value by value.
        if data is not None and not np.all(np.frombuffer(data, dtype=np.uint8)):
            import pyarrow.compute as pc

            if pc.any(pc.match_substring(chunk, "\x00")).as_py():
                return True
    return False


def write_segment(engine: Engine, model_name: str, model_version: str, table: pa.Table) -> int:
    """Store one model version's batch of decisions; idempotent by ``request_id``.

    Args:
        engine: Engine of a migrated decision-log database.
        model_name: The model that made the decisions.
        model_version: Its version.
        table: The decisions as a segment lays them out (`check_columns` says what is refused).

    Returns:
        How many decisions were newly stored; a redelivered batch stores none.

    Raises:
        ValueError: The batch cannot be stored (see `check_columns`); nothing was written.
        sqlalchemy.exc.SQLAlchemyError: The database refused or could not be reached; nothing
            was written.
    """
    check_columns(model_name, model_version, table)
    with write_transaction(engine) as connection:
        return insert_segment(connection, model_name, model_version, table)


def insert_segment(
    connection: Connection, model_name: str, model_version: str, table: pa.Table
) -> int:
    """`write_segment` in the caller's write transaction, for a batch `check_columns` passed.

    A request id given twice in the batch is stored once, as first given.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return 0
    # One key order for every writer, so two overlapping batches (a redelivered chunk racing
    # its first delivery) wait for each other on PostgreSQL instead of deadlocking.
    table, by_key = _by_key(table)
    dialect = connection.dialect.name
    segment_id = _reserve_segment_id(connection, dialect)
    rows = _key_table(table, model_name, model_version, segment_id)
    if not _is_identity(by_key):
        rows = rows.take(by_key)
    segment: dict[str, Any] | None = None
    if dialect == "postgresql":
        # Betting that every row is new (a redelivered chunk is rare), the segment is encoded
        # while the server takes the rows.
        inserted, segment = _copy_postgres(connection, rows, lambda: _segment(table, by_key))
    elif dialect == "sqlite":
        inserted = _insert_sqlite(connection, rows)
    else:
        raise ValueError(f"the decision log supports SQLite and PostgreSQL, not {dialect}")
    if inserted is not None:
        table = table.filter(
            pc.is_in(table["request_id"], value_set=pa.array(sorted(inserted), pa.string()))
        )
        if table.num_rows == 0:
            return 0
        segment = _segment(table, None)
    elif segment is None:
        segment = _segment(table, by_key)
    connection.execute(
        SEGMENTS_TABLE.insert(),
        {
            "segment_id": segment_id,
            "model_name": model_name,
            "model_version": model_version,
            **segment,
        },
    )
    return int(segment["rows"])


def _segment(table: pa.Table, by_key: pa.Array | None) -> dict[str, Any]:
    """The ``decision_segments`` values of a batch's stored decisions, bar its id and model."""
    import pyarrow.compute as pc

    table = _in_segment_order(table, by_key)
    times = pc.min_max(table["decided_at"])
    return {
        "first_at": times["min"].as_py(),
        "last_at": times["max"].as_py(),
        "rows": table.num_rows,
        "data": encode(table),
    }


def _by_key(table: pa.Table) -> tuple[pa.Table, pa.Array]:
    """The table with each request id's first row only, and the order that sorts it by id.

    A batch rarely repeats a request id; a batch chunk comes sorted already.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = table["request_id"]
    order = pc.sort_indices(ids)
    ordered = ids.take(order)
    if not pc.any(pc.equal(ordered[1:], ordered[:-1])).as_py():
        return table, order
    positions = pa.table({"id": ids, "at": np.arange(table.num_rows)})
    first = positions.group_by("id", use_threads=False).aggregate([("at", "min")])["at_min"]
    table = table.take(np.sort(first.to_numpy()))
    return table, pc.sort_indices(table["request_id"])


def _in_segment_order(table: pa.Table, by_key: pa.Array | None) -> pa.Table:
    """The table sorted as a segment is stored: by ``decided_at``, then ``request_id``.

    When every decision has the same time (a batch chunk), that is `by_key`, if known.
    """
    import pyarrow.compute as pc

    times = pc.min_max(table["decided_at"])
    if by_key is not None and times["min"] == times["max"]:
        order = by_key
    else:
        order = pc.sort_indices(table, [("decided_at", "ascending"), ("request_id", "ascending")])
    if _is_identity(order):
        return table  # already in order: spare copying every column
    return table.take(order)


def _is_identity(order: pa.Array) -> bool:
    import numpy as np

    return bool(np.array_equal(order.to_numpy(), np.arange(len(order))))


def _reserve_segment_id(connection: Connection, dialect: str) -> int:
    """The id the batch's segment will have, known before its rows point to it.

    SQLite's write lock is held (``BEGIN IMMEDIATE``), so no other writer can take the next id;
    PostgreSQL's sequence hands each caller its own.
    """
    if dialect == "postgresql":
        return int(connection.exec_driver_sql(_PG_NEXT_SEGMENT).scalar_one())
    last = connection.exec_driver_sql("SELECT max(segment_id) FROM decision_segments").scalar()
    return int(last or 0) + 1


def _key_table(table: pa.Table, model_name: str, model_version: str, segment_id: int) -> pa.Table:
    """The rows of ``decisions`` for the batch, in `ROW_COLUMNS` order."""
    import pyarrow as pa

    n = table.num_rows
    columns: dict[str, Any] = {
        "request_id": table["request_id"],
        "decided_at": table["decided_at"],
        "model_name": pa.repeat(model_name, n),
        "model_version": pa.repeat(model_version, n),
        "job_id": table["job_id"],
        "segment_id": pa.repeat(pa.scalar(segment_id, pa.int64()), n),
    }
    return pa.table({name: columns[name] for name in ROW_COLUMNS})


def _insert_sqlite(connection: Connection, rows: pa.Table) -> set[str] | None:
    """Insert on SQLite; the set of inserted ids, or None when every row was inserted."""
    dbapi = connection.connection.driver_connection
    assert dbapi is not None
    n = rows.num_rows
    ids = _plain_text(rows["request_id"]).to_pylist()
    shared = {name: _one_value(rows[name]) for name in ROW_COLUMNS if name != "request_id"}
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


def _one_value(column: pa.ChunkedArray) -> tuple[bool, Any]:
    """Whether every row of a column holds the same value (null included), and that value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count == len(column):
        return True, None
    if column.null_count:
        return False, None
    if pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column.cast(column.type.value_type)).combine_chunks()
        dictionary = column.dictionary
        return (True, dictionary[0].as_py()) if len(dictionary) == 1 else (False, None)
    bounds = pc.min_max(column)
    low, high = bounds["min"], bounds["max"]
    return (True, low.as_py()) if low == high else (False, None)


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
    return _plain_text(column).to_pylist()


def _sqlite_times(times: pa.ChunkedArray) -> list[str] | Any:
    """UTC as `UTCDateTime` stores it on SQLite (SQLAlchemy's fixed-width text).

    A batch chunk shares one timestamp, so each distinct one is formatted once.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(times).combine_chunks()
    texts = [_sqlite_time(value) for value in encoded.dictionary.to_pylist()]
    if len(texts) == 1:
        return repeat(texts[0], len(times))
    return pa.array(texts, pa.string()).take(encoded.indices).to_pylist()


def _copy_binary(rows: pa.Table) -> list[bytes | memoryview]:
    """The rows in COPY's binary format, in `ROW_COLUMNS` order, as buffers to send in turn.

    Binary spares the server parsing text (a timestamp per row costs it more than the row's
    heap insert) and us escaping it. Each row is its field count, then each field's length and
    value; a value shared by every row (a chunk's time, model, job and segment) is encoded once,
    and Arrow joins the rest column-wise.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    fields: list[Any] = [pa.scalar(struct.pack(">h", len(ROW_COLUMNS)), pa.binary())]
    for name in ROW_COLUMNS:
        column = rows[name]
        kind = _PG_KINDS[name]
        found, value = (False, None) if name == "request_id" else _one_value(column)
        if found:
            fields.append(pa.scalar(_binary_value(kind, value), pa.binary()))
        elif kind == "text":
            fields.append(_binary_texts(column))
        elif kind == "timestamptz":
            micros = column.cast(pa.timestamp("us", tz="UTC"), safe=False).cast(pa.int64())
            fields.append(_binary_fixed(micros, ">i8", -_PG_EPOCH_US))
        else:
            fields.append(_binary_fixed(column.cast(pa.int64()), ">i4", 0))
    lines = pc.binary_join_element_wise(*fields, pa.scalar(b"", pa.binary()))
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    if len(lines) == 0:
        return [_PG_BINARY_HEADER, _PG_BINARY_TRAILER]
    # The values of a binary array lie end to end in its data buffer: that is the COPY body.
    _, offsets, values = lines.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32)[[lines.offset, lines.offset + len(lines)]]
    body = memoryview(values)[int(bounds[0]) : int(bounds[1])]
    return [_PG_BINARY_HEADER, body, _PG_BINARY_TRAILER]


def _binary_value(kind: str, value: Any) -> bytes:
    """One field in COPY's binary format: its length, then its value as PostgreSQL sends it."""
    if value is None:
        return _PG_NULL
    if kind == "timestamptz":
        at = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return struct.pack(">iq", 8, (at - _PG_EPOCH) // timedelta(microseconds=1))
    if kind == "int4":
        return struct.pack(">ii", 4, value)
    data = str(value).encode()
    return struct.pack(">i", len(data)) + data


def _binary_texts(column: pa.ChunkedArray) -> pa.Array:
    """A text column as binary COPY fields: each value's length, then its UTF-8 bytes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = _plain_text(column).cast(pa.binary()).combine_chunks()
    lengths = pc.fill_null(pc.binary_length(values), -1)  # a missing value's length is -1
    prefixes = _big_endian(lengths.to_numpy(zero_copy_only=False).astype(">i4"))
    return pc.binary_join_element_wise(
        prefixes, pc.fill_null(values, b""), pa.scalar(b"", pa.binary())
    )


def _binary_fixed(values: pa.ChunkedArray, kind: str, shift: int) -> pa.Array:
    """A column of fixed-width numbers as binary COPY fields (`kind` a big-endian dtype)."""
    import numpy as np

    numbers = values.to_numpy(zero_copy_only=False)
    if values.null_count:
        raise ValueError("a decision's time and segment are never missing")
    if kind == ">i4" and len(numbers) and not (-(2**31) <= numbers.min() <= numbers.max() < 2**31):
        raise ValueError("a segment id outside PostgreSQL's integer range")
    width = np.dtype(kind).itemsize
    fields = np.empty(len(numbers), dtype=[("length", ">i4"), ("value", kind)])
    fields["length"] = width
    fields["value"] = numbers + shift
    return _big_endian(fields)


def _big_endian(packed: Any) -> pa.Array:
    """A numpy array of fixed-width records as a binary array, one value per record."""
    import pyarrow as pa

    width = packed.dtype.itemsize
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(packed), [None, pa.py_buffer(packed.tobytes())]
    )
    return fixed.cast(pa.binary())


def _copy_postgres(
    connection: Connection, rows: pa.Table, meanwhile: Callable[[], _T]
) -> tuple[set[str] | None, _T | None]:
    """COPY straight into the table; the set of inserted ids, or None when all were.

    `meanwhile` runs while the server takes the rows (a thread sends them); its result comes
    back when every row was inserted, None otherwise.

    A stored request id fails that COPY (a redelivered chunk, which is rare); then, back at the
    savepoint, the rows are copied into a staging table and only the new ones moved over.
    """
    import psycopg
    from psycopg.copy import QueuedLibpqWriter

    data = _copy_binary(rows)
    columns = ", ".join(ROW_COLUMNS)
    dbapi = connection.connection.driver_connection
    assert dbapi is not None
    with dbapi.cursor() as cursor:
        cursor.execute("SAVEPOINT decisions_copy")
        try:
            statement = _PG_COPY.format(table="decisions", columns=columns)
            with cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy:
                for buffer in data:
                    copy.write(buffer)
                done = meanwhile()
            cursor.execute("RELEASE SAVEPOINT decisions_copy")
            return None, done
        except psycopg.errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT decisions_copy")
        cursor.execute(_PG_STAGE)
        with cursor.copy(_PG_COPY.format(table="decisions_incoming", columns=columns)) as copy:
            for buffer in data:
                copy.write(buffer)
        cursor.execute(_PG_MOVE)
        inserted = {row[0] for row in cursor.fetchall()}
        cursor.execute("DROP TABLE decisions_incoming")
    return (None, None) if len(inserted) == rows.num_rows else (inserted, None)
