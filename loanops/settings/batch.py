"""Batch-job settings: the queue, the shared folder and the chunking of a job."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

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
        description="Shared folder for batch-job files and state; unset means `home`/storage.",
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
