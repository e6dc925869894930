"""Liveness, readiness and metrics: open endpoints for Kubernetes and Prometheus."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import StateDep
from serving.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process answers. Cheap by design; it checks nothing else."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={
        503: {
            "model": Health,
            "description": "No model has loaded yet, or the decision log is falling behind.",
        }
    },
)
async def readyz(state: StateDep) -> Response:
    """Readiness: a model is loaded and has passed its smoke test, and the decision log keeps up."""
    model = state.holder.current
    if model is None:
        error = state.holder.last_error
        body = Health(status="not ready", detail=error.message if error else "loading the model")
        return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    bound = state.settings.decision_log.ready_backlog
    if state.decisions is not None and (backlog := state.decisions.backlog) > bound:
        detail = (
            f"the decision log is behind: {backlog} decisions are not yet in the database "
            f"(LOANOPS_DECISION_LOG_READY_BACKLOG is {bound})"
        )
        body = Health(status="not ready", model_version=model.version, detail=detail)
        return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return JSONResponse(Health(status="ready", model_version=model.version).model_dump())


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(state: StateDep) -> Response:
    """Prometheus metrics: requests, latency, decisions, model version, reloads, batch rows."""
    if state.decisions is not None:
        state.metrics.decisions_pending.set(state.decisions.pending)
        on_disk = state.decisions.backlog_on_disk
        backlog = state.metrics.decisions_backlog
        backlog.labels("memory").set(max(state.decisions.backlog - on_disk, 0))
        backlog.labels("disk").set(on_disk)
    # Off the event loop: a collector may wait a moment on the job store's database.
    body = await asyncio.to_thread(generate_latest, state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
