"""What both databases' bulk writes need to know of a batch's columns: the row layout, and the
values a whole batch shares."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from loanops.decisions.table import DECISIONS_TABLE

if TYPE_CHECKING:
    import pyarrow as pa

ROW_COLUMNS: Final = tuple(column.name for column in DECISIONS_TABLE.columns)
"""Columns of ``decisions``, in the order every statement here lists them."""


def plain_text(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """A text column with its dictionary encoding, if any, undone."""
    import pyarrow as pa

    return values.cast(pa.string()) if pa.types.is_dictionary(values.type) else values


def one_value(column: pa.ChunkedArray) -> tuple[bool, Any]:
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
