"""Real-time scoring: one application, or a small list of them, per request."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from loanops.decisions.record import Decision
from serving.deps import AppState, ScoringDep
from serving.model import LoadedModel, Scored
from serving.schemas import ERROR_RESPONSES, BatchPrediction, Prediction

# Each route checks the key through `ScoringDep`, with the state and model it needs.
router = APIRouter(prefix="/v1", tags=["predict"])


@router.post(
    "/predict",
    response_model=Prediction,
    responses=ERROR_RESPONSES,
    openapi_extra={"x-loanops-body": "application"},
)
async def predict(request: Request, scoring: ScoringDep) -> Response:
    """Score one application: probability of default, decision and adverse-action reasons."""
    state, model = scoring.state, scoring.model
    _refuse_when_log_is_full(state)
    application = _validate(state.request_model, await request.body())
    row = application.model_dump()
    (scored,) = model.score([row], top_reasons=state.settings.serving.reasons_top)
    prediction = _record(state, model, row, scored)
    return Response(orjson.dumps(prediction), media_type="application/json")


@router.post(
    "/predict/batch",
    response_model=BatchPrediction,
    responses=ERROR_RESPONSES,
    openapi_extra={"x-loanops-body": "batch"},
)
async def predict_batch(request: Request, scoring: ScoringDep) -> Response:
    """Score up to `LOANOPS_MAX_SYNC_BATCH` applications together, all with one model version."""
    state, model = scoring.state, scoring.model
    _refuse_when_log_is_full(state)
    batch = _validate(state.batch_request_model, await request.body())
    rows = [application.model_dump() for application in batch.applications]  # type: ignore[attr-defined]
    # Off the event loop: single requests need not wait the tens of ms a full batch takes.
    scored = await asyncio.to_thread(
        model.score, rows, top_reasons=state.settings.serving.reasons_top
    )
    predictions = [_record(state, model, row, s) for row, s in zip(rows, scored, strict=True)]
    body = {"model_version": model.version, "predictions": predictions}
    return Response(orjson.dumps(body), media_type="application/json")


def _validate(model: type[BaseModel], body: bytes) -> BaseModel:
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        errors = error.errors(include_url=False, include_context=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def _refuse_when_log_is_full(state: AppState) -> None:
    # A decision that cannot be recorded is not made: 503 rather than block the event loop.
    if state.decisions is not None and state.decisions.saturated:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the decision log is not keeping up; retry shortly",
            headers={"Retry-After": "5"},
        )


def _record(
    state: AppState, model: LoadedModel, row: Mapping[str, Any], scored: Scored
) -> dict[str, Any]:
    request_id = uuid.uuid4().hex
    reasons = _reasons(scored)
    if state.decisions is not None:
        state.decisions.record(
            Decision(
                request_id=request_id,
                decided_at=datetime.now(UTC),
                model_name=model.name,
                model_version=model.version,
                threshold=model.threshold,
                inputs=row,
                probability=scored.probability,
                decision=scored.decision,
                reasons=reasons,
            )
        )
    state.metrics.decided(scored.decision).inc()
    return {
        "request_id": request_id,
        "model_version": model.version,
        "probability_of_default": scored.probability,
        "decision": scored.decision,
        "threshold": model.threshold,
        "reasons": reasons,
    }


def _reasons(scored: Scored) -> Sequence[dict[str, Any]]:
    return [{"code": r.code, "text": r.text, "impact": r.impact} for r in scored.reasons]
