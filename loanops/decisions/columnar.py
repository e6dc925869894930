"""Stored segments (`loanops.decisions.segments`) as the DataFrame `read_decisions` returns.

Typed columns go from Arrow to NumPy without a Python object per value; text goes through
dictionaries, so each distinct string is one shared object. Only an input key whose logged
values mix types is built value by value, so that a wrong value is read as it was logged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from loanops.decisions.segments import JSON_PREFIX, PAIRED_FIELDS, TYPED_PREFIX, with_paired

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

Kind = Literal["number", "text"]
_COLLISION_PREFIX = "input_"


def segment_frame(
    segments: Iterable[tuple[str, str, pa.Table]],
    columns: Sequence[str],
    inputs: Mapping[str, Kind] | None,
) -> pd.DataFrame:
    """The rows of the segments as one frame, ordered by ``decided_at`` then ``request_id``.

    Args:
        segments: (model name, model version, rows) of each segment.
        columns: The leading columns, named as in `loanops.decisions.read.META_COLUMNS`.
        inputs: The input keys to read and their kinds, or None for every key there is, in
            first-seen order.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = list(segments)
    tables = [table for _, _, table in parts]
    if any(name in PAIRED_FIELDS for name in columns):
        tables = [with_paired(table) for table in tables]
    sizes = [table.num_rows for table in tables]
    data: dict[str, pd.Series] = {}
    for name in columns:
        if name in ("model_name", "model_version"):
            data[name] = _constant_per_segment(
                [model if name == "model_name" else version for model, version, _ in parts],
                sizes,
            )
        elif name in ("reasons", "challenger_reasons"):
            data[name] = _reasons(tables, name)
        else:
            data[name] = _meta(name, [table[name] for table in tables])
    keys = list(inputs) if inputs is not None else _input_keys(tables)
    for key in keys:
        kind = None if inputs is None else inputs[key]
        label = f"{_COLLISION_PREFIX}{key}" if key in columns else key
        data[label] = _input(key, kind, tables, sizes)
    frame = pd.DataFrame(data, index=pd.RangeIndex(sum(sizes)))
    if len(tables) <= 1 and "request_id" in columns:
        return frame  # a segment is stored in order
    times = (
        np.concatenate([table["decided_at"].cast(pa.int64()).to_numpy() for table in tables])
        if tables
        else np.empty(0, dtype=np.int64)
    )
    if len(times) < 2 or bool(np.all(times[1:] > times[:-1])):
        return frame
    keys_table = pa.table(
        {
            "t": times,
            "r": _joined([table["request_id"] for table in tables], pa.string()),
        }
    )
    order = pc.sort_indices(keys_table, [("t", "ascending"), ("r", "ascending")]).to_numpy()
    return frame.iloc[order].reset_index(drop=True)


def _constant_per_segment(values: list[str], sizes: list[int]) -> pd.Series:
    import numpy as np
    import pandas as pd

    categories = list(dict.fromkeys(values))
    codes = (
        np.repeat(np.array([categories.index(v) for v in values], dtype=np.int32), sizes)
        if values
        else np.empty(0, dtype=np.int32)
    )
    return pd.Series(pd.Categorical.from_codes(codes, categories=categories)).astype(object)


def _meta(name: str, arrays: list[pa.ChunkedArray]) -> pd.Series:
    import pandas as pd
    import pyarrow as pa

    if name == "decided_at":
        if not arrays:
            return pd.Series([], dtype="datetime64[ns, UTC]")
        joined = _joined(arrays, arrays[0].type)
        return pd.Series(joined.to_pandas()).astype("datetime64[ns, UTC]")
    if name in ("threshold", "probability", "challenger_threshold", "challenger_probability"):
        if not arrays:
            return pd.Series([], dtype="float64")
        return pd.Series(_joined(arrays, pa.float64()).to_pandas()).astype("float64")
    if name == "request_id":
        if not arrays:
            return pd.Series([], dtype=object)
        return pd.Series(_joined(arrays, pa.string()).to_pandas())
    return _text([array.cast(pa.string()) for array in arrays])


