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
join) take inputs and reasons from the segments, so keeping them a second time as JSON per row
cost most of a write (the JSON encoding and a row several times wider) for no reader. The rows
keep what keyed work needs: the key that makes writes idempotent and that outcomes refer to, the
decision itself, and the segment that holds the rest. Rows go in by each database's bulk path:
one executemany on SQLite, COPY (CSV written by Arrow in C++) on PostgreSQL.
"""

from __future__ import annotations

import io
from datetime import UTC
from itertools import repeat
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Engine

from loanops.decisions.database import write_transaction
from loanops.decisions.record import DECISIONS, SOURCES
from loanops.decisions.segments import JSON_PREFIX, META_FIELDS, TYPED_PREFIX, encode
from loanops.decisions.table import DECISIONS_TABLE, SEGMENTS_TABLE

if TYPE_CHECKING:
    import pyarrow as pa
    from sqlalchemy.engine import Connection

ROW_COLUMNS: Final = tuple(column.name for column in DECISIONS_TABLE.columns)
"""Columns of ``decisions``, in the order every statement here lists them."""
_SQLITE_INSERT: Final = (
    f"INSERT INTO decisions ({', '.join(ROW_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(ROW_COLUMNS))}) ON CONFLICT (request_id) DO NOTHING"
)
_PG_STAGE: Final = (
    "CREATE TEMPORARY TABLE decisions_incoming (LIKE decisions INCLUDING DEFAULTS) ON COMMIT DROP"
)
_PG_COPY: Final = "COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)"
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
        if name not in META_FIELDS and not name.startswith((TYPED_PREFIX, JSON_PREFIX))
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
    texts = [model_name, model_version]
    if any("\x00" in text for text in texts) or any(
        _holds_nul(table[name])
        for name, field in zip(table.column_names, table.schema, strict=True)
        if _is_text(field.type)
    ):
        raise ValueError("decisions may not hold NUL characters, which PostgreSQL refuses")


def _is_text(kind: pa.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _plain_text(values: pa.ChunkedArray) -> pa.ChunkedArray:
    import pyarrow as pa

    return values.cast(pa.string()) if pa.types.is_dictionary(values.type) else values


def _holds_nul(values: pa.ChunkedArray) -> bool:
    import pyarrow.compute as pc

    if values.null_count == len(values):
        return False
    return bool(pc.any(pc.match_substring(_plain_text(values), "\x00")).as_py())


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
    table = _in_segment_order(_first_of_each(table))
    dialect = connection.dialect.name
    segment_id = _reserve_segment_id(connection, dialect)
    # One key order for every writer, so two overlapping batches (a redelivered chunk racing
    # its first delivery) wait for each other on PostgreSQL instead of deadlocking.
    rows = _key_table(table, model_name, model_version, segment_id)
    if dialect == "postgresql":
        inserted = _copy_postgres(connection, rows)
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
    times = table["decided_at"]
    connection.execute(
        SEGMENTS_TABLE.insert(),
        {
            "segment_id": segment_id,
            "model_name": model_name,
            "model_version": model_version,
            "first_at": pc.min(times).as_py(),
            "last_at": pc.max(times).as_py(),
            "rows": table.num_rows,
            "data": encode(table),
        },
    )
    return table.num_rows


def _first_of_each(table: pa.Table) -> pa.Table:
    """The table with each request id's first row only (a batch rarely repeats one)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = table["request_id"]
    if pc.count_distinct(ids).as_py() == table.num_rows:
        return table
    positions = pa.table({"id": ids, "at": np.arange(table.num_rows)})
    first = positions.group_by("id", use_threads=False).aggregate([("at", "min")])["at_min"]
    return table.take(np.sort(first.to_numpy()))


