"""Receiving an upload: telling its format, streaming it to disk, and checking its columns.

The file goes to disk as it arrives, never whole into memory; it is then read a block at a time
to check its columns against the schema and count its rows. Every message of `BatchFileError`
is meant for the client who sent the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path, PurePath

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from loanops.schema import FeatureSchema
from serving.batch.job import InputFormat, JobPlan

OUTPUT_COLUMNS = ("row", "probability", "decision", "reason_codes", "rejection_reason")
"""Columns the result adds to every input column; an input may not use these names."""

_PARQUET_MAGIC = b"PAR1"
_PARQUET_SUFFIXES = frozenset({".parquet", ".pq", ".parq"})
_CSV_SUFFIXES = frozenset({".csv", ".txt"})
_PARQUET_TYPES = frozenset(
    {"application/vnd.apache.parquet", "application/x-parquet", "application/parquet"}
)
# Browsers on Windows send application/vnd.ms-excel for a .csv file.
_CSV_TYPES = frozenset(
    {"text/csv", "application/csv", "text/plain", "application/vnd.ms-excel", "text/x-csv"}
)
_SNIFF_BYTES = 4096
_WRITE_BUFFER = 1 << 20
# A CSV row may be at most this long; pyarrow reads in blocks and a row cannot straddle two.
_CSV_BLOCK_BYTES = 16 << 20
_HEADER_BLOCK_BYTES = 1 << 20
_MAX_MESSAGE = 300


class BatchFileError(ValueError):
    """The uploaded file cannot be a batch job: the message says why, for the client."""


class UploadTooLarge(ValueError):
    """The upload is larger than the configured limit."""


def detect_format(filename: str, content_type: str | None, head: bytes) -> InputFormat:
    """The upload's format, from its first bytes, its name and its declared type.

    Parquet's magic bytes win over everything else. A name or type that says Parquet without
    them, or names a format that is neither CSV nor Parquet, is refused; an unnamed, untyped
    upload is taken as CSV when its first bytes look like text.

    Raises:
        BatchFileError: when the format is not CSV or Parquet, or cannot be told.
    """
    suffix = PurePath(filename).suffix.lower()
    declared = (content_type or "").split(";")[0].strip().lower()
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    if suffix in _PARQUET_SUFFIXES or declared in _PARQUET_TYPES:
        raise BatchFileError(
            f"{filename!r} is not a Parquet file: it does not start with the Parquet magic "
            "bytes PAR1"
        )
    if suffix in _CSV_SUFFIXES or declared in _CSV_TYPES:
        return "csv"
    if suffix:
        raise BatchFileError(
            f"unsupported file type {suffix!r}: send a CSV (.csv) or Parquet (.parquet) file"
        )
    if declared and declared not in ("application/octet-stream", "binary/octet-stream"):
        raise BatchFileError(
            f"unsupported content type {declared!r}: send text/csv or "
            "application/vnd.apache.parquet"
        )
    if b"\x00" not in head[:_SNIFF_BYTES]:
        return "csv"
    raise BatchFileError(
        "cannot tell the file's format: send a CSV (.csv) or Parquet (.parquet) file"
    )


def short_message(error: BaseException) -> str:
    """An error's message on one line, cut to a length a client can read."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _csv_header(path: Path) -> list[str]:
    """The column names of a CSV upload, from its first line.

    Raises:
        BatchFileError: when the first line does not end within `_HEADER_BLOCK_BYTES`; pyarrow
            would only say that the file is empty.
    """
    with path.open("rb") as file:
        head = file.read(_HEADER_BLOCK_BYTES + 1)
    if len(head) > _HEADER_BLOCK_BYTES and not any(
        end in head[:_HEADER_BLOCK_BYTES] for end in (b"\n", b"\r")
    ):
        names = head[:_HEADER_BLOCK_BYTES].count(b",") + 1
        raise BatchFileError(
            f"the CSV header row is longer than {_HEADER_BLOCK_BYTES // 1024**2} MiB "
            f"({names:,} column names in its first MiB alone): the first line must name the "
            "file's columns, the model's features plus any to pass through"
        )
    reader = pacsv.open_csv(
        path, read_options=pacsv.ReadOptions(block_size=_HEADER_BLOCK_BYTES, use_threads=False)
    )
    try:
        return list(reader.schema.names)
    finally:
        reader.close()


