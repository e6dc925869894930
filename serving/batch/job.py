"""A batch job's record, its plan and a scored chunk's counts: what the API and workers share."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["queued", "running", "succeeded", "failed"]
InputFormat = Literal["csv", "parquet"]

TERMINAL: frozenset[str] = frozenset({"succeeded", "failed"})

_JOB_ID = re.compile(r"[0-9a-f]{32}")


class BatchJob(BaseModel):
    """A batch-scoring job: what was submitted, how far it has got, and how it ended."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": "5f0c6d9e2b8a4c1f9e3d7a6b5c4d3e2f",
                    "status": "running",
                    "model_name": "loan-default",
                    "model_version": "3",
                    "filename": "applications-2026-11.csv",
                    "input_format": "csv",
                    "submitted_at": "2026-11-26T09:30:00Z",
                    "finished_at": None,
                    "total_rows": 120000,
                    "rows_done": 50000,
                    "rows_valid": 49870,
                    "rows_rejected": 130,
                    "chunks": 3,
                    "chunks_done": 1,
                    "decisions_recorded": 40000,
                    "decisions_pending": 9870,
                    "error": None,
                    "challenger_version": "4",
                    "challenger_error": None,
                }
            ]
        }
    )

    job_id: str = Field(description="Job id: 32 hexadecimal characters.")
    status: JobStatus = Field(
        description="`queued` until a worker picks the job up, then `running`; `succeeded` once "
        "the result file is ready, `failed` when the job cannot finish (see `error`)."
    )
    model_name: str = Field(description="Registered model that scores the job.")
    model_version: str = Field(
        description="Version that scores every row: the one serving when the job was submitted, "
        "even if production moves while the job runs."
    )
    filename: str = Field(description="Name the file was uploaded under.")
    input_format: InputFormat = Field(description="Format of the upload, and of the result.")
    submitted_at: datetime = Field(description="When the upload was accepted (UTC).")
    finished_at: datetime | None = Field(
        default=None, description="When the job succeeded or failed (UTC); null while it runs."
    )
    total_rows: int = Field(ge=0, description="Data rows in the file (the header excluded).")
    rows_done: int = Field(default=0, ge=0, description="Rows finished so far, scored or rejected.")
    rows_valid: int = Field(default=0, ge=0, description="Rows scored so far.")
    rows_rejected: int = Field(
        default=0,
        ge=0,
        description="Rows refused so far; each carries its reason in the result's "
        "`rejection_reason` column.",
    )
    chunks: int = Field(
        default=0, ge=0, description="Chunks the file was split into; 0 until a worker splits it."
    )
    chunks_done: int = Field(default=0, ge=0, description="Chunks scored so far.")
    decisions_recorded: int = Field(
        default=0,
        ge=0,
        description="Scored rows whose decision is in the decision log. Recording runs behind "
        "scoring, so it may trail `rows_valid` for a while after the result is ready.",
    )
    decisions_pending: int = Field(
        default=0,
        ge=0,
        description="Scored rows whose decision is not in the decision log yet; the workers keep "
        "recording them, and the job fails (see `error`) if they cannot.",
    )
    error: str | None = Field(default=None, description="Why the job failed; null otherwise.")
    challenger_version: str | None = Field(
        default=None,
        description="Version that shadows the job: the challenger attached when the job was "
        "submitted. Its scores, decisions and reasons go to the decision log beside the "
        "champion's; the result holds the champion's alone. Null when none was attached.",
    )
    challenger_error: str | None = Field(
        default=None,
        description="Why the challenger stopped shadowing the job (it failed to load or to "
        "score); the decisions recorded after that are the champion's alone. The result is "
        "never affected. Null otherwise.",
    )

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


class JobPlan(BaseModel):
    """What a worker needs to split and score a job: the file as received, then its chunks."""

    input_format: InputFormat
    input_file: str
    columns: list[str]
    total_rows: int
    chunk_rows: int | None = None
    chunk_starts: list[int] | None = None
    """First input row of each chunk, once the input is split."""


class ChunkCounts(BaseModel):
    """The counts of one scored chunk."""

    rows: int
    valid: int
    rejected: int


def new_job_id() -> str:
    """A fresh job id: 32 lowercase hexadecimal characters."""
    return uuid.uuid4().hex


def is_job_id(value: str) -> bool:
    """Whether `value` has the form of a job id (and so is safe as a folder name)."""
    return bool(_JOB_ID.fullmatch(value))
