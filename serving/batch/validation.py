"""Checking a chunk of a batch file against the schema's rules, a column at a time.

A file carries no JSON types, so each value is first cast to its feature's type here; the cast
rows then meet the schema's own pandera rules (`loanops.validation.value_schema`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandera.errors import SchemaErrors

from loanops.schema import Feature, FeatureSchema
from loanops.validation import value_schema

_CATEGORIES_SHOWN = 12
_VALUE_SHOWN = 40
_NAN_TEXTS = frozenset({"nan", "+nan", "-nan"})


@dataclass(frozen=True)
class ValidatedChunk:
    """A chunk's feature columns cast for the model, and which rows may be scored."""

    columns: dict[str, np.ndarray]
    """Per feature, one value per row: float64 (NaN when missing) or object (None)."""
    texts: dict[str, pa.ChunkedArray]
    """The categorical features again, as Arrow text (null when missing)."""
    rejections: np.ndarray
    """Per row, why it is rejected ("; "-joined), or None when it is valid."""
    valid: np.ndarray
    """Per row, whether it may be scored."""

    def frame(self, rows: np.ndarray | slice) -> pd.DataFrame:
        """The features of the given row positions, as `FeatureSchema.to_frame` takes them.

        A slice gives views of `columns`, not copies, so the frame must then only be read.
        """
        return pd.DataFrame(
            {name: values[rows] for name, values in self.columns.items()}, copy=False
        )


@dataclass(frozen=True)
class _Cast:
    """One feature's values cast to its type, and the rows whose value would not cast."""

    values: np.ndarray
    """float64 (NaN where missing or not castable) or object (None)."""
    texts: pa.ChunkedArray | None
    """A categorical feature's values as Arrow text; None for a number."""
    problems: list[tuple[np.ndarray, str]]
    """(rows as a mask, what is wrong with them)."""


class _Problems:
    """Per-row problem messages, gathered feature by feature."""

    def __init__(self, n_rows: int) -> None:
        self._by_row: dict[int, list[str]] = {}
        self.n_rows = n_rows

    def add(self, rows: np.ndarray, message: str) -> None:
        for i in rows.tolist():
            self._by_row.setdefault(i, []).append(message)

    def add_each(self, rows: np.ndarray, messages: Sequence[str]) -> None:
        for i, message in zip(rows.tolist(), messages, strict=True):
            self._by_row.setdefault(i, []).append(message)

    def reasons(self) -> np.ndarray:
        reasons = np.full(self.n_rows, None, dtype=object)
        for i, messages in self._by_row.items():
            reasons[i] = "; ".join(messages)
        return reasons

    def valid(self) -> np.ndarray:
        valid = np.ones(self.n_rows, dtype=bool)
        valid[list(self._by_row)] = False
        return valid


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _is_text(data_type: pa.DataType) -> bool:
    return bool(pa.types.is_string(data_type) or pa.types.is_large_string(data_type))


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column