def _in_segment_order(table: pa.Table) -> pa.Table:
    """The table sorted as a segment is stored: by ``decided_at``, then ``request_id``."""
    import numpy as np
    import pyarrow.compute as pc

    order = pc.sort_indices(table, [("decided_at", "ascending"), ("request_id", "ascending")])
    if np.array_equal(order.to_numpy(), np.arange(table.num_rows)):
        return table  # a batch chunk comes in order: spare copying every column
    return table.take(order)


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
    """The rows of ``decisions`` for the batch, in `ROW_COLUMNS` order, sorted by request id."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    columns: dict[str, Any] = {
        "request_id": table["request_id"],
        "decided_at": table["decided_at"],
        "model_name": pa.repeat(model_name, n),
        "model_version": pa.repeat(model_version, n),
        "threshold": table["threshold"],
        "probability": table["probability"],
        "decision": _plain_text(table["decision"]),
        "source": _plain_text(table["source"]),
        "job_id": _plain_text(table["job_id"]),
        "segment_id": pa.repeat(pa.scalar(segment_id, pa.int64()), n),
    }
    rows = pa.table({name: columns[name] for name in ROW_COLUMNS})
    order = pc.sort_indices(rows["request_id"])
    if np.array_equal(order.to_numpy(), np.arange(n)):
        return rows
    return rows.take(order)


def _insert_sqlite(connection: Connection, rows: pa.Table) -> set[str] | None:
    """Insert on SQLite; the set of inserted ids, or None when every row was inserted."""
    dbapi = connection.connection.driver_connection
    assert dbapi is not None
    n = rows.num_rows
    values = [
        _sqlite_times(rows[name]) if name == "decided_at" else _values(rows[name])
        for name in ROW_COLUMNS
    ]
    cursor = dbapi.cursor()
    try:
        # The write lock is held (BEGIN IMMEDIATE), so what is stored cannot change under us.
        before = dbapi.total_changes
        cursor.executemany(_SQLITE_INSERT, zip(*values, strict=True))
        changed = dbapi.total_changes - before
        if changed == n:
            return None
        if changed == 0:
            return set()
        # Some were stored already: which of ours are new is told by the rowid order, since
        # this transaction's rows were inserted last.
        cursor.execute("SELECT request_id FROM decisions ORDER BY rowid DESC LIMIT ?", (changed,))
        return {row[0] for row in cursor.fetchall()}
    finally:
        cursor.close()


def _values(column: pa.ChunkedArray) -> Any:
    """A column's values for executemany: a repeat of one value when they are all the same."""
    import pyarrow.compute as pc

    if column.null_count == 0 and len(column) and pc.count_distinct(column).as_py() == 1:
        return repeat(column[0].as_py(), len(column))
    return column.to_pylist()


def _sqlite_times(times: pa.ChunkedArray) -> list[str] | Any:
    """UTC as `UTCDateTime` stores it on SQLite (SQLAlchemy's fixed-width text).

    A batch chunk shares one timestamp, so each distinct one is formatted once.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(times).combine_chunks()
    texts = [
        value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        for value in encoded.dictionary.to_pylist()
    ]
    if len(texts) == 1:
        return repeat(texts[0], len(times))
    return pa.array(texts, pa.string()).take(encoded.indices).to_pylist()


def _copy_postgres(connection: Connection, rows: pa.Table) -> set[str] | None:
    """COPY straight into the table; the set of inserted ids, or None when all were.

    A stored request id fails that COPY (a redelivered chunk, which is rare); then, back at the
    savepoint, the rows are copied into a staging table and only the new ones moved over.
    """
    import psycopg
    import pyarrow.csv as pa_csv

    sink = io.BytesIO()
    # Every value quoted, nulls bare: PostgreSQL's CSV tells an empty text from a null so.
    options = pa_csv.WriteOptions(include_header=False, quoting_style="all_valid")
    pa_csv.write_csv(rows, sink, options)
    data = sink.getvalue()
    columns = ", ".join(ROW_COLUMNS)
    dbapi = connection.connection.driver_connection
    assert dbapi is not None
    with dbapi.cursor() as cursor:
        cursor.execute("SAVEPOINT decisions_copy")
        try:
            with cursor.copy(_PG_COPY.format(table="decisions", columns=columns)) as copy:
                copy.write(data)
            cursor.execute("RELEASE SAVEPOINT decisions_copy")
            return None
        except psycopg.errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT decisions_copy")
        cursor.execute(_PG_STAGE)
        with cursor.copy(_PG_COPY.format(table="decisions_incoming", columns=columns)) as copy:
            copy.write(data)
        cursor.execute(_PG_MOVE)
        inserted = {row[0] for row in cursor.fetchall()}
        cursor.execute("DROP TABLE decisions_incoming")
    return None if len(inserted) == rows.num_rows else inserted
