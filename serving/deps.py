"""What routes depend on, each as an `Annotated` alias a route's signature names.

`StateDep` (the app's state), `SettingsDep`, `ModelDep` (the serving model, 503 until one is
loaded), `DatabaseDep` (the decision log's database, 503 until it is open), and `ApiKeyDep`, the
router-level check of the caller's `X-API-Key`. The scoring routes take `ScoringDep` instead,
all three of key check, state and model in one dependency.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader
from pydantic import BaseModel
from sqlalchemy import Engine

from loanops.schema import FeatureSchema
from loanops.settings import Settings
from serving.metrics import Metrics
from serving.model import LoadedModel
from serving.state import ModelHolder

if TYPE_CHECKING:
    from celery import Celery

    from serving.batch.store import JobStore
    from serving.challenger import ChallengerHolder
    from serving.decision_log.handle import DecisionLogProcess
    from serving.shadow import ShadowScorer


@dataclass
class AppState:
    """Everything one API instance holds, built by `create_app`.

    The last three are opened at start-up and closed at shutdown, so they are None before.
    """

    settings: Settings
    schema: FeatureSchema
    request_model: type[BaseModel]
    batch_request_model: type[BaseModel]
    holder: ModelHolder
    metrics: Metrics
    jobs: JobStore
    api_keys: tuple[bytes, ...]
    """The accepted `X-API-Key` values, encoded once; empty when the API is open."""
    decisions: DecisionLogProcess | None = None
    """The decision log's writer, which every decision is recorded through."""
    database: Engine | None = None
    """An engine on the decision log's database, which `POST /v1/outcomes` writes through."""
    celery: Celery | None = None
    challenger: ChallengerHolder | None = None
    """The version under the challenger alias, when the API follows one."""
    shadow: ShadowScorer | None = None
    """Scores champion decisions with the challenger off the request path."""


# Every dependency here is `async def`: FastAPI runs a plain `def` dependency in the thread pool,
# which costs a thread hand-off per dependency per request (about 0.3 ms of CPU in all, and tail
# latency from the GIL changing hands) for functions that never block.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.loanops
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_model(state: StateDep) -> LoadedModel:
    """The model serving now; 503 until one has loaded and passed its smoke test."""
    return _serving_model(state)


def _serving_model(state: AppState) -> LoadedModel:
    model = state.holder.current
    if model is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="no model is loaded yet; retry when /readyz answers 200",
            headers={"Retry-After": "5"},
        )
    return model


ModelDep = Annotated[LoadedModel, Depends(get_model)]


async def get_database(state: StateDep) -> Engine:
    """The decision log's engine; 503 until the app has opened it."""
    if state.database is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the decision log database is not open yet; retry shortly",
            headers={"Retry-After": "5"},
        )
    return state.database


DatabaseDep = Annotated[Engine, Depends(get_database)]

_api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="One of the keys in `LOANOPS_API_KEYS`.",
)


ApiKey = Annotated[str | None, Depends(_api_key_header)]


async def require_api_key(state: StateDep, key: ApiKey) -> None:
    """401 unless the caller sent one of the configured keys; open when none are configured."""
    _check_api_key(state.api_keys, key)


def _check_api_key(accepted: tuple[bytes, ...], key: str | None) -> None:
    if not accepted:
        return
    # Every key is compared in full, so the time taken says nothing about which one nearly matched.
    offered = (key or "").encode()
    matched = False
    for candidate in accepted:
        matched |= hmac.compare_digest(offered, candidate)
    if not matched:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or unknown API key in X-API-Key",
            headers={"WWW-Authenticate": "APIKey"},
        )


ApiKeyDep = Depends(require_api_key)


@dataclass(frozen=True, slots=True)
class Scoring:
    """What a scoring route needs: the app's state and the model that scores this request."""

    state: AppState
    model: LoadedModel


async def get_scoring(request: Request, key: ApiKey) -> Scoring:
    """The key check, the state and the serving model, resolved together.

    FastAPI's cost grows with each dependency a route's tree holds; on a request that takes a
    few hundred microseconds the five of `ApiKeyDep`, `StateDep` and `ModelDep` were a sizeable
    share, so the scoring routes resolve one (and the key header, which the OpenAPI page shows).
    """
    state: AppState = request.app.state.loanops
    _check_api_key(state.api_keys, key)
    return Scoring(state, _serving_model(state))


ScoringDep = Annotated[Scoring, Depends(get_scoring)]
