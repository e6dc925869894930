"""The decision log's columnar copy: each written batch's decisions as one Arrow segment.

Every write (`loanops.decisions.bulk`) stores, beside its rows in ``decisions``, one row per model
version in ``decision_segments``: the newly inserted decisions as a LZ4-compressed Arrow IPC
stream, typed column by column (inputs included), with the time span it covers. A window is
read by fetching the segments that overlap it and decoding them in C++, so no read parses JSON.

Why this layout and not the alternatives:

- Typed columns per schema feature on ``decisions`` would need a migration for every new schema
  (the features differ by model and data set), and SQLite's and psycopg's row-at-a-time
  fetches would still build a Python object per value.
- A narrow typed side table (request, key, value) multiplies rows by the feature count, and its
  reads are a pivot.
- Parquet or Arrow files beside the table would need a shared file system between the API and
  workers on different nodes, and could disagree with the table after a crash. A segment lives
  in the same database and the same transaction as its rows, so both are written or neither.

Since revision 0005 ``decisions`` keeps only each decision's key, time and segment (for
idempotent writes, outcome joins and counts); the segment is the one copy of the rest. The
segments are append-only and only ever hold rows whose insert succeeded, so a redelivered batch
adds no segment rows.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Engine, select

from loanops.decisions.table import SEGMENTS_TABLE

if TYPE_CHECKING:
    import pyarrow as pa
    from sqlalchemy.engine import Connection

TYPED_PREFIX: Final = "in:"
"""Prefix of an input column stored with its Arrow type."""
JSON_PREFIX: Final = "js:"
"""Prefix of an input column whose values mixed types, stored as one JSON text per row."""
_SEGMENTS_PER_FETCH: Final = 8
"""Compressed segments held in memory at a time while a window is read."""
META_FIELDS: Final = (
    "request_id",
    "decided_at",
    "threshold",
    "probability",
    "decision",
    "reasons",
    "source",
    "job_id",
)
"""Columns of a segment besides its inputs (model name and version are the segment's own)."""
PAIRED_FIELDS: Final = (
    "arm",
    "challenger_version",
    "challenger_threshold",
    "challenger_probability",
    "challenger_decision",
    "challenger_reasons",
)
"""A paired record's columns (`loanops.decisions.record.Decision`), after `META_FIELDS`.

A segment may lack them (written before challengers existed, or by a batch job with no
challenger): `with_paired` reads such a segment as the champion's alone.
"""


def paired_types() -> dict[str, pa.DataType]:
    """The Arrow type of each of `PAIRED_FIELDS`, as stored and as `with_paired` fills them."""
    import pyarrow as pa

    text = pa.dictionary(pa.int32(), pa.string())
    return {
        "arm": text,
        "challenger_version": text,
        "challenger_threshold": pa.float64(),
        "challenger_probability": pa.float64(),
        "challenger_decision": text,
        "challenger_reasons": pa.string(),
    }


def with_paired(table: pa.Table) -> pa.Table:
    """The segment with every paired column: a missing ``arm`` is the champion, the rest null."""
    import numpy as np
    import pyarrow as pa

    if all(name in table.column_names for name in PAIRED_FIELDS):
        return table
    n = table.num_rows
    for name, kind in paired_types().items():
        if name in table.column_names:
            continue
        if name == "arm":
            column = pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(n, dtype=np.int32)), pa.array(["champion"])
            )
        else:
            column = pa.nulls(n, kind)
        table = table.append_column(pa.field(name, kind), column)
    return table


def input_table(
    input_lines: Sequence[bytes], inputs: Sequence[Mapping[str, Any]] | None = None
) -> pa.Table:
    """The inputs (one JSON object per row, as the table stores them) as typed Arrow columns.

    Arrow infers each key's type in C++, from the mappings when given (the quicker), else from
    the JSON. A key whose values mix types (a number logged as text) cannot be one typed
    column; then every key is built in Python, and that key's values are kept as JSON text, to
    be read back as logged. NaN is stored as null, as JSON stores it.
    """
    import pyarrow as pa
    import pyarrow.json as pa_json

    if not input_lines:
        return pa.table({})
    if inputs is not None:
        table = _from_mappings(inputs)
        if table is not None:
            return table
    try:
        table = pa_json.read_json(
            io.BytesIO(b"\n".join(input_lines)),
            read_options=pa_json.ReadOptions(block_size=1 << 26),
        )
        if table.num_rows == len(input_lines) and all(
            not pa.types.is_nested(field.type) for field in table.schema
        ):
            return table.rename_columns([TYPED_PREFIX + name for name in table.column_names])
    except pa.ArrowInvalid:
        pass
    return _input_table_in_python(input_lines)


def _from_mappings(inputs: Sequence[Mapping[str, Any]]) -> pa.Table | None:
    """The inputs as typed columns straight from the mappings, or None to take the JSON way."""
    import pyarrow as pa
    import pyarrow.compute as pc

    first = inputs[0].keys()
    if any(row.keys() != first for row in inputs):
        return None  # from_pylist takes its columns from the first row only
    try:
        table = pa.Table.from_pylist(list(inputs))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        return None
    columns: dict[str, Any] = {}
    for field, column in zip(table.schema, table.columns, strict=True):
        kind = field.type
        if pa.types.is_floating(kind):
            column = pc.if_else(pc.is_finite(column), column, pa.scalar(None, kind))
        elif not (
            pa.types.is_integer(kind)
            or pa.types.is_string(kind)
            or pa.types.is_boolean(kind)
            or pa.types.is_null(kind)
        ):
            return None  # nested or odd values: the JSON way decides
        columns[TYPED_PREFIX + field.name] = column
    return pa.table(columns)


