"""The framework's ceiling for `bench/api.py`: FastAPI with nothing of loanops behind it.

One route, `POST /v1/predict`, reads the body and validates it with the same request model as
loanops (`FeatureSchema.request_model()` of the configured dataset, pydantic's JSON parser on
the raw bytes, as `serving.routers.predict` does), then answers a constant prediction of the same
shape. No key check, model, reasons, metrics or decision log: what is left is uvicorn, Starlette
routing, FastAPI's request handling and the validation every request needs. The bench runs it
under uvicorn with the options `loanops serve` uses:

    uvicorn --app-dir bench --factory ceiling:create_app --workers 1 --no-access-log
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request, Response
from pydantic import ValidationError

from loanops.data import get_dataset
from loanops.settings import get_settings
from serving.schemas import PREDICTION_EXAMPLE


def create_app() -> FastAPI:
    """The bare app; the dataset comes from `LOANOPS_DATASET`, as for `loanops serve`."""
    application = get_dataset(get_settings().training.dataset).schema.request_model()
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/v1/predict")
    async def predict(request: Request) -> Response:
        try:
            application.model_validate_json(await request.body())
        except ValidationError as error:
            detail = error.errors(include_url=False, include_context=False)
            return Response(orjson.dumps({"detail": detail}, default=str), status_code=422)
        return Response(orjson.dumps(PREDICTION_EXAMPLE), media_type="application/json")

    @app.get("/readyz")
    async def readyz() -> Response:
        return Response(b'{"status":"ready"}', media_type="application/json")

    return app
