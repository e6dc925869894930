"""A window of the decision log as bounded batches of columns, for reads that need not hold it all.

`read_decisions` returns a whole window as one DataFrame, which at millions of decisions costs
gigabytes (request ids and reasons as Python strings, every input as a pandas column).
`stream_decisions` reads the same segments and yields them a few at a time, with only the
columns asked for, left in Arrow where the log stored them in one type; nothing is built per
row in Python. The monitor reads its windows this way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, TypeAlias

from sqlalchemy import Engine

from loanops.decisions.columnar import _input
from loanops.decisions.read import READ_BATCH_ROWS, InputKind, window_filter
from loanops.decisions.segments import (
    JSON_PREFIX,
    META_FIELDS,
    PAIRED_FIELDS,
    TYPED_PREFIX,
    window_segments,
    with_paired,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

Column: TypeAlias = "pa.ChunkedArray | pa.Array | pd.Series"
"""A batch's column: Arrow when its values share one type, else a pandas Series."""
STREAM_COLUMNS: Final = ("decided_at", "probability")
"""The columns `stream_decisions` yields besides the inputs, unless told otherwise."""
_COLLISION_PREFIX: Final = "input_"


@dataclass(frozen=True)
class ColumnBatch:
    """Consecutive rows of a window (decisions of one model version, or rows of a file).

    Attributes:
        rows: How many rows.
        columns: Each column by name, `rows` long.
        model_name: The model of every row, when the batch comes from the log.
        model_version: Its version, likewise.
    """

    rows: int
    columns: Mapping[str, Column]
    model_name: str | None = None
    model_version: str | None = None


def stream_decisions(
    engine: Engine,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    inputs: Mapping[str, InputKind],
    model_name: str | None = None,
    model_version: str | None = None,
    columns: Sequence[str] = STREAM_COLUMNS,
    batch_rows: int = READ_BATCH_ROWS,
) -> Iterator[ColumnBatch]:
    """The decisions of a window, in batches of whole segments, in the order they were written.

    Consecutive segments of one model version whose Arrow schemas agree are joined (without a
    copy) until a batch reaches `batch_rows`, so a log written in small batches (the API's)
    still yields large ones; a segment larger than `batch_rows` is yielded whole.

    Args:
        engine: Engine of a migrated decision-log database.
        start: Earliest ``decided_at`` included (timezone-aware); None for no lower bound.
        end: First ``decided_at`` excluded (timezone-aware); None for no upper bound.
        inputs: The input keys to read and their kinds.
        model_name: Keep only this model's decisions.
        model_version: Keep only this model version's decisions.
        columns: Columns of a segment to yield besides the inputs (`segments.META_FIELDS` and
            `segments.PAIRED_FIELDS`; a segment written without a challenger yields ``arm``
            ``"champion"`` and null ``challenger_*`` columns).
        batch_rows: Rows after which a batch is yielded.

    Yields:
        Batches whose columns are `columns`, then the input keys (a key named like one of
        `columns` is renamed ``input_<key>``). A column the log stored in one type stays
        Arrow: number keys as float64, text keys as strings, meta columns as stored. A key
        whose logged values mix types (or are booleans) is a Series, read value by value as
        `read_decisions` reads it. A key a segment lacks is all null there.

    Raises:
        ValueError: A bound is a naive datetime, a column is not a segment's, or `batch_rows`
            is not positive.
    """
    window_filter(start, end)  # refuses naive bounds before any query
    known = (*META_FIELDS, *PAIRED_FIELDS)
    unknown = [name for name in columns if name not in known]
    if unknown:
        raise ValueError(f"not columns of a segment: {unknown}; choose from {list(known)}")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be positive, got {batch_rows}")
    pending: list[pa.Table] = []
    pending_rows = 0
    group: tuple[str, str, pa.Schema] | None = None
    for name, version, table in window_segments(engine, start, end, model_name, model_version):
        key = (name, version, table.schema)
        if pending and group is not None and (key != group or pending_rows >= batch_rows):
            yield _batch(group, pending, columns, inputs)
            pending, pending_rows = [], 0
        group = key
        pending.append(table)
        pending_rows += table.num_rows
    if pending and group is not None:
        yield _batch(group, pending, columns, inputs)


def _batch(
    group: tuple[str, str, pa.Schema],
    tables: list[pa.Table],
    columns: Sequence[str],
    inputs: Mapping[str, InputKind],
) -> ColumnBatch:
    import pyarrow as pa

    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    if any(name in PAIRED_FIELDS for name in columns):
        table = with_paired(table)
    data: dict[str, Column] = {name: table[name] for name in columns}
    for key, kind in inputs.items():
        label = f"{_COLLISION_PREFIX}{key}" if key in columns else key
        data[label] = _input_column(table, key, kind)
    return ColumnBatch(
        rows=table.num_rows, columns=data, model_name=group[0], model_version=group[1]
    )


def _input_column(table: pa.Table, key: str, kind: InputKind) -> Column:
    """One input key of a batch: Arrow when stored in one type that fits its kind, else a Series."""
    import pyarrow as pa

    target = pa.float64() if kind == "number" else pa.string()
    typed_name = TYPED_PREFIX + key
    if JSON_PREFIX + key not in table.column_names:
        if typed_name not in table.column_names:
            return pa.nulls(table.num_rows, target)
        column = table[typed_name]
        kind_of = column.type
        if pa.types.is_null(kind_of):
            return pa.nulls(table.num_rows, target)
        if kind == "number" and (pa.types.is_integer(kind_of) or pa.types.is_floating(kind_of)):
            return column.cast(target)
        if kind == "text" and (pa.types.is_string(kind_of) or pa.types.is_large_string(kind_of)):
            return column.cast(target)
    return _input(key, kind, [table], [table.num_rows])
