"""Reading the decision log back: a time window as a DataFrame, or its count.

`read_decisions` reads the columnar segments (`loanops.decisions.segments`), never the JSON
column, into one frame of the whole window; the monitor, whose windows run to millions of
decisions, reads the same segments in bounded batches instead (`loanops.decisions.stream`).
`loanops.outcomes` builds its joined reads of the row table from `window_filter`,
`input_columns` and `read_frame`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal

from sqlalchemy import Engine, Select, func, select
from sqlalchemy.sql.elements import ColumnElement

from loanops.decisions.columnar import segment_frame
from loanops.decisions.segments import window_segments
from loanops.decisions.table import DECISIONS_TABLE, SEGMENTS_TABLE

if TYPE_CHECKING:
    import pandas as pd

_COLUMNS = DECISIONS_TABLE.c
# An input key equal to one of those columns is read back under this prefix.
_COLLISION_PREFIX: Final = "input_"

InputKind = Literal["number", "text"]
"""How `read_decisions` reads one input key: as float64, or as text."""
ColumnKind = Literal["datetime", "float", "bool", "text", "json"]
"""How `read_frame` converts one selected column."""

META_COLUMNS: Final[Mapping[str, ColumnKind]] = {
    "request_id": "text",
    "decided_at": "datetime",
    "model_name": "text",
    "model_version": "text",
    "threshold": "float",
    "probability": "float",
    "decision": "text",
    "reasons": "json",
    "source": "text",
    "job_id": "text",
    "arm": "text",
    "challenger_version": "text",
    "challenger_threshold": "float",
    "challenger_probability": "float",
    "challenger_decision": "text",
    "challenger_reasons": "json",
}
"""Columns of `read_decisions` before the inputs, in their order, with their kinds.

