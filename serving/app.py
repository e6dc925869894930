"""The scoring API: `create_app(settings)` builds one, so tests and `loanops serve` build their own.

Start-up loads the model in the background (`/readyz` says when it is ready), starts the decision
log's writer, and follows the model's alias. Shutdown stops following and flushes the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from mlflow import MlflowClient
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from loanops.data import get_dataset, load_dataset
from loanops.decisions.database import create_engine_for, migrate
from loanops.model_ref import ModelRef
from loanops.registry import connect
from loanops.schema import FeatureSchema
from loanops.settings import Settings, get_settings
from serving.batch import database as batch_database
from serving.batch.storage import storage_for
from serving.batch.store import JobStore
from serving.challenger import ChallengerHolder
from serving.decision_log.handle import DecisionLogProcess
from serving.deps import AppState
from serving.heap import freeze_heap
from serving.metrics import Metrics, MetricsMiddleware
from serving.middleware import (
    BodyLimitMiddleware,
    BodyTimeout,
    BodyTimeoutMiddleware,
    BodyTooLarge,
)
from serving.model import LoadedModel
from serving.routers import batch_jobs, health, model, outcomes, predict
from serving.shadow import ShadowScorer
from serving.state import ModelHolder

logger = logging.getLogger(__name__)

OPEN_API_WARNING = (
    "LOANOPS_API_KEYS is not set: this API accepts any X-API-Key (dev mode only). Set "
    "LOANOPS_API_KEYS=key-one,key-two to require one of them."
)

API_TITLE = "loanops scoring API"
API_DESCRIPTION = """
Probability of default, a decision and adverse-action reasons for consumer loan applications,
from the registered model that holds the `production` alias (or a pinned version).

* **Online**: `POST /v1/predict` for one application, `POST /v1/predict/batch` for a few hundred.
* **Files**: `POST /v1/batch-jobs` queues a CSV or Parquet file; poll the job, then download the
  scored file.
* Every decision is written to the decision log, which monitoring reads.
* **Outcomes**: `POST /v1/outcomes` records, months later, whether decided loans defaulted; the
  performance monitor joins them to the decisions.

