"""`loanops serve` and `loanops worker`: the scoring API and the batch worker, as deployed."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer

from cli.errors import fail, settings


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the scoring API under uvicorn, with the model from LOANOPS_MODEL_REF.

    Example: loanops serve --host 0.0.0.0 --port 8000
    """
    settings()  # refuse bad settings in one line before uvicorn starts
    import uvicorn

    _serving_environment()
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        # Clients behind the ingress keep connections open; this bounds a slow drain on shutdown.
        timeout_graceful_shutdown=30,
    )


def worker(
    concurrency: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    log_level: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run a Celery worker that scores batch-job chunks from the Redis at LOANOPS_REDIS_URL.

    Example: LOANOPS_REDIS_URL=redis://127.0.0.1:6379/0 loanops worker --concurrency 2
    """
    config = settings()
    if not config.batch.redis_url:
        raise fail("LOANOPS_REDIS_URL is not set; the worker needs the job queue's Redis")
    _serving_environment()
    from serving.batch.tasks import run_worker

    run_worker(config, concurrency=concurrency, loglevel=log_level.upper())


def _serving_environment() -> None:
    # One OpenMP thread per process: two stalled single-row predictions now and then.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # A long-running service's log is no place for download progress bars.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
