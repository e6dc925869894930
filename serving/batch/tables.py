"""The batch-job tables, in the decision log's database: one row per job, one per chunk.

They have their own metadata and their own Alembic chain (`serving/batch/migrations/`, version
table `alembic_version_batch_jobs`), so they never meet the decision log's migrations.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from loanops.decisions.table import UTCDateTime


class BatchBase(DeclarativeBase):
    """Declarative base of the batch-job tables (the target metadata of their migrations)."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "pk": "pk_%(table_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        }
    )


class JobRow(BatchBase):
    """A job: what was submitted, the plan of its file, and how it ended."""

    __tablename__ = "batch_jobs"
    __table_args__ = (Index("ix_batch_jobs_status", "status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    model_name: Mapped[str] = mapped_column(String)
    model_version: Mapped[str] = mapped_column(String)
    filename: Mapped[str] = mapped_column(String)
    input_format: Mapped[str] = mapped_column(String(16))
    input_file: Mapped[str] = mapped_column(String)
    columns: Mapped[list[str]] = mapped_column(JSON)
    total_rows: Mapped[int] = mapped_column(Integer)
    chunk_rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Rows per chunk, once the input is split."""
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """When a prepare task was last sent for the job; the sweep resends one when it is old."""
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    challenger_version: Mapped[str | None] = mapped_column(String, nullable=True)
    """The version that shadows the job, when a challenger was attached at submission."""
    challenger_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Why the challenger stopped shadowing the job; its later chunks are the champion's alone."""


class ChunkRow(BatchBase):
    """One chunk of a job's input: its rows, whether it is scored, whether it is recorded."""

    __tablename__ = "batch_chunks"

    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("batch_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_row: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """When a task for the chunk was last sent (scoring, then recording)."""
    scored_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    valid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rejected: Mapped[int | None] = mapped_column(Integer, nullable=True)
    recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decisions: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Decisions of the chunk in the decision log, once they are all there."""