Send one of the configured keys in `X-API-Key`. `/healthz`, `/readyz` and `/metrics` are open.
"""


def create_app(
    settings: Settings | None = None,
    *,
    client_factory: Callable[[], MlflowClient] | None = None,
) -> FastAPI:
    """Build the API.

    Args:
        settings: configuration; the process's settings when omitted.
        client_factory: builds the registry client; `loanops.registry.connect(settings)` when
            omitted.

    Returns:
        The FastAPI app. Nothing is loaded or connected until it starts.
    """
    settings = settings or get_settings()
    schema = get_dataset(settings.training.dataset).schema
    metrics = Metrics()

    def serving(loaded: LoadedModel) -> None:
        freeze_heap()
        metrics.serving(loaded.name, loaded.version, loaded.run_id, loaded.loaded_at.timestamp())

    champion_ref = ModelRef.parse(settings.model_uri)
    challenger = ChallengerHolder(
        client_factory or (lambda: connect(settings)),
        ModelRef(champion_ref.name, alias=settings.serving.challenger_alias),
        schema,
        poll_seconds=settings.serving.model_poll_seconds,
        on_failure=lambda stage: metrics.challenger_failures.labels(stage).inc(),
    )
    holder = ModelHolder(
        client_factory or (lambda: connect(settings)),
        champion_ref,
        schema,
        poll_seconds=settings.serving.model_poll_seconds,
        max_backoff_seconds=settings.serving.model_load_max_backoff_seconds,
        on_loaded=serving,
        on_failure=metrics.reload_failures.inc,
    )
    jobs = JobStore(storage_for(settings), create_engine_for(settings.decision_db_url))
    metrics.watch_batch_rows(jobs.rows_processed_total)
    state = AppState(
        settings=settings,
        schema=schema,
        request_model=schema.request_model(),
        batch_request_model=_batch_request_model(schema, settings.serving.max_sync_batch),
        holder=holder,
        metrics=metrics,
        jobs=jobs,
        api_keys=tuple(key.encode() for key in settings.serving.api_key_values),
        challenger=challenger,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not state.api_keys:
            # Only dev mode gets here without keys (the settings refuse it elsewhere).
            logger.warning(OPEN_API_WARNING)
        await asyncio.to_thread(migrate, settings.decision_db_url)
        await asyncio.to_thread(batch_database.migrate, jobs.engine)
        database = state.database = create_engine_for(settings.decision_db_url)
        state.decisions = DecisionLogProcess(
            settings.decision_db_url,
            batch_size=settings.decision_log.batch_size,
            flush_seconds=settings.decision_log.flush_seconds,
            max_held=settings.decision_log.memory_backlog,
            spill_dir=settings.storage_path / "unsaved-decisions",
            writer_nice=settings.decision_log.writer_nice,
        )
        await asyncio.to_thread(state.decisions.start)
        if settings.batch.redis_url:
            from serving.batch.client import create_client

            state.celery = create_client(settings)
        follow = asyncio.create_task(holder.run(), name="follow-model")
        # Shadow scoring drains into the decision log, so it stops before the log closes.
        state.shadow = ShadowScorer(
            challenger,
            state.decisions.record,
            top_reasons=settings.serving.reasons_top,
            on_overflow=metrics.challenger_overflow.inc,
        )
        follow_challenger = asyncio.create_task(challenger.run(), name="follow-challenger")
        try:
            yield
        finally:
            for task in (follow, follow_challenger):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            state.shadow.close()  # on the loop, which its queue drains on
            await asyncio.to_thread(state.decisions.close)
            state.database = None
            database.dispose()
            jobs.engine.dispose()

    docs_assets = offline_docs_assets()
    app = FastAPI(
        title=API_TITLE,
        description=API_DESCRIPTION,
        version="1",
        lifespan=lifespan,
        # With the assets installed, /docs and /redoc are served below, without a CDN.
        docs_url=None if docs_assets else "/docs",
        redoc_url=None if docs_assets else "/redoc",
        openapi_tags=[
            {"name": "predict", "description": "Real-time scoring."},
            {"name": "batch jobs", "description": "Files scored by the Celery workers."},
            {"name": "model", "description": "The model serving now."},
            {"name": "outcomes", "description": "Delayed labels: whether decided loans defaulted."},
            {"name": "health", "description": "Liveness, readiness and Prometheus metrics."},
        ],
    )
    app.state.loanops = state
    if docs_assets:
        _serve_docs_offline(app, docs_assets)
    for router in (predict.router, batch_jobs.router, model.router, outcomes.router, health.router):
        app.include_router(router)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.serving.max_body_bytes,
        exempt=lambda scope: scope["path"].rstrip("/") == "/v1/batch-jobs",
    )
    app.add_middleware(BodyTimeoutMiddleware, seconds=settings.serving.body_timeout_seconds)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(BodyTooLarge, _body_too_large)
    app.add_exception_handler(BodyTimeout, _body_timeout)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.openapi = _openapi(app, state)  # type: ignore[method-assign]
    return app


DOCS_ASSETS_PATH = "/docs-assets"


def offline_docs_assets() -> Path | None:
    """The Swagger UI and ReDoc files of the `fastapi-offline` package, when it is installed.

    FastAPI's own /docs and /redoc load them from a CDN, which clusters without internet egress
    (and our machines) cannot reach; served by the API itself, the pages work anywhere.
    """
    spec = importlib.util.find_spec("fastapi_offline")  # located, not imported
    for folder in (spec.submodule_search_locations or []) if spec else []:
        static = Path(folder) / "static"
        needed = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js")
        if all((static / name).is_file() for name in needed):
            return static
    return None


def _serve_docs_offline(app: FastAPI, assets: Path) -> None:
    """/docs (Swagger UI) and /redoc, with their scripts and styles served from `assets`."""
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_PATH}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )


def _batch_request_model(schema: FeatureSchema, max_items: int) -> type[BaseModel]:
    applications: Any = Annotated[
        list[schema.request_model()],  # type: ignore[misc]
        Field(
            min_length=1,
            max_length=max_items,
            description=f"1 to {max_items} applications (LOANOPS_MAX_SYNC_BATCH).",
        ),
    ]
    model: type[BaseModel] = create_model(
        "BatchApplications",
        __config__=ConfigDict(extra="forbid", strict=True, frozen=True),
        __doc__="Applications scored together, with one model version.",
        applications=(applications, ...),
    )
    return model


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return JSONResponse({"detail": [_printable(e) for e in error.errors()]}, status_code=422)


def _printable(error: Any) -> dict[str, Any]:
    """One field error, with its offending value only where JSON can carry it."""
    entry = {key: error[key] for key in ("loc", "msg", "type") if key in error}
    value = error.get("input")
    if isinstance(value, float) and not math.isfinite(value):
        entry["input"] = str(value)
    elif isinstance(value, str | int | float | bool):
        entry["input"] = value
    return jsonable_encoder(entry)


async def _http_error(request: Request, error: Exception) -> Response:
    """FastAPI's usual answer, except for a JSON body it could not decode as text.

    FastAPI answers bytes that are not UTF-8 with an undocumented 400; they are as much "not
    JSON" as `{not json`, so they get the same documented 422 field error.
    """
    assert isinstance(error, StarletteHTTPException)
    cause = error.__cause__
    if error.status_code == 400 and isinstance(cause, UnicodeDecodeError):
        not_text = {"loc": ("body",), "msg": "JSON decode error: not UTF-8", "type": "json_invalid"}
        return await _validation_error(request, RequestValidationError([not_text]))
    # FastAPI turns any error while it reads a body it parses itself into that 400, ours too.
    if error.status_code == 400 and isinstance(cause, BodyTooLarge):
        return await _body_too_large(request, cause)
    if error.status_code == 400 and isinstance(cause, BodyTimeout):
        return await _body_timeout(request, cause)
    return await http_exception_handler(request, error)


async def _body_too_large(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=413, headers={"Connection": "close"})


async def _body_timeout(request: Request, error: Exception) -> JSONResponse:
    # The rest of the body may still come; closing the connection keeps it from being read as
    # the next request.
    return JSONResponse({"detail": str(error)}, status_code=408, headers={"Connection": "close"})


async def _client_disconnected(request: Request, error: Exception) -> Response:
    """The client left before its body arrived: nobody to answer, nothing to log."""
    # 499 is nginx's "client closed request": the metrics count it as that, not as a 500.
    return Response(status_code=499)


def _openapi(app: FastAPI, state: AppState) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document, with request bodies derived from the feature schema.

    The routes read raw bytes and validate them with the request model in one step (pydantic's
    JSON parser), so FastAPI cannot see their bodies: they are described here instead. The
    example is the serving model's own logged input example, once a model is loaded.
    """
    cache: dict[str | None, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        loaded: LoadedModel | None = state.holder.current
        key = loaded.version if loaded else None
        if key in cache:
            return cache[key]
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        components = document.setdefault("components", {}).setdefault("schemas", {})
        template = "#/components/schemas/{model}"
        for body_model in (state.request_model, state.batch_request_model):
            body_schema = body_model.model_json_schema(ref_template=template)
            components.update(body_schema.pop("$defs", {}))
            components[body_model.__name__] = body_schema
        application = _example(state, loaded)
        bodies = {
            "application": (state.request_model.__name__, application),
            "batch": (state.batch_request_model.__name__, {"applications": [application]}),
        }
        for path in document["paths"].values():
            for operation in path.values():
                kind = operation.pop("x-loanops-body", None)
                if kind is None:
                    continue
                name, example = bodies[kind]
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": template.format(model=name)},
                            "example": example,
                        }
                    },
                }
        cache[key] = document
        app.openapi_schema = document
        return document

    return openapi


def _example(state: AppState, loaded: LoadedModel | None) -> dict[str, Any]:
    if loaded is not None and loaded.input_example:
        return loaded.input_example[0]
    row = state.schema.to_frame(load_dataset(state.settings.training.dataset, rows=1).frame)
    return jsonable_encoder(row.astype(object).where(row.notna(), None).iloc[0].to_dict())