def open_csv(path: Path, columns: list[str]) -> pacsv.CSVStreamingReader:
    """A streaming reader of a CSV upload that keeps every column as text.

    Text, so that one bad value in a numeric column is one rejected row rather than a failed
    read, and so that pass-through columns come back out exactly as they went in. Only an empty
    field is missing.
    """
    return pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(columns, pa.string()),
            strings_can_be_null=True,
            null_values=[""],
            quoted_strings_can_be_null=True,
        ),
    )


def inspect_file(path: Path, input_format: InputFormat, schema: FeatureSchema) -> JobPlan:
    """Check an upload's columns against the schema and count its rows, a block at a time.

    Raises:
        BatchFileError: when the file cannot be read, has no data rows, lacks a feature column,
            repeats a column or uses a column name the result needs.
    """
    if input_format == "parquet":
        try:
            parquet = pq.ParquetFile(path)
            columns = list(parquet.schema_arrow.names)
            total = int(parquet.metadata.num_rows)
        except (pa.ArrowException, OSError) as error:
            raise BatchFileError(
                f"the Parquet file cannot be read: {short_message(error)}"
            ) from error
    else:
        try:
            columns = _csv_header(path)
        except (pa.ArrowException, OSError) as error:
            raise BatchFileError(_csv_problem(error)) from error
    _check_columns(columns, schema)
    if input_format == "csv":
        total = 0
        try:
            with contextlib.closing(open_csv(path, columns)) as reader:
                for batch in reader:
                    total += batch.num_rows
        except (pa.ArrowException, OSError) as error:
            raise BatchFileError(_csv_problem(error)) from error
    if total == 0:
        raise BatchFileError("the file has a header but no data rows")
    return JobPlan(
        input_format=input_format,
        input_file=path.name,
        columns=columns,
        total_rows=total,
    )


def _csv_problem(error: BaseException) -> str:
    message = short_message(error)
    if "Empty CSV file" in message:
        return "the file is empty"
    if "invalid UTF8" in message or "invalid UTF-8" in message:
        return f"the CSV file is not UTF-8 text: {message}"
    return f"the CSV file cannot be read: {message}"


def _check_columns(columns: list[str], schema: FeatureSchema) -> None:
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise BatchFileError(f"column names must be unique; repeated: {', '.join(repeated)}")
    missing = [name for name in schema.feature_names if name not in columns]
    if missing:
        raise BatchFileError(
            f"missing feature columns: {', '.join(missing)} (the file has: "
            f"{_truncate(', '.join(columns))})"
        )
    reserved = [name for name in OUTPUT_COLUMNS if name in columns]
    if reserved:
        raise BatchFileError(
            f"column names {', '.join(reserved)} are reserved for the scored output; rename "
            "them in the file"
        )


def _truncate(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def stream_to_file(
    chunks: AsyncIterator[bytes], path: Path, max_bytes: int
) -> tuple[int, bytes]:
    """Write the body to `path` as it arrives; return its size and first bytes."""
    size = 0
    head = b""
    buffer = bytearray()
    with path.open("wb") as file:
        async for chunk in chunks:
            if not chunk:
                continue
            size += len(chunk)
            if size > max_bytes:
                raise UploadTooLarge(
                    f"the file is larger than the limit of {max_bytes} bytes "
                    f"({max_bytes / 1024**2:.0f} MiB)"
                )
            if len(head) < _SNIFF_BYTES:
                head += chunk[: _SNIFF_BYTES - len(head)]
            buffer += chunk
            if len(buffer) >= _WRITE_BUFFER:
                await asyncio.to_thread(file.write, bytes(buffer))
                buffer.clear()
        if buffer:
            await asyncio.to_thread(file.write, bytes(buffer))
        await asyncio.to_thread(os.fsync, file.fileno())
    return size, head