def _input_table_in_python(input_lines: Sequence[bytes]) -> pa.Table:
    import orjson
    import pyarrow as pa

    rows = [orjson.loads(line) for line in input_lines]
    keys = list(dict.fromkeys(key for row in rows for key in row))
    columns: dict[str, pa.Array] = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        try:
            array = pa.array(values)
            if pa.types.is_nested(array.type):
                raise pa.ArrowInvalid("nested")
            columns[TYPED_PREFIX + key] = array
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            texts = [None if v is None else orjson.dumps(v).decode() for v in values]
            columns[JSON_PREFIX + key] = pa.array(texts, type=pa.string())
    return pa.table(columns)


def encode(table: pa.Table) -> bytes:
    """A segment's table as a compressed Arrow IPC stream."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode(data: bytes) -> pa.Table:
    """A segment's table from its stored bytes."""
    import pyarrow as pa

    with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
        return reader.read_all()


def segment_rows(
    meta: dict[str, list[Any]],
    input_lines: list[bytes],
    models: list[tuple[str, str]],
    inputs: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Rows of ``decision_segments`` for one write: one per model version, sorted by time.

    Args:
        meta: The `META_FIELDS` values, one list each, row for row; ``decided_at`` as aware
            datetimes, ``reasons`` as JSON text.
        input_lines: Each row's inputs as JSON.
        models: Each row's (model name, model version).
        inputs: Each row's inputs as given, if at hand: typed from them, not from the JSON.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if not input_lines:
        return []
    columns: dict[str, Any] = {
        "request_id": pa.array(meta["request_id"], type=pa.string()),
        "decided_at": pa.array(_in_utc(meta["decided_at"]), type=pa.timestamp("us", tz="UTC")),
        "threshold": pa.array(meta["threshold"], type=pa.float64()),
        "probability": pa.array(meta["probability"], type=pa.float64()),
        "decision": pa.array(meta["decision"], type=pa.string()).dictionary_encode(),
        "reasons": pa.array(meta["reasons"], type=pa.string()),
        "source": pa.array(meta["source"], type=pa.string()).dictionary_encode(),
        "job_id": pa.array(meta["job_id"], type=pa.string()).dictionary_encode(),
    }
    whole = pa.Table.from_pydict(columns)
    typed = input_table(input_lines, inputs)
    for name in typed.column_names:
        whole = whole.append_column(name, typed[name])
    distinct = list(dict.fromkeys(models))
    rows = []
    for model in distinct:
        if len(distinct) == 1:
            part = whole
        else:
            mask = np.fromiter((m == model for m in models), dtype=bool, count=len(models))
            part = whole.filter(pa.array(mask))
        part = part.take(
            pc.sort_indices(part, [("decided_at", "ascending"), ("request_id", "ascending")])
        )
        data = encode(part)
        times = part["decided_at"]
        rows.append(
            {
                "model_name": model[0],
                "model_version": model[1],
                "first_at": pc.min(times).as_py(),
                "last_at": pc.max(times).as_py(),
                "rows": part.num_rows,
                "data": data,
            }
        )
    return rows


def _in_utc(times: list[datetime]) -> list[datetime]:
    # Arrow takes an aware datetime's wall time as UTC; a batch shares one, so convert each once.
    converted: dict[datetime, datetime] = {}
    return [converted.get(t) or converted.setdefault(t, t.astimezone(UTC)) for t in times]


def insert_segments(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Store segment rows in the caller's transaction."""
    if rows:
        connection.execute(SEGMENTS_TABLE.insert(), rows)


def window_segments(
    engine: Engine,
    start: datetime | None,
    end: datetime | None,
    model_name: str | None,
    model_version: str | None,
) -> Iterator[tuple[str, str, pa.Table]]:
    """Each segment overlapping the window, decoded and cut to it, in the order written.

    Yields:
        (model name, model version, the segment's rows with ``start <= decided_at < end``).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    c = SEGMENTS_TABLE.c
    # The spans first, the blobs then by id, a few at a time: ordering the filtered rows with
    # their blobs, SQLite sorts every blob of the window in memory before returning the first.
    spans = select(c.segment_id, c.model_name, c.model_version, c.first_at, c.last_at)
    if start is not None:
        spans = spans.where(c.last_at >= start)
    if end is not None:
        spans = spans.where(c.first_at < end)
    if model_name is not None:
        spans = spans.where(c.model_name == model_name)
    if model_version is not None:
        spans = spans.where(c.model_version == model_version)
    with engine.connect() as connection:
        found = connection.execute(spans.order_by(c.segment_id)).all()
        for first in range(0, len(found), _SEGMENTS_PER_FETCH):
            some = found[first : first + _SEGMENTS_PER_FETCH]
            fetched = select(c.segment_id, c.data).where(c.segment_id.in_([r[0] for r in some]))
            blobs = dict(connection.execute(fetched).all())
            for segment_id, name, version, first_at, last_at in some:
                table = decode(blobs.pop(segment_id))
                if (start is None or first_at >= start) and (end is None or last_at < end):
                    yield name, version, table  # wholly inside: no row to cut
                    continue
                times = table["decided_at"]
                mask = None
                if start is not None:
                    mask = pc.greater_equal(times, pa.scalar(start, type=times.type))
                if end is not None:
                    below = pc.less(times, pa.scalar(end, type=times.type))
                    mask = below if mask is None else pc.and_(mask, below)
                if mask is not None:
                    table = table.filter(mask)
                if table.num_rows:
                    yield name, version, table
