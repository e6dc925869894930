"""Batch jobs: their state in SQL, their files on the storage volume.

The state of every job and of each of its chunks is a row in the decision log's database
(`serving.batch.tables`), changed in transactions: an API that restarts, a second API replica and
workers on any node all see the same jobs, and no step needs a lock shared between nodes. The
files (the upload, chunks, scored chunks, the result) are objects in storage, a local folder or
a bucket (`serving.batch.files`, `serving.batch.storage`).

A chunk counts as scored once its row says so, which happens after its output and decisions are
stored; its decisions count as recorded once they are in the decision log. Progress is
summed from the chunk rows, never counted up, so a chunk scored twice (a redelivered task)
cannot make it drift. A finished job is never changed again, except that a succeeded job whose
decisions cannot be recorded fails.

Every row also says when a task for it was last sent, which the sweep (`serving.batch.sweep`)
reads to find lost tasks.

The API calls `receive` (and `serving.batch.client.submit`); the workers
(`serving.batch.tasks`) call the rest.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlalchemy import Engine, Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from loanops.schema import FeatureSchema
from serving.batch.files import JobFiles
from serving.batch.job import BatchJob, ChunkCounts, JobPlan, is_job_id, new_job_id
from serving.batch.storage import JobStorage, StorageUnavailable, storage_for
from serving.batch.tables import ChunkRow, JobRow
from serving.batch.upload import (
    BatchFileError,
    detect_format,
    inspect_file,
    short_message,
    stream_to_file,
)

if TYPE_CHECKING:
    from loanops.settings import Settings

logger = logging.getLogger(__name__)

UNFINISHED = ("queued", "running")
"""The statuses of a job still to finish."""


def _now() -> datetime:
    return datetime.now(UTC)


class JobStore:
    """Batch jobs: rows in the decision log's database, objects in storage."""

    def __init__(self, storage: JobStorage, engine: Engine) -> None:
        """Keep job files in `storage` and state in `engine`.

        The batch-job tables must exist (`serving.batch.database.migrate`).
        """
        self.storage = storage
        self.files = JobFiles(storage)
        self.engine = engine
        self._rows_processed = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> JobStore:
        """The store on the configured storage backend and database, its tables migrated."""
        from serving.batch.database import engine_for

        return cls(storage_for(settings), engine_for(settings))

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
        challenger_version: str | None = None,
    ) -> BatchJob:
        """Stream an upload to storage as a new job, check it, and record the job as queued.

        The file goes to a local staging folder as it arrives, never whole into memory; it is
        then read a block at a time to check its columns and count its rows, and stored. On any
        failure, the client's included, the job's files are removed and no job is recorded.

        Args:
            chunks: the request body.
            filename: name the client gave the file; its extension helps tell the format.
            content_type: the request's Content-Type, if any.
            max_bytes: largest upload accepted.
            model_name: registered model that will score the job.
            model_version: the version to pin the job to.
            schema: the input contract the file must meet.
            challenger_version: a version of the same model to shadow the job with: its
                scores go to the decision log beside the champion's, never into the result.

        Returns:
            The job, `queued`; it is not on the queue until `submit`.

        Raises:
            UploadTooLarge: when the body exceeds `max_bytes`.
            StorageUnavailable: when the storage backend cannot take the file.
            BatchFileError: when the file is empty, not CSV or Parquet, unreadable, without data
                rows, or lacks feature columns; the message says which.
        """
        job_id = new_job_id()
        try:
            with self.storage.staging() as folder:
                upload = folder / "upload.part"
                size, head = await stream_to_file(chunks, upload, max_bytes)
                if size == 0:
                    raise BatchFileError("the file is empty")
                input_format = detect_format(filename, content_type, head)
                path = folder / f"input.{input_format}"
                os.replace(upload, path)
                plan = await asyncio.to_thread(inspect_file, path, input_format, schema)
                await asyncio.to_thread(self._store_input, job_id, plan.input_file, path)
            now = _now()
            row: dict[str, object] = {
                "id": job_id,
                "status": "queued",
                "model_name": model_name,
                "model_version": str(model_version),
                "challenger_version": challenger_version,
                "filename": filename,
                "input_format": input_format,
                "input_file": plan.input_file,
                "columns": plan.columns,
                "total_rows": plan.total_rows,
                "submitted_at": now,
                "sent_at": now,
            }
            await asyncio.to_thread(self._insert_job, row)
        except BaseException:
            # In line, not in a thread: a cancelled request must still leave nothing behind.
            self._remove_files(job_id)
            raise
        logger.info(
            "batch job %s: %s, %d rows, %s v%s",
            job_id,
            input_format,
            plan.total_rows,
            model_name,
            model_version,
        )
        job = self.get(job_id)
        assert job is not None
        return job

    def _remove_files(self, job_id: str) -> None:
        """Remove what a refused upload may have stored, without hiding why it was refused."""
        try:
            self.files.delete(job_id)
        except Exception as error:  # the storage is down too: nothing of the job is recorded
            logger.warning(
                "batch job %s: its files cannot be removed: %s", job_id, short_message(error)
            )

    def _store_input(self, job_id: str, input_file: str, path: Path) -> None:
        try:
            self.storage.put_file(self.files.input(job_id, input_file), path)
        except Exception as error:  # the backend's own: an OSError, or botocore's errors
            raise StorageUnavailable(
                f"the batch-job storage ({self.storage.describe()}) cannot take the file: "
                f"{short_message(error)}"
            ) from error

    def _insert_job(self, row: dict[str, object]) -> None:
        with self.engine.begin() as connection:
            connection.execute(insert(JobRow), row)

    def get(self, job_id: str) -> BatchJob | None:
        """The job with its progress now, or None when there is no such job (or id)."""
        if not is_job_id(job_id):
            return None
        with self.engine.connect() as connection:
            job = connection.execute(select(JobRow).where(JobRow.id == job_id)).one_or_none()
            if job is None:
                return None
            scored = ChunkRow.scored_at.is_not(None)
            progress = connection.execute(
                select(
                    func.count(),
                    func.count(ChunkRow.scored_at),
                    func.coalesce(func.sum(ChunkRow.rows).filter(scored), 0),
                    func.coalesce(func.sum(ChunkRow.valid), 0),
                    func.coalesce(func.sum(ChunkRow.rejected), 0),
                    func.coalesce(func.sum(ChunkRow.decisions), 0),
                ).where(ChunkRow.job_id == job_id)
            ).one()
        chunks, chunks_done, rows_done, valid, rejected, recorded = (int(v) for v in progress)
        return BatchJob(
            job_id=job.id,
            status=job.status,
            model_name=job.model_name,
            model_version=job.model_version,
            filename=job.filename,
            input_format=job.input_format,
            submitted_at=job.submitted_at,
            finished_at=job.finished_at,
            total_rows=job.total_rows,
            rows_done=rows_done,
            rows_valid=valid,
            rows_rejected=rejected,
            chunks=chunks,
            chunks_done=chunks_done,
            decisions_recorded=recorded,
            decisions_pending=max(valid - recorded, 0),
            error=job.error,
            challenger_version=job.challenger_version,
            challenger_error=job.challenger_error,
        )

    def result_key(self, job_id: str) -> str | None:
        """The storage key of the scored file of a job that succeeded; None otherwise."""
        job = self.get(job_id)
        if job is None or job.status != "succeeded":
            return None
        key = self.files.result(job_id, job.input_format)
        return key if self.storage.exists(key) else None

    def delete(self, job_id: str) -> bool:
        """Remove a job, its rows and all its files; False when there was no such job."""
        if not is_job_id(job_id):
            return False
        with self.engine.begin() as connection:
            connection.execute(delete(ChunkRow).where(ChunkRow.job_id == job_id))
            deleted = connection.execute(delete(JobRow).where(JobRow.id == job_id)).rowcount
        return bool(self.files.delete(job_id) or deleted)

    def job_ids(self) -> list[str]:
        """Every job's id, in no particular order."""
        with self.engine.connect() as connection:
            return list(connection.execute(select(JobRow.id)).scalars())

    def rows_processed_total(self) -> int:
        """Rows scored or rejected over every job in the store, for a Prometheus counter.

        While the database cannot be reached, the last figure read.
        """
        query = select(func.coalesce(func.sum(ChunkRow.rows), 0)).where(
            ChunkRow.scored_at.is_not(None)
        )
        try:
            with self.engine.connect() as connection:
                self._rows_processed = max(self._rows_processed, int(connection.scalar(query) or 0))
        except SQLAlchemyError as error:
            logger.warning("batch rows processed: the database is unavailable: %s", error)
        return self._rows_processed

    def plan(self, job_id: str) -> JobPlan:
        """The job's plan.

        Raises:
            FileNotFoundError: when the job is gone.
        """
        with self.engine.connect() as connection:
            job = connection.execute(select(JobRow).where(JobRow.id == job_id)).one_or_none()
            starts = connection.execute(
                select(ChunkRow.first_row).where(ChunkRow.job_id == job_id).order_by(ChunkRow.chunk)
            ).scalars()
            chunk_starts = list(starts)
        if job is None:
            raise FileNotFoundError(f"batch job {job_id} is gone")
        return JobPlan(
            input_format=job.input_format,
            input_file=job.input_file,
            columns=job.columns,
            total_rows=job.total_rows,
            chunk_rows=job.chunk_rows,
            chunk_starts=chunk_starts if job.chunk_rows is not None else None,
        )

    def mark_running(self, job_id: str) -> BatchJob | None:
        """Record that a worker has started the job."""
        self._set_status(job_id, "running", UNFINISHED)
        return self.get(job_id)

    def mark_failed(self, job_id: str, error: str) -> BatchJob | None:
        """Record that the job cannot finish, and why; a finished job stays as it is."""
        if self._set_status(job_id, "failed", UNFINISHED, error=error, finished_at=_now()):
            logger.warning("batch job %s failed: %s", job_id, error)
        return self.get(job_id)

    def mark_unrecorded(self, job_id: str, error: str) -> BatchJob | None:
        """Fail a job whose result is ready but whose decisions cannot be recorded."""
        if self._set_status(job_id, "failed", ("succeeded",), error=error):
            logger.error("batch job %s failed after its result: %s", job_id, error)
        return self.get(job_id)

    def mark_challenger_failed(self, job_id: str, error: str) -> None:
        """Stop shadowing the job: its chunks not yet recorded are logged as the champion's
        alone. The first reason is kept."""
        with self.engine.begin() as connection:
            connection.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.challenger_error.is_(None))
                .values(challenger_error=error)
            )

    def _set_status(
        self, job_id: str, status: str, allowed: Iterable[str], **changes: object
    ) -> bool:
        if not is_job_id(job_id):
            return False
        with self.engine.begin() as connection:
            changed = connection.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status.in_(tuple(allowed)))
                .values(status=status, **changes)
            ).rowcount
        return bool(changed)

    def split_input(self, job_id: str, chunk_rows: int) -> JobPlan:
        """Split the input into chunk files of `chunk_rows` rows and record them; idempotent.

        A split that already finished is kept as it is (with its chunk size); one that was cut
        short is redone from the start, each chunk file replacing any earlier copy.

        Returns:
            The plan, with `chunk_rows` and `chunk_starts` set.

        Raises:
            BatchFileError: when the input cannot be read to the end, or holds another number of
                rows than counted on upload.
            FileNotFoundError: when the job is gone.
        """
        plan = self.plan(job_id)
        if plan.chunk_starts is not None:
            return plan
        try:
            sizes = self.files.split(job_id, plan, chunk_rows)
        except (pa.ArrowException, OSError) as error:
            if isinstance(error, FileNotFoundError):
                raise
            raise BatchFileError(
                f"the file cannot be read to the end: {short_message(error)}"
            ) from error
        rows = sum(size for _, size in sizes)
        if rows != plan.total_rows:
            raise BatchFileError(
                f"the file holds {rows} rows on reading, but {plan.total_rows} were counted on "
                "upload"
            )
        now = _now()
        chunks = [
            {"job_id": job_id, "chunk": i, "first_row": start, "rows": size, "sent_at": now}
            for i, (start, size) in enumerate(sizes)
        ]
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(ChunkRow), chunks)
                connection.execute(
                    update(JobRow).where(JobRow.id == job_id).values(chunk_rows=chunk_rows)
                )
        except IntegrityError:
            logger.info("batch job %s was split by another worker meanwhile", job_id)
        return self.plan(job_id)

    def read_chunk(self, job_id: str, index: int) -> pa.Table:
        """The input rows of one chunk."""
        return self.storage.read_table(self.files.input_chunk(job_id, index))

    def _chunk(self, job_id: str, index: int) -> Row[Any] | None:
        """The chunk's row (its columns by name), or None."""
        with self.engine.connect() as connection:
            return connection.execute(
                select(ChunkRow).where(ChunkRow.job_id == job_id, ChunkRow.chunk == index)
            ).one_or_none()

    def chunk_done(self, job_id: str, index: int) -> bool:
        """Whether a chunk's output is complete."""
        chunk = self._chunk(job_id, index)
        return chunk is not None and chunk.scored_at is not None

    def write_chunk_output(
        self,
        job_id: str,
        index: int,
        table: pa.Table,
        counts: ChunkCounts,
        decisions: pa.Table,
    ) -> None:
        """Store a scored chunk and its decisions, replacing any earlier copy of either.

        The row goes last: it marks the chunk scored, and by then both files are in place.
        """
        recorded = self.decisions_recorded(job_id, index)
        self.files.write_output(job_id, index, table, None if recorded else decisions)
        with self.engine.begin() as connection:
            connection.execute(
                update(ChunkRow)
                .where(ChunkRow.job_id == job_id, ChunkRow.chunk == index)
                .values(
                    scored_at=_now(), valid=counts.valid, rejected=counts.rejected, sent_at=_now()
                )
            )

    def read_decisions(self, job_id: str, index: int) -> pa.Table | None:
        """A chunk's decisions not yet in the decision log; None once they are."""
        if self.decisions_recorded(job_id, index):
            return None
        return self.storage.read_table(self.files.decisions(job_id, index))

    def decisions_recorded(self, job_id: str, index: int) -> bool:
        """Whether a chunk's decisions are in the decision log."""
        chunk = self._chunk(job_id, index)
        return chunk is not None and chunk.recorded_at is not None

    def mark_recorded(self, job_id: str, index: int, count: int) -> None:
        """Note that a chunk's `count` decisions are in the decision log, and drop their file."""
        with self.engine.begin() as connection:
            connection.execute(
                update(ChunkRow)
                .where(ChunkRow.job_id == job_id, ChunkRow.chunk == index)
                .values(recorded_at=_now(), decisions=count)
            )
        self.storage.delete(self.files.decisions(job_id, index))

    def pending_chunks(self, job_id: str) -> list[int]:
        """Chunks without complete output, in order."""
        with self.engine.connect() as connection:
            split = connection.scalar(select(JobRow.chunk_rows).where(JobRow.id == job_id))
            pending = connection.execute(
                select(ChunkRow.chunk)
                .where(ChunkRow.job_id == job_id, ChunkRow.scored_at.is_(None))
                .order_by(ChunkRow.chunk)
            ).scalars()
            indexes = list(pending)
        if split is None:
            raise ValueError(f"batch job {job_id} is not split yet")
        return indexes

    def mark_sent(self, job_id: str, indexes: Iterable[int] = ()) -> None:
        """Note that tasks were just sent for the job (no indexes: prepare) or these chunks."""
        chosen = list(indexes)
        with self.engine.begin() as connection:
            if chosen:
                connection.execute(
                    update(ChunkRow)
                    .where(ChunkRow.job_id == job_id, ChunkRow.chunk.in_(chosen))
                    .values(sent_at=_now())
                )
            else:
                connection.execute(update(JobRow).where(JobRow.id == job_id).values(sent_at=_now()))

    def assemble(self, job_id: str) -> BatchJob | None:
        """Write the result from the scored chunks and mark the job succeeded; idempotent.

        Two workers that both saw the last chunk land may both write the result: each writes
        a whole object (the storage never shows half of one), and only one of them moves the
        job to `succeeded`. Chunk files are removed afterwards.

        Returns:
            The finished job; None when the job is gone.

        Raises:
            ValueError: when a chunk is missing or its rows are not the expected ones.
        """
        job = self.get(job_id)
        if job is None or job.finished:
            return job
        plan = self.plan(job_id)
        if plan.chunk_starts is None or job.chunks_done != len(plan.chunk_starts):
            raise ValueError(f"batch job {job_id} has chunks still to score")
        if not self.storage.exists(self.files.result(job_id, plan.input_format)):
            self.files.write_result(job_id, plan)
        if self._set_status(job_id, "succeeded", UNFINISHED, finished_at=_now()):
            logger.info(
                "batch job %s succeeded: %d rows, %d scored, %d rejected",
                job_id,
                job.rows_done,
                job.rows_valid,
                job.rows_rejected,
            )
        self.files.drop_chunks(job_id)
        return self.get(job_id)