The ``challenger_*`` columns are null (NaN for numbers) where no challenger scored.
"""
READ_BATCH_ROWS: Final = 100_000
"""Rows fetched and converted at a time when a window is read."""


def window_filter(
    start: datetime | None,
    end: datetime | None,
    model_name: str | None = None,
    model_version: str | None = None,
) -> list[ColumnElement[bool]]:
    """WHERE conditions on the decisions table for a window and, optionally, a model version.

    Raises:
        ValueError: A bound is a naive datetime.
    """
    for bound in (start, end):
        if bound is not None and (bound.tzinfo is None or bound.utcoffset() is None):
            raise ValueError("window bounds must be timezone-aware datetimes")
    conditions: list[ColumnElement[bool]] = []
    if start is not None:
        conditions.append(_COLUMNS.decided_at >= start)
    if end is not None:
        conditions.append(_COLUMNS.decided_at < end)
    # A row's model is its segment's.
    segments = SEGMENTS_TABLE.c
    models = [
        column == value
        for column, value in (
            (segments.model_name, model_name),
            (segments.model_version, model_version),
        )
        if value is not None
    ]
    if models:
        conditions.append(_COLUMNS.segment_id.in_(select(segments.segment_id).where(*models)))
    return conditions


def input_columns(
    inputs: Mapping[str, InputKind] | None, dialect: str = "postgresql"
) -> list[ColumnElement[Any]]:
    """The columns that select the inputs: each key extracted by the database, or whole objects.

    Extracting in SQL spares a Python dict per row, which at a million decisions costs
    gigabytes. PostgreSQL's ``->>`` gives text; SQLite's ``json_extract`` gives each value in its
    JSON type. Neither casts, so a value of the wrong type reaches the caller as logged instead
    of failing the read (PostgreSQL) or silently becoming 0 (SQLite's CAST).
    """
    if inputs is None:
        return [_COLUMNS.inputs]
    if dialect == "sqlite":
        return [
            func.json_extract(_COLUMNS.inputs, f'$."{key}"')
            if '"' not in key
            else _COLUMNS.inputs[key].as_string()
            for key in inputs
        ]
    return [_COLUMNS.inputs[key].as_string() for key in inputs]


def read_frame(
    engine: Engine,
    statement: Select[Any],
    columns: Mapping[str, ColumnKind],
    inputs: Mapping[str, InputKind] | None,
    *,
    batch_rows: int = READ_BATCH_ROWS,
) -> pd.DataFrame:
    """Run a SELECT of `columns` followed by `input_columns(inputs)` into a DataFrame.

    Rows are fetched and converted `batch_rows` at a time, text as categoricals whose strings
    are shared, so memory stays near the size of the result rather than of its Python rows.

    Args:
        engine: Engine of a migrated decision-log database.
        statement: Selects the columns in `columns`' order, then the input columns.
        columns: Name and kind of each leading column.
        inputs: The input keys and their kinds, or None when the statement selects whole input
            objects, which are then expanded into a column per key, in first-seen order.
        batch_rows: Rows per fetch.

    Returns:
        One column per entry of `columns` (datetimes as ``datetime64[ns, UTC]``, floats as
        float64, text as objects), then the inputs: number keys as float64 where every value is
        a number (as objects otherwise, left for the caller to judge), text keys as objects,
        missing values as NaN or None. An input key named like a leading column is renamed
        ``input_<key>``.
    """

    if batch_rows < 1:
        raise ValueError(f"batch_rows must be positive, got {batch_rows}")
    batches: list[pd.DataFrame] = []
    with engine.connect() as connection:
        result = connection.execution_options(yield_per=batch_rows).execute(statement)
        for rows in result.partitions():
            batches.append(_batch_frame(rows, columns, inputs))
    if not batches:
        batches.append(_batch_frame([], columns, inputs))
    return _concat(batches)


def _batch_frame(
    rows: Sequence[Any],
    columns: Mapping[str, ColumnKind],
    inputs: Mapping[str, InputKind] | None,
) -> pd.DataFrame:
    import pandas as pd

    width = len(columns) + (1 if inputs is None else len(inputs))
    values: list[Sequence[Any]] = list(zip(*rows, strict=True)) or [() for _ in range(width)]
    data = {name: _converted(values[i], kind) for i, (name, kind) in enumerate(columns.items())}
    frame = pd.DataFrame(data, index=pd.RangeIndex(len(rows)))
    if inputs is None:
        if not rows:
            return frame
        keyed = pd.DataFrame.from_records(values[-1], index=frame.index)
    else:
        keyed = pd.DataFrame(
            {
                key: _converted(values[len(columns) + i], "float" if kind == "number" else "text")
                for i, (key, kind) in enumerate(inputs.items())
            },
            index=frame.index,
        )
    if keyed.columns.empty:
        return frame
    keyed.columns = [f"{_COLLISION_PREFIX}{key}" if key in columns else key for key in keyed]
    return pd.concat([frame, keyed], axis=1)


def _converted(values: Sequence[Any], kind: ColumnKind) -> pd.Series:
    import pandas as pd

    if kind == "datetime":
        return pd.Series(pd.to_datetime(pd.Series(values, dtype=object), utc=True))
    if kind == "float":
        raw = pd.Series(values, dtype=object)
        try:
            return pd.to_numeric(raw).astype("float64")
        except (ValueError, TypeError):
            return raw  # a value that is not a number: kept as logged
    if kind == "bool":
        return pd.Series(values, dtype="bool")
    if kind == "text" and len(set(values)) * 2 <= len(values):
        # Categoricals share one string object per distinct value; `_concat` restores objects.
        # Mostly-distinct text (ids) gains nothing from it and costs the factorising.
        return pd.Series(pd.Categorical(values))
    return pd.Series(values, dtype=object)


def _concat(batches: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The batches as one frame; a key missing from a batch is NaN there."""
    import pandas as pd
    from pandas.api.types import union_categoricals

    names = list(dict.fromkeys(name for batch in batches for name in batch.columns))
    texts = [
        name
        for name in names
        if all(
            name in batch and isinstance(batch[name].dtype, pd.CategoricalDtype)
            for batch in batches
        )
    ]
    frame = pd.concat([batch.drop(columns=texts) for batch in batches], ignore_index=True)
    for name in texts:
        merged = pd.Series(union_categoricals([batch[name] for batch in batches])).astype(object)
        frame[name] = merged.where(merged.notna(), None)
    return frame[names]


def read_decisions(
    engine: Engine,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    model_name: str | None = None,
    model_version: str | None = None,
    inputs: Mapping[str, InputKind] | None = None,
    reasons: bool = True,
    batch_rows: int = READ_BATCH_ROWS,
) -> pd.DataFrame:
    """Read the decisions of a time window, one row each, oldest first.

    Args:
        engine: Engine of a migrated decision-log database.
        start: Earliest ``decided_at`` included (timezone-aware); None for no lower bound.
        end: First ``decided_at`` excluded (timezone-aware); None for no upper bound.
        model_name: Keep only this model's decisions.
        model_version: Keep only this model version's decisions.
        inputs: Read only these input keys, as numbers or text. None reads every key there is.
        reasons: Include the ``reasons`` and ``challenger_reasons`` columns (a list per row,
            the costliest columns after the inputs; ``challenger_reasons`` is None where no
            challenger scored).
        batch_rows: Kept for callers; a window is read a stored segment at a time.

    Returns:
        The columns of `META_COLUMNS` (less ``reasons`` if not asked for), then one column per
        input key (as `read_frame` describes). Ordered by ``decided_at``, then ``request_id``.

    Raises:
        ValueError: A bound is a naive datetime.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be positive, got {batch_rows}")
    for bound in (start, end):
        if bound is not None and (bound.tzinfo is None or bound.utcoffset() is None):
            raise ValueError("window bounds must be timezone-aware datetimes")
    columns = [name for name in META_COLUMNS if reasons or not name.endswith("reasons")]
    return segment_frame(
        window_segments(engine, start, end, model_name, model_version), columns, inputs
    )


def count_decisions(
    engine: Engine,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    model_name: str | None = None,
    model_version: str | None = None,
) -> int:
    """Count the decisions of a time window, with the same filters as `read_decisions`.

    Args:
        engine: Engine of a migrated decision-log database.
        start: Earliest ``decided_at`` included (timezone-aware); None for no lower bound.
        end: First ``decided_at`` excluded (timezone-aware); None for no upper bound.
        model_name: Count only this model's decisions.
        model_version: Count only this model version's decisions.

    Returns:
        The number of decisions.
    """
    statement = select(func.count()).select_from(DECISIONS_TABLE)
    statement = statement.where(*window_filter(start, end, model_name, model_version))
    with engine.connect() as connection:
        return int(connection.execute(statement).scalar_one())
