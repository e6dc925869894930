"""Response bodies of the API, documented for the OpenAPI page.

Request bodies are not here: one application is `FeatureSchema.request_model()`, derived from the
feature schema, so the contract cannot drift from what the model was trained on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ReasonOut(BaseModel):
    """One adverse-action reason."""

    code: str = Field(description="Stable reason code: the feature name, upper-cased.")
    text: str = Field(description="Human-readable reason.")
    impact: float = Field(
        description="How much the probability of default would fall with this feature at its "
        "favourable value."
    )


REASON_EXAMPLE: dict[str, Any] = {
    "code": "INT_RATE",
    "text": "Interest rate on the loan is high",
    "impact": 0.031,
}

PREDICTION_EXAMPLE: dict[str, Any] = {
    "request_id": "7c9e6679742540de944be07fc1f90ae7",
    "model_version": "3",
    "probability_of_default": 0.214,
    "decision": "decline",
    "threshold": 0.168,
    "reasons": [REASON_EXAMPLE],
}


class Prediction(BaseModel):
    """The decision on one application."""

    model_config = ConfigDict(json_schema_extra={"examples": [PREDICTION_EXAMPLE]})

    request_id: str = Field(description="Identifies this decision in the decision log.")
    model_version: str = Field(description="Registered version of the model that scored it.")
    probability_of_default: float = Field(ge=0, le=1, description="Calibrated PD.")
    decision: Literal["approve", "decline"] = Field(
        description="`decline` when the PD is at or above the model's threshold."
    )
    threshold: float = Field(description="The model's cost-minimising decline threshold.")
    reasons: list[ReasonOut] = Field(
        description="Features that raised this applicant's PD the most, largest first."
    )


class BatchPrediction(BaseModel):
    """Decisions on a list of applications, in request order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"model_version": "3", "predictions": [PREDICTION_EXAMPLE]}]
        }
    )

    model_version: str = Field(description="The one version that scored every application.")
    predictions: list[Prediction]


class ScorecardBin(BaseModel):
    """One bin of a scorecard feature and the points an applicant in it scores."""

    feature: str
    bin: str = Field(description="The bin's interval `[low, high)`, its categories, or `missing`.")
    points: float


class ScorecardInfo(BaseModel):
    """A scorecard's points: an applicant's score is the base points plus one bin's per feature,
    and a higher score means a lower probability of default."""

    base_points: float
    points_to_double_odds: float
    bins: list[ScorecardBin]
    information_values: dict[str, float] = Field(
        description="Each feature's information value over the training data."
    )


class ChallengerInfo(BaseModel):
    """The version under the challenger alias and whether it scores beside the champion."""

    model_config = ConfigDict(protected_namespaces=())

    alias: str
    version: str | None
    state: Literal["attached", "detached", "failed"]
    share: float
    last_error: str | None = None
    last_error_stage: Literal["load", "score"] | None = None
    last_error_at: datetime | None = None


class ModelInfo(BaseModel):
    """The model serving now, and the last failure to load another."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "name": "loan-default",
                    "ref": "models:/loan-default@production",
                    "version": "3",
                    "run_id": "0f1d2c3b4a5948e7a6b5c4d3e2f1a0b9",
                    "family": "logreg",
                    "threshold": 0.168,
                    "metrics": {"test_roc_auc": 0.788, "test_ks": 0.45},
                    "loaded_at": "2026-11-26T10:00:00Z",
                    "last_reload_error": None,
                    "last_reload_error_version": None,
                    "last_reload_error_at": None,
                    "reload_failures": 0,
                }
            ]
        },
    )

    name: str
    ref: str = Field(description="What this server follows: an alias, or a pinned version.")
    version: str
    run_id: str | None = Field(description="The MLflow run that trained it.")
    family: str = Field(description="Model family: `logreg`, `hist_gbt` or `scorecard`.")
    threshold: float
    metrics: dict[str, float] = Field(description="Test-split metrics of its training run.")
    loaded_at: datetime
    last_reload_error: str | None = Field(
        description="Why the last attempt to load a new version failed; null after a success."
    )
    last_reload_error_version: str | None
    last_reload_error_at: datetime | None
    reload_failures: int = Field(description="Failed loads since this process started.")
    scorecard: ScorecardInfo | None = Field(
        default=None, description="The points table, when the model is a scorecard."
    )
    challenger: ChallengerInfo | None = Field(
        default=None, description="The challenger alias's version and its state."
    )


class Health(BaseModel):
    """Liveness or readiness."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ready", "model_version": "3", "detail": None},
                {"status": "not ready", "model_version": None, "detail": "loading the model"},
            ]
        }
    )

    status: Literal["ok", "ready", "not ready"]
    model_version: str | None = None
    detail: str | None = None


class ErrorBody(BaseModel):
    """An error that is not about one field."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"detail": "missing or unknown API key in X-API-Key"}]}
    )

    detail: str


class FieldError(BaseModel):
    """One failed rule on one field."""

    loc: list[str | int] = Field(description="Where: `body`, then the field name.")
    msg: str = Field(description="The rule that failed, in words.")
    type: str = Field(description="Machine-readable rule name, e.g. `greater_than_equal`.")
    input: Any = Field(default=None, description="The offending value, when it can be shown.")


class ValidationErrorBody(BaseModel):
    """Each field that broke a rule."""

    detail: list[FieldError]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or unknown `X-API-Key`."},
    408: {
        "model": ErrorBody,
        "description": "The body stopped arriving for `LOANOPS_BODY_TIMEOUT_SECONDS`.",
    },
    413: {"model": ErrorBody, "description": "The body is larger than the server accepts."},
    422: {"model": ValidationErrorBody, "description": "A field broke a rule of the schema."},
    503: {"model": ErrorBody, "description": "No model is loaded yet."},
}
