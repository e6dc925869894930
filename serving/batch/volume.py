"""A job's files on the storage volume: the upload, its chunks, their output and the result.

One job is one folder, `<root>/batch-jobs/<job id>/`:

    input.csv|parquet   the upload, as received
    chunks/00000.arrow  the input split into chunks (Arrow IPC) by the prepare step
    out/00000.arrow     a scored chunk
    log/00000.arrow     the chunk's decisions, until they are in the decision log
    result.csv|parquet  every scored chunk in input order, once all are done

Every file is written to a temporary name and moved into place with `os.replace`, so a reader
sees a whole file or none, and a chunk scored twice (a redelivered task) replaces its own output
instead of adding rows. What is done is kept in SQL (`serving.batch.store`), not here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from serving.batch.job import JobPlan, is_job_id
from serving.batch.upload import open_csv

JOBS_FOLDER = "batch-jobs"
# Rows per row group of a Parquet result: fewer, larger groups write faster and read better.
_RESULT_ROW_GROUP = 262_144


class JobFiles:
    """The job folders under `<root>/batch-jobs`."""

    def __init__(self, root: Path) -> None:
        self.jobs_root = Path(root) / JOBS_FOLDER

    def job_dir(self, job_id: str) -> Path:
        """The folder of a job.

        Raises:
            ValueError: when `job_id` is not a job id (so no path can escape the store).
        """
        if not is_job_id(job_id):
            raise ValueError(f"{job_id!r} is not a batch job id")
        return self.jobs_root / job_id

    def input_chunk(self, job_id: str, index: int) -> Path:
        return self.job_dir(job_id) / "chunks" / f"{index:05d}.arrow"

    def output_chunk(self, job_id: str, index: int) -> Path:
        return self.job_dir(job_id) / "out" / f"{index:05d}.arrow"

    def decisions(self, job_id: str, index: int) -> Path:
        return self.job_dir(job_id) / "log" / f"{index:05d}.arrow"

    def result(self, job_id: str, input_format: str) -> Path:
        return self.job_dir(job_id) / f"result.{input_format}"

    def split(self, job_id: str, plan: JobPlan, chunk_rows: int) -> list[tuple[int, int]]:
        """Write the input as chunk files of `chunk_rows` rows; return their first rows and sizes.

        Raises:
            pa.ArrowException, OSError: when the input cannot be read to the end.
        """
        chunk_dir = self.job_dir(job_id) / "chunks"
        chunk_dir.mkdir(exist_ok=True)
        sizes: list[tuple[int, int]] = []
        rows = 0
        batches = _input_batches(self.job_dir(job_id) / plan.input_file, plan)
        for table in _rechunk(batches, chunk_rows):
            write_table(self.input_chunk(job_id, len(sizes)), table)
            sizes.append((rows, table.num_rows))
            rows += table.num_rows
        return sizes

    def write_output(
        self, job_id: str, index: int, table: pa.Table, decisions: pa.Table | None
    ) -> None:
        """Store a scored chunk (and its decisions, unless they are recorded already)."""
        folder = self.job_dir(job_id)
        (folder / "out").mkdir(exist_ok=True)
        (folder / "log").mkdir(exist_ok=True)
        if decisions is not None:
            write_table(self.decisions(job_id, index), decisions)
        write_table(self.output_chunk(job_id, index), table)

    def drop_chunks(self, job_id: str) -> None:
        """Remove the chunk files a finished job no longer needs; the input and result stay."""
        folder = self.job_dir(job_id)
        shutil.rmtree(folder / "chunks", ignore_errors=True)
        for path in (folder / "out").glob("*.arrow"):
            path.unlink(missing_ok=True)

    def delete(self, job_id: str) -> bool:
        """Remove a job's folder; False when there was none."""
        folder = self.job_dir(job_id)
        if not folder.exists():
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True

    def write_result(self, job_id: str, plan: JobPlan) -> Path:
        """Write the scored chunks, in order, as the result file; return its path.

        Raises:
            ValueError: when a chunk holds other rows than expected.
        """
        assert plan.chunk_starts is not None
        result = self.result(job_id, plan.input_format)
        tmp = result.with_name(f".{result.name}.{uuid.uuid4().hex[:8]}.tmp")
        writer: pq.ParquetWriter | pacsv.CSVWriter | None = None
        pending: list[pa.Table] = []  # Parquet: chunks gathered into larger row groups
        pending_rows = 0
        expected_row = 0
        try:
            for index in range(len(plan.chunk_starts)):
                with pa.memory_map(str(self.output_chunk(job_id, index))) as source:
                    table = ipc.open_file(source).read_all()
                rows = table.column("row")
                if len(rows) and (
                    rows[0].as_py() != expected_row
                    or rows[-1].as_py() != expected_row + len(rows) - 1
                ):
                    raise ValueError(f"chunk {index} of batch job {job_id} holds the wrong rows")
                expected_row += len(rows)
                if writer is None:
                    writer = (
                        pq.ParquetWriter(tmp, table.schema)
                        if plan.input_format == "parquet"
                        else pacsv.CSVWriter(
                            tmp,
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
            if expected_row != plan.total_rows:
                raise ValueError(
                    f"batch job {job_id}: the chunks hold {expected_row} rows, not "
                    f"{plan.total_rows}"
                )
            os.replace(tmp, result)
        finally:
            if writer is not None:
                writer.close()
            tmp.unlink(missing_ok=True)
        return result


def read_table(path: Path) -> pa.Table:
    """An Arrow IPC file, whole."""
    with pa.memory_map(str(path)) as source:
        return ipc.open_file(source).read_all()


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


def write_table(path: Path, table: pa.Table) -> None:
    """Write an Arrow IPC file atomically."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    # Uncompressed: these files live minutes, and compression costs more CPU than it saves I/O.
    options = ipc.IpcWriteOptions(compression=None)
    try:
        with (
            pa.OSFile(str(tmp), "wb") as sink,
            ipc.new_file(sink, table.schema, options=options) as writer,
        ):
            writer.write_table(table)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
