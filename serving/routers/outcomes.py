"""Outcomes: whether decided loans defaulted, reported months after the decision.

`POST /v1/outcomes` takes up to `MAX_OUTCOMES` outcomes keyed by the request ids the API (or a
batch job, as ``<job id>-<row>``) issued, and records them all or none
(`loanops.outcomes.record_outcomes`):

- **200**: written. Ids already recorded with the same value, or repeated in the request, are
  listed as duplicates and written once; the stored outcome is kept.
- **409**: nothing written, because an id matches no decision (unless ``skip_unknown=true``,
  which leaves such ids out and lists them) or contradicts a recorded outcome or another item of
  the request. The body names every offending id, so the client can fix and resend the whole set.
- **422**: the body broke the schema (the API's usual field errors, e.g. ``"defaulted": 1``).

Larger sets go through ``loanops outcomes load FILE``, which has the same rules.

The route writes through `AppState.database`, an engine on the decision log's database that the
app opens at start-up, in a worker thread so the event loop never waits on the database.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import InterfaceError, OperationalError

from loanops.outcomes import Outcome, OutcomeReport, record_outcomes
from serving.deps import ApiKeyDep, DatabaseDep
from serving.schemas import ERROR_RESPONSES, ErrorBody

# Not strict about Content-Type: a JSON body without one is read as JSON, as /v1/predict reads it.
router = APIRouter(
    prefix="/v1", tags=["outcomes"], dependencies=[ApiKeyDep], strict_content_type=False
)

MAX_OUTCOMES: Final = 5_000
"""Most outcomes in one request: some 520 kB of JSON, within the default 1 MiB body limit."""

_EXAMPLE_ID = "7c9e6679742540de944be07fc1f90ae7"


class OutcomesIn(BaseModel):
    """Outcomes of decided loans, recorded together or not at all."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "outcomes": [
                        {
                            "request_id": _EXAMPLE_ID,
                            "defaulted": True,
                            "observed_at": "2026-10-31T00:00:00Z",
                        },
                        {"request_id": "3f2a9c0d1b7e4f58a6c1d2e3f4a5b6c7-41", "defaulted": False},
                    ]
                }
            ]
        },
    )

    outcomes: list[Outcome] = Field(
        min_length=1,
        max_length=MAX_OUTCOMES,
        description=f"1 to {MAX_OUTCOMES} outcomes, each naming a decision by its request id.",
    )


class OutcomesOut(BaseModel):
    """What happened to a set of outcomes; every id that was not simply recorded is named."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "recorded",
                    "detail": "recorded 2 of 3 outcomes; 1 already recorded or repeated with "
                    f"the same value: {_EXAMPLE_ID}",
                    "received": 3,
                    "recorded": 2,
                    "duplicates": [_EXAMPLE_ID],
                    "unknown": [],
                    "conflicts": [],
                },
                {
                    "status": "refused",
                    "detail": "refused all 2 outcomes; 1 with no such decision: not-a-request-id",
                    "received": 2,
                    "recorded": 0,
                    "duplicates": [],
                    "unknown": ["not-a-request-id"],
                    "conflicts": [],
                },
            ]
        }
    )

    status: Literal["recorded", "refused"] = Field(
        description="`recorded`: the set was written. `refused`: nothing was written."
    )
    detail: str = Field(description="The outcome in one line.")
    received: int = Field(ge=0, description="Items in the request, repeats included.")
    recorded: int = Field(ge=0, description="Outcomes newly written.")
    duplicates: list[str] = Field(
        description="Ids already recorded with the same value, or repeated in the request with "
        "the same value: written once, the stored outcome kept."
    )
    unknown: list[str] = Field(
        description="Ids that match no decision: the set is refused for them unless "
        "`skip_unknown=true`."
    )
    conflicts: list[str] = Field(
        description="Ids recorded with the other value, or given both values in the request: the "
        "set is refused for them. A recorded outcome is never overwritten."
    )

    @classmethod
    def of(cls, report: OutcomeReport) -> OutcomesOut:
        """The response body for a report of `record_outcomes`."""
        return cls(
            status="refused" if report.refused else "recorded",
            detail=report.summary,
            received=report.received,
            recorded=report.recorded,
            duplicates=list(report.duplicates),
            unknown=list(report.unknown),
            conflicts=list(report.conflicts),
        )


_RESPONSES: dict[int | str, dict[str, Any]] = {
    **{code: body for code, body in ERROR_RESPONSES.items() if code != 503},
    409: {
        "model": OutcomesOut,
        "description": "Nothing was written: unknown or conflicting ids, each named.",
    },
    503: {"model": ErrorBody, "description": "The decision log database cannot be reached."},
}


@router.post("/outcomes", response_model=OutcomesOut, responses=_RESPONSES)
async def record(
    body: OutcomesIn,
    engine: DatabaseDep,
    skip_unknown: Annotated[
        bool,
        Query(
            description="Record the known ids and list the unknown ones, instead of refusing "
            "the whole set for them."
        ),
    ] = False,
) -> Any:
    """Record whether decided loans defaulted: all of the set, or none of it."""
    try:
        report = await asyncio.to_thread(
            record_outcomes, engine, body.outcomes, source="api", skip_unknown=skip_unknown
        )
    except (OperationalError, InterfaceError):
        # The database is down or unreachable; any other database error is a bug: a 500.
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the decision log database cannot be reached; nothing was written",
            headers={"Retry-After": "30"},
        ) from None
    answer = OutcomesOut.of(report)
    if report.refused:
        return JSONResponse(answer.model_dump(), status_code=status.HTTP_409_CONFLICT)
    return answer
