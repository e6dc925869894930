"""Real-time scoring: one application, or a small list of them, per request."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from loanops.arms import Arm, assign_arm
from loanops.decisions.record import Decision
from serving.deps import AppState, ScoringDep
from serving.model import LoadedModel, Scored
from serving.schemas import ERROR_RESPONSES, BatchPrediction, Prediction
from serving.shadow import paired, reasons_of

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
    prediction = _decide(state, model, row, scored)
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
    predictions = [_decide(state, model, row, s) for row, s in zip(rows, scored, strict=True)]
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


def _decide(
    state: AppState, model: LoadedModel, row: Mapping[str, Any], scored: Scored
) -> dict[str, Any]:
    """Record the decision and return the applicant's answer, with the challenger if attached."""
    decision = Decision(
        request_id=uuid.uuid4().hex,
        decided_at=datetime.now(UTC),
        model_name=model.name,
        model_version=model.version,
        threshold=model.threshold,
        inputs=row,
        probability=scored.probability,
        decision=scored.decision,
        reasons=_reasons(scored),
    )
    challenger = state.challenger.current if state.challenger is not None else None
    answer: tuple[LoadedModel, Scored] = (model, scored)
    if challenger is None or state.decisions is None:
        _log(state, decision)
    elif _arm(state, row) == "challenger":
        try:
            (theirs,) = challenger.score([row], top_reasons=state.settings.serving.reasons_top)
        except Exception as error:  # a broken challenger: the champion answers, logged alone
            assert state.challenger is not None
            state.challenger.scoring_failed(challenger, error)
            _log(state, decision)
        else:
            answer = (challenger, theirs)
            _log(state, dataclasses.replace(paired(decision, challenger, theirs), arm="challenger"))
    elif state.shadow is not None:
        state.shadow.submit(challenger, decision)
    else:
        _log(state, decision)
    answered, result = answer
    state.metrics.decided(result.decision).inc()
    return {
        "request_id": decision.request_id,
        "model_version": answered.version,
        "probability_of_default": result.probability,
        "decision": result.decision,
        "threshold": answered.threshold,
        "reasons": decision.reasons if answered is model else reasons_of(result),
    }


def _arm(state: AppState, row: Mapping[str, Any]) -> Arm:
    share = state.settings.serving.challenger_share
    if share == 0.0:
        return "champion"
    return assign_arm(
        row,
        share=share,
        seed=state.settings.serving.challenger_seed,
        applicant_key=state.schema.applicant_key,
    )


def _log(state: AppState, decision: Decision) -> None:
    if state.decisions is not None:
        state.decisions.record(decision)


def _reasons(scored: Scored) -> Sequence[dict[str, Any]]:
    return [{"code": r.code, "text": r.text, "impact": r.impact} for r in scored.reasons]