def _numbers(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A column as float64, with masks of missing values and of values that are no number.

    Null, blank text and NaN count as missing. Text is parsed in one vectorised cast; only a
    column holding something that is not a number takes the slower, per-value way round.
    """
    column = _decoded(column)
    data_type = column.type
    n_rows = len(column)
    if (
        pa.types.is_integer(data_type)
        or pa.types.is_floating(data_type)
        or pa.types.is_decimal(data_type)
    ):
        values = column.cast(pa.float64()).to_numpy().astype(np.float64, copy=True)
        return values, np.isnan(values), np.zeros(n_rows, dtype=bool)
    if not _is_text(data_type):
        missing = column.is_null().to_numpy(zero_copy_only=False)
        return np.full(n_rows, np.nan), missing, ~missing
    text = pc.utf8_trim_whitespace(column)
    blank = pc.fill_null(pc.equal(text, ""), True).to_numpy(zero_copy_only=False)
    try:
        values = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        nan_text = np.isnan(values)
    except pa.ArrowInvalid:
        raw = pd.Series(text.to_numpy(zero_copy_only=False), dtype=object)
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        nan_text = raw.str.lower().isin(_NAN_TEXTS).to_numpy(dtype=bool)
    missing = blank | (np.isnan(values) & nan_text)
    not_number = np.isnan(values) & ~missing
    return values, missing, not_number


def _texts(column: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """A column as text, null where missing (or blank), or None when it is no text.

    Whole numbers are taken as their text, so a Parquet `term` of 36 is the category "36".
    """
    column = _decoded(column)
    if not _is_text(column.type):
        if not (pa.types.is_integer(column.type) or pa.types.is_null(column.type)):
            return None
        column = column.cast(pa.string())
    blank = pc.equal(column, "")
    if pc.any(blank).as_py():
        column = pc.if_else(blank, pa.scalar(None, pa.string()), column)
    return column


def _cast_number(feature: Feature, column: pa.ChunkedArray) -> _Cast:
    name = feature.name
    values, missing, not_number = _numbers(column)
    present = ~missing & ~not_number
    finite = np.isfinite(values)
    problems = [
        (not_number, f"{name}: not a number"),
        (present & ~finite, f"{name}: must be a finite number"),
    ]
    if feature.kind == "int":
        with np.errstate(invalid="ignore"):
            whole = values == np.floor(values)
        problems.append((present & finite & ~whole, f"{name}: must be a whole number"))
    values[~(present & finite)] = np.nan
    return _Cast(values=values, texts=None, problems=problems)


def _cast_category(feature: Feature, column: pa.ChunkedArray) -> _Cast:
    texts = _texts(column)
    problems = []
    if texts is None:
        present = ~column.is_null().to_numpy(zero_copy_only=False)
        listing = _listing(feature.categories or ())
        problems.append((present, f"{feature.name}: must be text, one of {listing}"))
        texts = pa.chunked_array([pa.nulls(len(column), pa.string())])
    values = texts.to_numpy(zero_copy_only=False).astype(object, copy=False)
    return _Cast(values=values, texts=texts, problems=problems)


def _rule_failures(frame: pd.DataFrame, schema: FeatureSchema) -> dict[str, pd.DataFrame]:
    """The rows that break the schema's rules (`loanops.validation.value_schema`), by feature."""
    try:
        with warnings.catch_warnings():
            # pandera's failure-case concat trips a pandas FutureWarning that is not ours to fix.
            warnings.simplefilter("ignore", FutureWarning)
            # inplace: the rules only read the frame (nothing to coerce or fill in), and the
            # copy pandera would make first costs a share of the chunk's scoring time.
            value_schema(schema).validate(frame, lazy=True, inplace=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases
        return {str(name): rows for name, rows in cases.groupby("column", sort=False)}
    return {}


def _add_rule_problems(
    feature: Feature, failures: pd.DataFrame, castable: np.ndarray, problems: _Problems
) -> None:
    """Name each broken rule of one feature for its row, skipping values that did not cast."""
    name = feature.name
    rows = failures["index"].to_numpy(dtype=np.int64)
    kept = castable[rows]
    rows, checks, values = rows[kept], failures["check"].to_numpy()[kept], failures["failure_case"]
    values = values.to_numpy()[kept]
    for check in dict.fromkeys(checks):
        chosen = checks == check
        at, seen = rows[chosen], values[chosen]
        if check == "not_nullable":
            problems.add(at, f"{name}: missing")
        elif str(check).startswith("in_range"):
            low = feature.minimum is not None and seen.astype(np.float64) < feature.minimum
            if feature.minimum is not None:
                problems.add(at[low], f"{name}: must be >= {_number_text(feature.minimum)}")
            if feature.maximum is not None:
                problems.add(at[~low], f"{name}: must be <= {_number_text(feature.maximum)}")
        elif str(check).startswith("isin"):
            shown = _listing(feature.categories or ())
            problems.add_each(at, [f"{name}: {_shown(v)} is not one of {shown}" for v in seen])
        else:
            problems.add(at, f"{name}: breaks {check}")


def _listing(categories: Sequence[str]) -> str:
    if len(categories) <= _CATEGORIES_SHOWN:
        return ", ".join(categories)
    return f"{', '.join(categories[:_CATEGORIES_SHOWN])}, … ({len(categories)} values)"


def _shown(value: Any) -> str:
    text = str(value)
    if len(text) > _VALUE_SHOWN:
        text = text[: _VALUE_SHOWN - 1] + "…"
    return repr(text)


def validate_chunk(table: pa.Table, schema: FeatureSchema) -> ValidatedChunk:
    """Check every row of a chunk against the schema's rules.

    A file carries no JSON types, so each value is first cast to its feature's type: numeric
    text and whole floats are taken as numbers, whole numbers as category text, and a value
    that is no number, not finite, or not whole for a count is its row's problem. The cast
    rows then meet the schema's own rules (`loanops.validation.value_schema`, the pandera
    rules of the training data): numbers within the feature's range, categories among the
    declared values, and a value present unless the feature is nullable.

    Args:
        table: rows of the batch file, holding at least the feature columns.
        schema: the model's feature schema.

    Returns:
        The cast feature columns and, per row, its rejection reason: each broken rule as
        `feature: what is wrong`, joined with "; " in feature order (None for a valid row).
    """
    casts = {
        feature.name: (_cast_category if feature.is_categorical else _cast_number)(
            feature, table.column(feature.name)
        )
        for feature in schema.features
    }
    columns = {name: cast.values for name, cast in casts.items()}
    failures = _rule_failures(pd.DataFrame(columns, copy=False), schema)
    problems = _Problems(table.num_rows)
    for feature in schema.features:
        cast = casts[feature.name]
        castable = np.ones(table.num_rows, dtype=bool)
        for mask, message in cast.problems:
            problems.add(np.flatnonzero(mask), message)
            castable &= ~mask
        if feature.name in failures:
            _add_rule_problems(feature, failures[feature.name], castable, problems)
    texts = {name: cast.texts for name, cast in casts.items() if cast.texts is not None}
    return ValidatedChunk(
        columns=columns, texts=texts, rejections=problems.reasons(), valid=problems.valid()
    )
