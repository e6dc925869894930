"""Batch jobs on the storage folder: the upload, durable job state, chunk files and the result.

The storage folder (a shared volume in Kubernetes) is the single source of truth for jobs, so an
API that restarts, or a second API replica, knows every job. One job is one folder,
`<root>/batch-jobs/<job id>/`:

    job.json            the `BatchJob` as submitted, then as the workers update it
    plan.json           what the workers need: format, columns, total rows; then the chunk size
    input.csv|parquet   the upload, as received
    chunks/00000.arrow  the input split into chunks (Arrow IPC) by the prepare step
    out/00000.arrow     a scored chunk; out/00000.json its counts, written after it
    log/00000.arrow     the chunk's decisions, until they are in the decision log;
    log/00000.json      then how many there were
    result.csv|parquet  every scored chunk in input order, once all are done

Every file is written to a temporary name and moved into place with `os.replace`, so a reader
sees a whole file or none. Chunk files are named by chunk index, so a chunk scored twice (a
redelivered task) replaces its own output instead of adding rows. Progress is derived from the
`out/*.json` files that exist, never counted up, so it cannot drift. Updates of `job.json` take a
lock file so that two workers never interleave a read and a write.

A chunk's decisions are kept on the volume, next to its output, before the chunk counts as done.
Writing them to the decision log is a task of its own, so the result can be ready before the log
has caught up (`BatchJob.decisions_recorded` says how far it has), and no decision is lost when a
worker dies or the database is down for a while.

The API calls `JobStore.receive` (and `serving.batch.client.submit`); the workers
(`serving.batch.tasks`) call the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from pydantic import BaseModel

from loanops.schema import FeatureSchema
from serving.batch.job import BatchJob, ChunkCounts, JobPlan, is_job_id, new_job_id
from serving.batch.upload import (
    BatchFileError,
    detect_format,
    inspect_file,
    open_csv,
    short_message,
    stream_to_file,
)

if TYPE_CHECKING:
    from loanops.settings import Settings

logger = logging.getLogger(__name__)

JOBS_FOLDER = "batch-jobs"
# Rows per row group of a Parquet result: fewer, larger groups write faster and read better.
_RESULT_ROW_GROUP = 262_144


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_model(path: Path, model: BaseModel) -> None:
    _write_atomic(path, model.model_dump_json(indent=2).encode())


def _chunk_name(index: int) -> str:
    return f"{index:05d}"


class JobStore:
    """Batch jobs kept as folders under `<root>/batch-jobs`; see the module docstring."""

    def __init__(self, root: Path) -> None:
        """Use `root` (the settings' `storage_path`) for job folders; nothing is created yet."""
        self.root = Path(root)
        self.jobs_root = self.root / JOBS_FOLDER
        self._terminal_rows: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> JobStore:
        """The store on the configured storage folder."""
        return cls(settings.storage_path)

    # --- paths

    def job_dir(self, job_id: str) -> Path:
        """The folder of a job.

        Raises:
            ValueError: when `job_id` is not a job id (so no path can escape the store).
        """
        if not is_job_id(job_id):
            raise ValueError(f"{job_id!r} is not a batch job id")
        return self.jobs_root / job_id

    def _input_chunk(self, job_id: str, index: int) -> Path:
        return self.job_dir(job_id) / "chunks" / f"{_chunk_name(index)}.arrow"

    def _output_chunk(self, job_id: str, index: int) -> Path:
        return self.job_dir(job_id) / "out" / f"{_chunk_name(index)}.arrow"

    def _output_counts(self, job_id: str, index: int) -> Path:
        return self.job_dir(job_id) / "out" / f"{_chunk_name(index)}.json"

    def _decisions(self, job_id: str, index: int) -> Path:
        return self.job_dir(job_id) / "log" / f"{_chunk_name(index)}.arrow"

    def _recorded(self, job_id: str, index: int) -> Path:
        return self.job_dir(job_id) / "log" / f"{_chunk_name(index)}.json"

    # --- the API's side

    async def receive(
        self,
        chunks: AsyncIterator[bytes],
        *,
        filename: str,
        content_type: str | None,
        max_bytes: int,
        model_name: str,
        model_version: str,
        schema: FeatureSchema,
    ) -> BatchJob:
        """Stream an upload to a new job folder, check it, and record the job as queued.

        The file goes to disk as it arrives, never whole into memory; it is then read a block at
        a time to check its columns and count its rows. On any failure, the client's included,
        the job folder is removed.

        Args:
            chunks: the request body.
            filename: name the client gave the file; its extension helps tell the format.
            content_type: the request's Content-Type, if any.
            max_bytes: largest upload accepted.
            model_name: registered model that will score the job.
            model_version: the version to pin the job to.
            schema: the input contract the file must meet.

        Returns:
            The job, `queued`; it is not on the queue until `submit`.

        Raises:
            UploadTooLarge: when the body exceeds `max_bytes`.
            BatchFileError: when the file is empty, not CSV or Parquet, unreadable, without data
                rows, or lacks feature columns; the message says which.
        """
        job_id = new_job_id()
        folder = self.job_dir(job_id)
        folder.mkdir(parents=True)
        try:
            upload = folder / "upload.part"
            size, head = await stream_to_file(chunks, upload, max_bytes)
            if size == 0:
                raise BatchFileError("the file is empty")
            input_format = detect_format(filename, content_type, head)
            path = folder / f"input.{input_format}"
            os.replace(upload, path)
            plan = await asyncio.to_thread(inspect_file, path, input_format, schema)
            job = BatchJob(
                id=job_id,
                status="queued",
                model_name=model_name,
                model_version=str(model_version),
                filename=filename,
                input_format=input_format,
                submitted_at=datetime.now(UTC),
                total_rows=plan.total_rows,
            )
            _write_model(folder / "plan.json", plan)
            _write_model(folder / "job.json", job)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        logger.info(
            "batch job %s: %s, %d rows, %s v%s",
            job_id,
            input_format,
            plan.total_rows,
            model_name,
            model_version,
        )
        return job

    def get(self, job_id: str) -> BatchJob | None:
        """The job with its progress now, or None when there is no such job (or id)."""
        if not is_job_id(job_id):
            return None
        try:
            job = BatchJob.model_validate_json((self.job_dir(job_id) / "job.json").read_bytes())
        except FileNotFoundError:
            return None
        if job.finished:
            if job.decisions_recorded < job.rows_valid:
                job = job.model_copy(update={"decisions_recorded": self._recorded_total(job_id)})
            return job
        counts = self._counts(job_id)
        return job.model_copy(
            update={
                "chunks_done": len(counts),
                "rows_done": sum(c.rows for c in counts),
                "rows_valid": sum(c.valid for c in counts),
                "rows_rejected": sum(c.rejected for c in counts),
                "decisions_recorded": self._recorded_total(job_id),
            }
        )

    def result_path(self, job_id: str) -> Path | None:
        """The scored file of a job that succeeded; None otherwise."""
        job = self.get(job_id)
        if job is None or job.status != "succeeded":
            return None
        path = self.job_dir(job_id) / f"result.{job.input_format}"
        return path if path.is_file() else None

    def delete(self, job_id: str) -> bool:
        """Remove a job and all its files; False when there was no such job."""
        if not is_job_id(job_id):
            return False
        folder = self.job_dir(job_id)
        if not folder.exists():
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True

    def job_ids(self) -> list[str]:
        """Every job's id, in no particular order."""
        try:
            entries = list(os.scandir(self.jobs_root))
        except FileNotFoundError:
            return []
        return [entry.name for entry in entries if is_job_id(entry.name) and entry.is_dir()]

    def rows_processed_total(self) -> int:
        """Rows scored or rejected over every job in the store, for a Prometheus counter.

        A finished job's count is read once and remembered; only running jobs are re-read.
        """
        total = 0
        for job_id in self.job_ids():
            known = self._terminal_rows.get(job_id)
            if known is not None:
                total += known
                continue
            job = self.get(job_id)
            if job is None:
                continue
            if job.finished:
                self._terminal_rows[job_id] = job.rows_done
            total += job.rows_done
        return total

    # --- the workers' side

    def plan(self, job_id: str) -> JobPlan:
        """The job's plan.

        Raises:
            FileNotFoundError: when the job is gone.
        """
        return JobPlan.model_validate_json((self.job_dir(job_id) / "plan.json").read_bytes())

    def update(self, job_id: str, **changes: Any) -> BatchJob | None:
        """Change fields of `job.json` under the job's lock; None when the job is gone.

        A finished job is never changed again, so a late duplicate task cannot undo an outcome.
        """
        folder = self.job_dir(job_id)
        try:
            with _locked(folder):
                path = folder / "job.json"
                job = BatchJob.model_validate_json(path.read_bytes())
                if job.finished:
                    return job
                job = job.model_validate({**job.model_dump(), **changes})
                _write_model(path, job)
                return job
        except FileNotFoundError:
            return None

    def mark_running(self, job_id: str) -> BatchJob | None:
        """Record that a worker has started the job."""
        return self.update(job_id, status="running")

    def mark_failed(self, job_id: str, error: str) -> BatchJob | None:
        """Record that the job cannot finish, and why."""
        counts = self._counts(job_id) if self.job_dir(job_id).exists() else []
        logger.warning("batch job %s failed: %s", job_id, error)
        return self.update(
            job_id,
            status="failed",
            error=error,
            finished_at=datetime.now(UTC),
            chunks_done=len(counts),
            rows_done=sum(c.rows for c in counts),
            rows_valid=sum(c.valid for c in counts),
            rows_rejected=sum(c.rejected for c in counts),
        )

    def split_input(self, job_id: str, chunk_rows: int) -> JobPlan:
        """Split the input into chunk files of `chunk_rows` rows; idempotent.

        A split that already finished is kept as it is (with its chunk size); one that was cut
        short is redone from the start, each chunk file replacing any earlier copy.

        Returns:
            The plan, with `chunk_rows` and `chunk_starts` set.

        Raises:
            BatchFileError: when the input cannot be read to the end, or holds another number of
                rows than counted on upload.
            FileNotFoundError: when the job is gone.
        """
        folder = self.job_dir(job_id)
        plan = self.plan(job_id)
        if plan.chunk_starts is not None:
            return plan
        chunk_dir = folder / "chunks"
        chunk_dir.mkdir(exist_ok=True)
        starts: list[int] = []
        rows = 0
        try:
            for table in _rechunk(self._input_batches(folder / plan.input_file, plan), chunk_rows):
                _write_table(chunk_dir / f"{_chunk_name(len(starts))}.arrow", table)
                starts.append(rows)
                rows += table.num_rows
        except (pa.ArrowException, OSError) as error:
            if isinstance(error, FileNotFoundError):
                raise
            raise BatchFileError(
                f"the file cannot be read to the end: {short_message(error)}"
            ) from error
        if rows != plan.total_rows:
            raise BatchFileError(
                f"the file holds {rows} rows on reading, but {plan.total_rows} were counted on "
                "upload"
            )
        plan = plan.model_copy(update={"chunk_rows": chunk_rows, "chunk_starts": starts})
        _write_model(folder / "plan.json", plan)
        self.update(job_id, chunks=len(starts))
        return plan

    @staticmethod
    def _input_batches(path: Path, plan: JobPlan) -> Iterator[pa.RecordBatch]:
        if plan.input_format == "parquet":
            yield from pq.ParquetFile(path).iter_batches(batch_size=65_536)
            return
        with contextlib.closing(open_csv(path, plan.columns)) as reader:
            yield from reader

    def read_chunk(self, job_id: str, index: int) -> pa.Table:
        """The input rows of one chunk."""
        with pa.memory_map(str(self._input_chunk(job_id, index))) as source:
            return ipc.open_file(source).read_all()

    def chunk_done(self, job_id: str, index: int) -> bool:
        """Whether a chunk's output is complete."""
        return self._output_counts(job_id, index).exists()

    def write_chunk_output(
        self,
        job_id: str,
        index: int,
        table: pa.Table,
        counts: ChunkCounts,
        decisions: pa.Table,
    ) -> None:
        """Store a scored chunk and its decisions, replacing any earlier copy of either.

        The counts go last: they mark the chunk done, and by then both files are in place.
        """
        folder = self.job_dir(job_id)
        (folder / "out").mkdir(exist_ok=True)
        (folder / "log").mkdir(exist_ok=True)
        if not self.decisions_recorded(job_id, index):
            _write_table(self._decisions(job_id, index), decisions)
        _write_table(self._output_chunk(job_id, index), table)
        _write_model(self._output_counts(job_id, index), counts)

    def read_decisions(self, job_id: str, index: int) -> pa.Table | None:
        """A chunk's decisions not yet in the decision log; None once they are."""
        if self.decisions_recorded(job_id, index):
            return None
        with pa.memory_map(str(self._decisions(job_id, index))) as source:
            return ipc.open_file(source).read_all()

    def decisions_recorded(self, job_id: str, index: int) -> bool:
        """Whether a chunk's decisions are in the decision log."""
        return self._recorded(job_id, index).exists()

    def mark_recorded(self, job_id: str, index: int, count: int) -> None:
        """Note that a chunk's `count` decisions are in the decision log, and drop their file."""
        _write_atomic(self._recorded(job_id, index), json.dumps({"decisions": count}).encode())
        self._decisions(job_id, index).unlink(missing_ok=True)
        job = self.get(job_id)
        if job is not None and job.finished and job.decisions_recorded >= job.rows_valid:
            with contextlib.suppress(FileNotFoundError), _locked(self.job_dir(job_id)):
                stored = BatchJob.model_validate_json(
                    (self.job_dir(job_id) / "job.json").read_bytes()
                )
                if stored.decisions_recorded < job.decisions_recorded:
                    stored = stored.model_copy(
                        update={"decisions_recorded": job.decisions_recorded}
                    )
                    _write_model(self.job_dir(job_id) / "job.json", stored)

    def pending_chunks(self, job_id: str) -> list[int]:
        """Chunks without complete output, in order."""
        plan = self.plan(job_id)
        if plan.chunk_starts is None:
            raise ValueError(f"batch job {job_id} is not split yet")
        return [i for i in range(len(plan.chunk_starts)) if not self.chunk_done(job_id, i)]

    def assemble(self, job_id: str) -> BatchJob | None:
        """Write the result from the scored chunks and mark the job succeeded; idempotent.

        Runs under the job's lock, so two workers that both saw the last chunk land write the
        result once. Chunk files are removed afterwards; the input and the result stay.

        Returns:
            The finished job; None when the job is gone.

        Raises:
            ValueError: when a chunk is missing or its rows are not the expected ones.
        """
        folder = self.job_dir(job_id)
        try:
            with _locked(folder):
                job = BatchJob.model_validate_json((folder / "job.json").read_bytes())
                if job.finished:
                    return job
                plan = self.plan(job_id)
                result = folder / f"result.{plan.input_format}"
                counts = self._counts(job_id)
                if plan.chunk_starts is None or len(counts) != len(plan.chunk_starts):
                    raise ValueError(f"batch job {job_id} has chunks still to score")
                if not result.exists():
                    self._write_result(job_id, plan, result)
                job = job.model_validate(
                    {
                        **job.model_dump(),
                        "status": "succeeded",
                        "finished_at": datetime.now(UTC),
                        "chunks": len(plan.chunk_starts),
                        "chunks_done": len(counts),
                        "rows_done": sum(c.rows for c in counts),
                        "rows_valid": sum(c.valid for c in counts),
                        "rows_rejected": sum(c.rejected for c in counts),
                        "decisions_recorded": self._recorded_total(job_id),
                    }
                )
                _write_model(folder / "job.json", job)
        except FileNotFoundError:
            return None
        shutil.rmtree(folder / "chunks", ignore_errors=True)
        for path in (folder / "out").glob("*.arrow"):
            path.unlink(missing_ok=True)
        logger.info(
            "batch job %s succeeded: %d rows, %d scored, %d rejected",
            job_id,
            job.rows_done,
            job.rows_valid,
            job.rows_rejected,
        )
        return job

    def _write_result(self, job_id: str, plan: JobPlan, result: Path) -> None:
        assert plan.chunk_starts is not None
        tmp = result.with_name(f".{result.name}.{uuid.uuid4().hex[:8]}.tmp")
        writer: pq.ParquetWriter | pacsv.CSVWriter | None = None
        pending: list[pa.Table] = []  # Parquet: chunks gathered into larger row groups
        pending_rows = 0
        expected_row = 0
        try:
            for index in range(len(plan.chunk_starts)):
                with pa.memory_map(str(self._output_chunk(job_id, index))) as source:
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

    def _recorded_total(self, job_id: str) -> int:
        total = 0
        for path in (self.job_dir(job_id) / "log").glob("*.json"):
            with contextlib.suppress(FileNotFoundError):
                total += int(json.loads(path.read_bytes())["decisions"])
        return total

    def _counts(self, job_id: str) -> list[ChunkCounts]:
        counts = []
        try:
            paths = sorted((self.job_dir(job_id) / "out").glob("*.json"))
        except FileNotFoundError:
            return []
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                counts.append(ChunkCounts.model_validate_json(path.read_bytes()))
        return counts


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


def _write_table(path: Path, table: pa.Table) -> None:
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


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold the job's lock file (an exclusive `flock`) for the block.

    Raises:
        FileNotFoundError: when the job folder is gone.
    """
    with (folder / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