def _text(arrays: list[pa.ChunkedArray]) -> pd.Series:
    """Text as objects, one shared object per distinct string, None where missing."""
    import pandas as pd
    import pyarrow as pa

    if not arrays:
        return pd.Series([], dtype=object)
    joined = _joined(arrays, pa.string())
    categorical = pd.Series(joined.dictionary_encode().to_pandas()).astype(object)
    return categorical.where(categorical.notna(), None)


def _reasons(tables: list[pa.Table], name: str) -> pd.Series:
    import orjson
    import pandas as pd

    values = [
        None if text is None else orjson.loads(text)
        for table in tables
        for text in table[name].to_pylist()
    ]
    return pd.Series(values, dtype=object)


def _input_keys(tables: list[pa.Table]) -> list[str]:
    keys: dict[str, None] = {}
    for table in tables:
        for name in table.column_names:
            for prefix in (TYPED_PREFIX, JSON_PREFIX):
                if name.startswith(prefix):
                    keys[name[len(prefix) :]] = None
    return list(keys)


def _input(key: str, kind: Kind | None, tables: list[pa.Table], sizes: list[int]) -> pd.Series:
    """One input key over every segment: NaN or None where a segment lacks it."""
    import pandas as pd
    import pyarrow as pa

    typed = [
        table[TYPED_PREFIX + key] if TYPED_PREFIX + key in table.column_names else None
        for table in tables
    ]
    mixed = any(JSON_PREFIX + key in table.column_names for table in tables)
    types = {array.type for array in typed if array is not None and array.null_count < len(array)}
    numeric = all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types)
    textual = all(pa.types.is_string(t) or pa.types.is_large_string(t) for t in types)
    if not mixed and numeric and (types or kind == "number"):
        target = pa.float64() if kind == "number" or not types else _widest(types)
        arrays = [
            pa.nulls(size, target) if array is None else array.cast(target)
            for array, size in zip(typed, sizes, strict=True)
        ]
        if not arrays:
            return pd.Series([], dtype="float64")
        return pd.Series(_joined(arrays, target).to_pandas())
    if not mixed and textual and (types or kind == "text"):
        arrays = [
            pa.nulls(size, pa.string()) if array is None else array.cast(pa.string())
            for array, size in zip(typed, sizes, strict=True)
        ]
        return _text(arrays)
    # Mixed types, or booleans, or nothing but nulls: value by value, as logged.
    values: list[Any] = []
    for table, array, size in zip(tables, typed, sizes, strict=True):
        if array is not None:
            values.extend(array.to_pylist())
        elif JSON_PREFIX + key in table.column_names:
            import orjson

            values.extend(
                None if text is None else orjson.loads(text)
                for text in table[JSON_PREFIX + key].to_pylist()
            )
        else:
            values.extend([None] * size)
    if kind == "number":
        raw = pd.Series(values, dtype=object)
        try:
            return pd.to_numeric(raw).astype("float64")
        except (ValueError, TypeError):
            return raw  # a value that is not a number: kept as logged
    if kind is None and values and not all(v is None for v in values):
        return pd.DataFrame({"v": values})["v"]  # pandas' own inference, as from_records does
    return pd.Series(values, dtype=object)


def _joined(arrays: Sequence[pa.Array | pa.ChunkedArray], kind: pa.DataType) -> pa.ChunkedArray:
    """One chunked array of the arrays' chunks (given whole, Arrow would convert value by value)."""
    import pyarrow as pa

    chunks: list[pa.Array] = []
    for array in arrays:
        chunks.extend(array.chunks if isinstance(array, pa.ChunkedArray) else [array])
    return pa.chunked_array(chunks, type=kind)


def _widest(types: set[pa.DataType]) -> pa.DataType:
    import pyarrow as pa

    return pa.int64() if all(pa.types.is_integer(t) for t in types) else pa.float64()
