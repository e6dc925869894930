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
no reader, and each further column costs every insert its width and binding. A row keeps what
keyed work and a window count need: the key that makes writes idempotent and that outcomes refer
to, the time, and the segment that holds the rest (whose row names the model). Rows go in by
each database's bulk path: one statement on SQLite (`bulk_sqlite`), binary COPY on PostgreSQL
(`bulk_postgres`), a chunk's time and segment bound or encoded once. On PostgreSQL the server's
work on those rows is most of a write, so the segment is encoded while they are sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Engine

from loanops.decisions.bulk_columns import ROW_COLUMNS, plain_text
from loanops.decisions.bulk_postgres import copy_postgres
from loanops.decisions.bulk_sqlite import insert_sqlite
from loanops.decisions.database import write_transaction
from loanops.decisions.record import ARMS, DECISIONS, SOURCES
from loanops.decisions.segments import (
    JSON_PREFIX,
    META_FIELDS,
    PAIRED_FIELDS,
    TYPED_PREFIX,
    encode,
)
from loanops.decisions.table import SEGMENTS_TABLE

if TYPE_CHECKING:
    import pyarrow as pa
    from sqlalchemy.engine import Connection


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
        values = plain_text(table[name])
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
        arms = plain_text(table["arm"])
        if arms.null_count or not pc.all(pc.is_in(arms, value_set=pa.array(sorted(ARMS)))).as_py():
            raise ValueError(f"arm must be one of {sorted(ARMS)} on every decision")
    for name in ("challenger_probability", "challenger_threshold"):
        if name in table.column_names:
            values = table[name]
            inside = pc.and_(pc.greater_equal(values, 0.0), pc.less_equal(values, 1.0))
            if pc.any(pc.invert(inside)).as_py():
                raise ValueError(f"{name} must lie in [0, 1] where a challenger scored")
    if "challenger_decision" in table.column_names:
        values = plain_text(table["challenger_decision"])
        known = pc.is_in(values, value_set=pa.array(sorted(DECISIONS)))
        if pc.any(pc.and_(pc.is_valid(values), pc.invert(known))).as_py():
            raise ValueError(f"challenger_decision must be one of {sorted(DECISIONS)} or null")


def _is_text(kind: pa.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


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
    rows = _key_table(table, segment_id)
    if not _is_identity(by_key):
        rows = rows.take(by_key)
    segment: dict[str, Any] | None = None
    if dialect == "postgresql":
        # Betting that every row is new (a redelivered chunk is rare), the segment is encoded
        # while the server takes the rows.
        inserted, segment = copy_postgres(connection, rows, lambda: _segment(table, by_key))
    elif dialect == "sqlite":
        inserted = insert_sqlite(connection, rows)
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


def _key_table(table: pa.Table, segment_id: int) -> pa.Table:
    """The rows of ``decisions`` for the batch, in `ROW_COLUMNS` order."""
    import pyarrow as pa

    columns: dict[str, Any] = {
        "request_id": table["request_id"],
        "decided_at": table["decided_at"],
        "segment_id": pa.repeat(pa.scalar(segment_id, pa.int64()), table.num_rows),
    }
    return pa.table({name: columns[name] for name in ROW_COLUMNS})
