"""A window's batches as monitoring compares them: each feature coerced to its kind.

A window reaches the monitor as `ColumnBatch`es: from the decision log (`stream_decisions`), a
Parquet file read a row group at a time (`parquet_batches`), or a DataFrame (`frame_batches`).
`prepare_batch` turns one into `PreparedBatch`: numeric features as float64 arrays (a value that
is not a number becomes NaN and is counted as invalid), categorical ones as Arrow strings (a
value that is not text becomes its ``str``). Columns already in the right Arrow type go through
without a Python object per value; any other column takes the pandas path (`coerce_number`,
`coerce_text`) a whole in-memory window always took, so both give the same values.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from loanops.decisions.stream import Column, ColumnBatch
from loanops.monitoring.reference import PREDICTION_COLUMN
from loanops.schema import FeatureSchema

FILE_BATCH_ROWS: Final = 100_000
"""Rows of a Parquet file read at a time."""
LABEL_COLUMNS: Final = ("decided_at", "model_name", "model_version")
"""Columns the monitor reads besides the features and the score, to label its summary."""


@dataclass(frozen=True, eq=False)
class PreparedBatch:
    """One batch of a window, coerced (see the module docstring).

    Attributes:
        rows: Rows in the batch.
        numbers: Each numeric feature as float64, NaN where missing or invalid.
        texts: Each categorical feature as Arrow strings, null where missing.
        invalid: Per feature, values that were not of its type (now missing).
        absent: Features the batch had no column for (all missing in `numbers` / `texts`).
        scores: `PREDICTION_COLUMN` as float64 (NaN where missing), or None without one.
        decided: The batch's earliest and latest ``decided_at``, if it has any.
        model_names: Distinct model names of its rows, where known.
        model_versions: Distinct model versions of its rows, where known.
    """

    rows: int
    numbers: dict[str, npt.NDArray[np.float64]]
    texts: dict[str, pa.Array]
    invalid: dict[str, int]
    absent: frozenset[str]
    scores: npt.NDArray[np.float64] | None
    decided: tuple[pd.Timestamp, pd.Timestamp] | None = None
    model_names: frozenset[str] = field(default_factory=frozenset)
    model_versions: frozenset[str] = field(default_factory=frozenset)


def frame_batches(frame: pd.DataFrame) -> Iterator[ColumnBatch]:
    """A DataFrame as one batch (its columns are not copied)."""
    yield ColumnBatch(rows=len(frame), columns={str(name): frame[name] for name in frame.columns})


def parquet_batches(
    path: str | Path, schema: FeatureSchema, *, batch_rows: int = FILE_BATCH_ROWS
) -> Iterator[ColumnBatch]:
    """A Parquet file's rows, `batch_rows` at a time, with only the columns the monitor reads."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as file:
        present = set(file.schema_arrow.names)
        wanted = [*schema.feature_names, PREDICTION_COLUMN, *LABEL_COLUMNS]
        columns = [name for name in dict.fromkeys(wanted) if name in present]
        for batch in file.iter_batches(batch_size=batch_rows, columns=columns):
            named = dict(zip(columns, batch.columns, strict=True))
            yield ColumnBatch(rows=batch.num_rows, columns=named)


def prepare_batch(batch: ColumnBatch, schema: FeatureSchema) -> PreparedBatch:
    """The batch's features, score and labels as the monitor compares them."""
    numbers: dict[str, npt.NDArray[np.float64]] = {}
    texts: dict[str, pa.Array] = {}
    invalid: dict[str, int] = {}
    absent = []
    for feature in schema.features:
        column = batch.columns.get(feature.name)
        if column is None:
            absent.append(feature.name)
        if feature.is_categorical:
            texts[feature.name] = (
                pa.nulls(batch.rows, pa.string()) if column is None else _text(column)
            )
            invalid[feature.name] = 0
        else:
            numbers[feature.name], invalid[feature.name] = (
                (np.full(batch.rows, np.nan), 0) if column is None else _number(column)
            )
    scores = batch.columns.get(PREDICTION_COLUMN)
    return PreparedBatch(
        rows=batch.rows,
        numbers=numbers,
        texts=texts,
        invalid=invalid,
        absent=frozenset(absent),
        scores=None if scores is None else _scores(scores),
        decided=_time_span(batch.columns.get("decided_at")),
        model_names=_labels(batch.model_name, batch.columns.get("model_name")),
        model_versions=_labels(batch.model_version, batch.columns.get("model_version")),
    )


