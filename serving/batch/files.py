"""A job's files in storage: the upload, its chunks, their output and the result.

One job is one folder of keys, `<job id>/`, on the storage backend (`serving.batch.storage`):

    input.csv|parquet   the upload, as received
    chunks/00000.arrow  the input split into chunks (Arrow IPC) by the prepare step
    out/00000.arrow     a scored chunk
    log/00000.arrow     the chunk's decisions, until they are in the decision log
    result.csv|parquet  every scored chunk in input order, once all are done

The backend stores each object whole or not at all, so a reader sees a whole file or none, and
a chunk scored twice (a redelivered task) replaces its own output instead of adding rows. What
is done is kept in SQL (`serving.batch.store`), not here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from serving.batch.job import JobPlan, is_job_id
from serving.batch.storage import JobStorage
from serving.batch.upload import open_csv

# Rows per row group of a Parquet result: fewer, larger groups write faster and read better.
_RESULT_ROW_GROUP = 262_144


class JobFiles:
    """The jobs' objects on one storage backend, by job id."""

    def __init__(self, storage: JobStorage) -> None:
        self.storage = storage

    def folder(self, job_id: str) -> str:
        """The key prefix of a job's objects, `<job id>/`.

        Raises:
            ValueError: when `job_id` is not a job id (so no key can escape the job's folder).
        """
        if not is_job_id(job_id):
            raise ValueError(f"{job_id!r} is not a batch job id")
        return f"{job_id}/"

    def input(self, job_id: str, input_file: str) -> str:
        return self.folder(job_id) + input_file

    def input_chunk(self, job_id: str, index: int) -> str:
        return f"{self.folder(job_id)}chunks/{index:05d}.arrow"

    def output_chunk(self, job_id: str, index: int) -> str:
        return f"{self.folder(job_id)}out/{index:05d}.arrow"

    def decisions(self, job_id: str, index: int) -> str:
        return f"{self.folder(job_id)}log/{index:05d}.arrow"

    def result(self, job_id: str, input_format: str) -> str:
        return f"{self.folder(job_id)}result.{input_format}"

    def split(self, job_id: str, plan: JobPlan, chunk_rows: int) -> list[tuple[int, int]]:
        """Write the input as chunks of `chunk_rows` rows; return their first rows and sizes.

        Raises:
            pa.ArrowException, OSError: when the input cannot be read to the end.
        """
        sizes: list[tuple[int, int]] = []
        rows = 0
        with self.storage.local_file(self.input(job_id, plan.input_file)) as path:
            for table in _rechunk(_input_batches(path, plan), chunk_rows):
                self.storage.write_table(self.input_chunk(job_id, len(sizes)), table)
                sizes.append((rows, table.num_rows))
                rows += table.num_rows
        return sizes

    def write_output(
        self, job_id: str, index: int, table: pa.Table, decisions: pa.Table | None
    ) -> None:
        """Store a scored chunk (and its decisions, unless they are recorded already)."""
        if decisions is not None:
            self.storage.write_table(self.decisions(job_id, index), decisions)
        self.storage.write_table(self.output_chunk(job_id, index), table)

    def drop_chunks(self, job_id: str) -> None:
        """Remove the chunk files a finished job no longer needs; the input and result stay."""
        self.storage.delete_prefix(f"{self.folder(job_id)}chunks/")
        self.storage.delete_prefix(f"{self.folder(job_id)}out/")

    def delete(self, job_id: str) -> bool:
        """Remove a job's objects; False when there were none."""
        return self.storage.delete_prefix(self.folder(job_id))

    def write_result(self, job_id: str, plan: JobPlan) -> str:
        """Write the scored chunks, in order, as the result; return its key.

        The file is built in a local staging folder and stored whole once it is complete.

        Raises:
            ValueError: when a chunk holds other rows than expected.
        """
        assert plan.chunk_starts is not None
        key = self.result(job_id, plan.input_format)
        with self.storage.staging() as folder:
            path = folder / key.rsplit("/", 1)[-1]
            self._write_result_file(job_id, plan, path)
            self.storage.put_file(key, path)
        return key

    def _write_result_file(self, job_id: str, plan: JobPlan, path: Path) -> None:
        assert plan.chunk_starts is not None
        writer: pq.ParquetWriter | pacsv.CSVWriter | None = None
        pending: list[pa.Table] = []  # Parquet: chunks gathered into larger row groups
        pending_rows = 0
        expected_row = 0
        try:
            for index in range(len(plan.chunk_starts)):
                table = self.storage.read_table(self.output_chunk(job_id, index))
                rows = table.column("row")
                if len(rows) and (
                    rows[0].as_py() != expected_row
                    or rows[-1].as_py() != expected_row + len(rows) - 1
                ):
                    raise ValueError(f"chunk {index} of batch job {job_id} holds the wrong rows")
                expected_row += len(rows)
                if writer is None:
                    writer = (
                        pq.ParquetWriter(path, table.schema)
                        if plan.input_format == "parquet"
                        else pacsv.CSVWriter(
                            path,
                            table.schema,
                            write_options=pacsv.WriteOptions(quoting_style="needed"),
                        )
                    )
                if isinstance(writer, pacsv.CSVWriter):
                    writer.write_table(table)
                    continue
                pending.append(table)
                pending_rows += table.num_rows
                if pending_rows >= _RESULT_ROW_GROUP:
                    writer.write_table(pa.concat_tables(pending))
                    pending, pending_rows = [], 0
            if writer is not None:
                if pending:
                    writer.write_table(pa.concat_tables(pending))
                writer.close()
                writer = None
        finally:
            if writer is not None:
                writer.close()
        if expected_row != plan.total_rows:
            raise ValueError(
                f"batch job {job_id}: the chunks hold {expected_row} rows, not {plan.total_rows}"
            )


def _input_batches(path: Path, plan: JobPlan) -> Iterator[pa.RecordBatch]:
    if plan.input_format == "parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=65_536)
        return
    with contextlib.closing(open_csv(path, plan.columns)) as reader:
        yield from reader


def _rechunk(batches: Iterator[pa.RecordBatch], chunk_rows: int) -> Iterator[pa.Table]:
    """Tables of exactly `chunk_rows` rows (the last one shorter) from batches of any size."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    schema: pa.Schema | None = None
    for batch in batches:
        schema = batch.schema
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= chunk_rows:
            table = pa.Table.from_batches(pending, schema=schema)
            yield table.slice(0, chunk_rows)
            rest = table.slice(chunk_rows)
            pending = rest.to_batches()
            pending_rows = rest.num_rows
    if pending_rows:
        yield pa.Table.from_batches(pending, schema=schema)
