"""Batch-job settings: the queue, where job files live (a folder or a bucket), the chunking."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from loanops.settings.environment import SettingsGroup, variables_prefixed


class BatchSettings(SettingsGroup):
    """Batch jobs; fields are read from `LOANOPS_BATCH_<FIELD>`, the queue and the folder from
    `LOANOPS_REDIS_URL` and `LOANOPS_STORAGE_DIR`."""

    model_config = variables_prefixed("BATCH_")

    redis_url: str | None = Field(
        default=None,
        validation_alias="LOANOPS_REDIS_URL",
        description="Redis of the batch-job queue, e.g. `redis://redis:6379/0`; unset: no jobs.",
    )
    storage_dir: Path | None = Field(
        default=None,
        validation_alias="LOANOPS_STORAGE_DIR",
        description=(
            "Folder for batch-job files (shared by the API and every worker with the local "
            "backend; only for staging with S3); unset means `home`/storage."
        ),
    )
    storage: Literal["local", "s3"] = Field(
        default="local",
        description=(
            "Where job uploads, chunks and results live: `local` (the storage folder) or `s3` "
            "(a bucket, so that workers on other nodes need no shared volume)."
        ),
    )
    s3_bucket: str = Field(
        default="", description="The bucket of batch-job files; required when storage is `s3`."
    )
    s3_prefix: str = Field(
        default="batch-jobs", description="Folder of the job files in the bucket."
    )
    s3_endpoint_url: str = Field(
        default="",
        description="URL of an S3-compatible server (MinIO, Ceph, R2); empty for AWS S3 itself.",
    )
    s3_region: str = Field(
        default="", description="The bucket's region; empty for boto3's default chain."
    )
    chunk_rows: int = Field(
        default=50_000, ge=100, description="Rows per batch-job chunk, the unit of retry."
    )
    visibility_seconds: float = Field(
        default=900.0,
        gt=0,
        description=(
            "How long a chunk may run before Redis hands it to another worker; a killed worker's "
            "chunk is redelivered after this."
        ),
    )

    @model_validator(mode="after")
    def _a_bucket_for_s3(self) -> BatchSettings:
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("LOANOPS_BATCH_STORAGE=s3 needs LOANOPS_BATCH_S3_BUCKET")
        return self
