"""Batch jobs: upload a file, follow its progress, download the scored file."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response, StreamingResponse

from serving.batch.client import QueueUnavailable, submit
from serving.batch.job import BatchJob
from serving.batch.storage import StorageUnavailable
from serving.batch.upload import BatchFileError, UploadTooLarge
from serving.deps import ApiKeyDep, AppState, ModelDep, StateDep
from serving.schemas import ERROR_RESPONSES, ErrorBody

router = APIRouter(prefix="/v1/batch-jobs", tags=["batch jobs"], dependencies=[ApiKeyDep])

JobId = Annotated[str, Path(description="The id `POST /v1/batch-jobs` returned.")]

_UPLOAD_BODY = {
    "required": True,
    "description": (
        "The file itself as the raw body, streamed: CSV with a header row "
        "(`Content-Type: text/csv`) or Parquet (`application/vnd.apache.parquet`). Columns are "
        "the schema's feature names; other columns, such as a loan id, are passed through."
    ),
    "content": {
        "text/csv": {
            "schema": {"type": "string", "format": "binary"},
            "example": "loan_id,funded_amnt,term,...\n1001,10000,term_36,...\n",
        },
        "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
    },
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No job has this id."}
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchJob,
    responses={
        **ERROR_RESPONSES,
        503: {
            "model": ErrorBody,
            "description": "No model yet, or the job queue or the job storage is down.",
        },
    },
    openapi_extra={"requestBody": _UPLOAD_BODY},
)
async def create_job(
    request: Request,
    state: StateDep,
    model: ModelDep,
    filename: Annotated[
        str | None,
        Query(
            description="Name of the file; its extension picks the format when the type is "
            "`application/octet-stream`.",
            max_length=255,
        ),
    ] = None,
) -> BatchJob:
    """Queue a CSV or Parquet file for scoring with the version serving now.

    When a challenger is attached, it shadows the job: its scores go to the decision log beside
    the champion's, and the result holds the champion's alone.
    """
    if state.celery is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="batch jobs are disabled: set LOANOPS_REDIS_URL to the queue's Redis",
        )
    try:
        job = await state.jobs.receive(
            request.stream(),
            filename=filename or "upload",
            content_type=request.headers.get("content-type"),
            max_bytes=state.settings.serving.max_upload_bytes,
            model_name=model.name,
            model_version=model.version,
            schema=state.schema,
            challenger_version=_shadowing_version(state),
        )
    except UploadTooLarge as error:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, detail=str(error)) from None
    except StorageUnavailable as error:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(error), headers={"Retry-After": "30"}
        ) from None
    except BatchFileError as error:
        # The documented 422 body: a list of field errors, here one about the file as a whole.
        raise RequestValidationError(
            [{"loc": ("body",), "msg": str(error), "type": "batch_file"}]
        ) from None
    try:
        submit(state.celery, state.jobs, job)
    except QueueUnavailable as error:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(error), headers={"Retry-After": "30"}
        ) from None
    return job


def _shadowing_version(state: AppState) -> str | None:
    """The attached challenger's version, which shadows jobs submitted now."""
    challenger = None if state.challenger is None else state.challenger.current
    return None if challenger is None else challenger.version


@router.get("/{job_id}", response_model=BatchJob, responses={**ERROR_RESPONSES, **_NOT_FOUND})
async def job_status(state: StateDep, job_id: JobId) -> BatchJob:
    """Status and progress of a job: rows done of the total, valid and rejected rows."""
    job = await asyncio.to_thread(state.jobs.get, job_id)  # SQL: off the event loop
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no batch job {job_id!r}")
    return job


@router.get(
    "/{job_id}/result",
    response_class=Response,
    responses={
        **ERROR_RESPONSES,
        **_NOT_FOUND,
        200: {
            "description": "The scored file, in the upload's format: every input row once, with "
            "`row`, `probability`, `decision`, `reason_codes` and `rejection_reason`.",
            "content": {"text/csv": {}, "application/vnd.apache.parquet": {}},
        },
        409: {"model": ErrorBody, "description": "The job has not finished."},
    },
)
async def job_result(state: StateDep, job_id: JobId) -> Response:
    """Download the scored file of a finished job."""
    job = await asyncio.to_thread(state.jobs.get, job_id)  # SQL: off the event loop
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no batch job {job_id!r}")
    key = await asyncio.to_thread(state.jobs.result_key, job_id)
    if job.status != "succeeded" or key is None:
        detail = (
            f"job {job_id} failed: {job.error}"
            if job.status == "failed"
            else f"job {job_id} is {job.status}: {job.rows_done} of {job.total_rows} rows done"
        )
        raise HTTPException(status.HTTP_409_CONFLICT, detail=detail)
    media_type = "text/csv" if job.input_format == "csv" else "application/vnd.apache.parquet"
    filename = f"{job_id}-scored.{job.input_format}"
    path = state.jobs.storage.local_path(key)
    if path is not None:
        return FileResponse(path, media_type=media_type, filename=filename)
    # From a bucket: streamed through, so the API key still guards the download. The length
    # lets a client tell a download cut short from a whole one.
    size = await asyncio.to_thread(state.jobs.storage.size, key)
    return StreamingResponse(
        state.jobs.storage.iter_bytes(key),
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Content-Length": str(size),
        },
    )