def coerce_text(column: pd.Series) -> npt.NDArray[Any]:
    """A categorical feature's values as objects holding str or None (a number becomes its str)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype(object)
    present = column.notna()
    if pd.api.types.infer_dtype(column, skipna=True) not in ("string", "empty"):
        column = column.where(~present, column.astype(str))
    return column.astype(object).where(present, None).to_numpy()


def coerce_number(column: pd.Series) -> tuple[npt.NDArray[np.float64], int]:
    """A numeric feature's values as float64 (NaN where missing or not a number), and how many
    were present but not numbers (e.g. '13.5%')."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype(object)
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype=np.float64, na_value=np.nan), 0
    numbers = pd.to_numeric(column, errors="coerce").astype(np.float64)
    return numbers.to_numpy(), int((column.notna() & numbers.isna()).sum())


def _arrow(column: Column) -> pa.Array | pa.ChunkedArray | None:
    return column if isinstance(column, pa.Array | pa.ChunkedArray) else None


def _series(column: Column) -> pd.Series:
    arrow = _arrow(column)
    return pd.Series(arrow.to_pandas()) if arrow is not None else pd.Series(column)


def _number(column: Column) -> tuple[npt.NDArray[np.float64], int]:
    arrow = _arrow(column)
    if arrow is not None and (pa.types.is_floating(arrow.type) or pa.types.is_integer(arrow.type)):
        values = arrow.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return np.asarray(values, dtype=np.float64), 0
    return coerce_number(_series(column))


def _text(column: Column) -> pa.Array:
    arrow = _arrow(column)
    if arrow is not None:
        kind = arrow.type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            joined = arrow.combine_chunks() if isinstance(arrow, pa.ChunkedArray) else arrow
            return joined.cast(pa.string())
    return pa.array(coerce_text(_series(column)), type=pa.string())


def _scores(column: Column) -> npt.NDArray[np.float64]:
    arrow = _arrow(column)
    if arrow is not None and pa.types.is_floating(arrow.type):
        return np.asarray(arrow.cast(pa.float64()).to_numpy(zero_copy_only=False))
    scores = pd.to_numeric(_series(column), errors="coerce")
    return scores.to_numpy(dtype=np.float64, na_value=np.nan)


def _time_span(column: Column | None) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    if column is None:
        return None
    arrow = _arrow(column)
    if arrow is not None and pa.types.is_timestamp(arrow.type):
        import pyarrow.compute as pc

        bounds = pc.min_max(arrow)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low is None or high is None:
            return None
        return _utc(pd.Timestamp(low)), _utc(pd.Timestamp(high))
    decided = pd.to_datetime(_series(column), utc=True)
    if not decided.notna().any():
        return None
    return decided.min(), decided.max()


def _utc(moment: pd.Timestamp) -> pd.Timestamp:
    # As pd.to_datetime(..., utc=True): a naive time is taken as UTC.
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


def _labels(given: str | None, column: Column | None) -> frozenset[str]:
    if given is not None:
        return frozenset({given})
    if column is None:
        return frozenset()
    return frozenset(str(value) for value in _series(column).dropna().unique())


def text_values(array: pa.Array) -> npt.NDArray[Any]:
    """Arrow strings as objects holding str or None, as `coerce_text` gives them."""
    return np.asarray(array.to_pandas(), dtype=object)
