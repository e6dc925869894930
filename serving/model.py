"""The model the serving tier runs: loading a registered version, and scoring with it.

A `LoadedModel` is immutable and complete: the compiled scorer, its threshold, its explainer and
its card. Swapping models means swapping one reference, so a request that took a model finishes
on it. The API (`serving.state`) and the batch workers (`serving.batch`) both load through
`load_version`, which smoke-tests a model before anyone may use it.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ValidationError

from loanops.explain import Explainer, Reason
from loanops.model_ref import ModelRef
from loanops.registry import LOANOPS_METADATA_KEY, ModelCard
from loanops.schema import FeatureSchema
from loanops.scorecard import Scorecard, points_table
from serving.scorer.compiled import CompiledScorer
from serving.scorer.parts import UnsupportedModelError

logger = logging.getLogger(__name__)

Decision = Literal["approve", "decline"]
FloatArray = np.ndarray

# Metrics of the training run that `/v1/model` reports.
REPORTED_METRICS = (
    "test_roc_auc",
    "test_roc_auc_lo",
    "test_roc_auc_hi",
    "test_ks",
    "test_ece",
    "test_brier",
    "cv_roc_auc",
)


class ModelLoadError(RuntimeError):
    """A version that cannot serve: unreachable, not a loanops model, or failing its smoke test."""


def resolve_version(client: MlflowClient, ref: ModelRef) -> str:
    """The version `ref` names now.

    Raises:
        ModelLoadError: when the alias or version does not exist.
        MlflowException: when the registry cannot be reached (transient: retry).
    """
    if ref.version is not None:
        return ref.version
    try:
        return str(client.get_model_version_by_alias(ref.name, str(ref.alias)).version)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ModelLoadError(f"no version of {ref.name!r} holds alias {ref.alias!r}") from error
        raise


@dataclass(frozen=True)
class Scored:
    """One application, scored."""

    probability: float
    decision: Decision
    reasons: list[Reason]


@dataclass(frozen=True)
class LoadedModel:
    """A registered version, compiled, smoke-tested and ready to score."""

    name: str
    version: str
    run_id: str | None
    card: ModelCard
    scorer: CompiledScorer
    explainer: Explainer
    input_example: list[dict[str, Any]]
    metrics: dict[str, float] = field(default_factory=dict)
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    scorecard: Scorecard | None = None
    """The points table, when the model is a scorecard."""

    @property
    def threshold(self) -> float:
        return self.card.threshold

    @property
    def schema(self) -> FeatureSchema:
        return self.scorer.schema

    def decide(self, probability: float) -> Decision:
        return "decline" if probability >= self.card.threshold else "approve"

    def score(self, rows: Sequence[Mapping[str, Any]], *, top_reasons: int) -> list[Scored]:
        """Probability, decision and adverse-action reasons for validated applications."""
        probabilities = self.scorer.score_rows(rows)
        return [
            Scored(
                probability=float(p),
                decision=self.decide(float(p)),
                reasons=self.explainer.reasons(row, float(p), top=top_reasons),
            )
            for row, p in zip(rows, probabilities, strict=True)
        ]

    def score_frame(
        self, frame: pd.DataFrame, *, cast: bool = True
    ) -> tuple[FloatArray, np.ndarray]:
        """Probabilities and decisions (`approve`/`decline`) for a frame of validated rows.

        `cast` as in `CompiledScorer.score_frame`.
        """
        probabilities = self.scorer.score_frame(frame, cast=cast)
        decisions = np.where(probabilities >= self.card.threshold, "decline", "approve")
        return probabilities, decisions


def load_version(
    client: MlflowClient,
    name: str,
    version: str,
    *,
    expected_schema: FeatureSchema | None = None,
) -> LoadedModel:
    """Download, compile and smoke-test one registered version.

    Args:
        client: registry client.
        name: registered model name.
        version: the version to load.
        expected_schema: the input contract the caller serves; a version trained on another
            schema is refused rather than swapped in under clients that speak the old one.

    Returns:
        The loaded model.

    Raises:
        ModelLoadError: when the version cannot serve; the message says why.
        MlflowException: when the registry or artifact store is unreachable (transient).
    """
    import mlflow.artifacts
    import mlflow.sklearn
    from mlflow.models import Model

    model_version = client.get_model_version(name, version)
    with tempfile.TemporaryDirectory(prefix="loanops-serve-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=str(ModelRef.pinned(name, version)), dst_path=tmp
        )
        mlmodel = Model.load(Path(local))
        metadata = (mlmodel.metadata or {}).get(LOANOPS_METADATA_KEY)
        if metadata is None:
            raise ModelLoadError(f"{name} v{version} was not logged by loanops (no model card)")
        card = ModelCard(**metadata)
        try:
            fitted = mlflow.sklearn.load_model(local)
        except Exception as error:  # skops refuses untrusted types, files may be corrupt
            raise ModelLoadError(f"{name} v{version} cannot be loaded: {error}") from error
        example = mlmodel.load_input_example(local)
    schema = card.schema
    if expected_schema is not None and schema.input_contract() != expected_schema.input_contract():
        raise ModelLoadError(
            f"{name} v{version} was trained on schema {schema.name!r}, which differs from the "
            f"schema {expected_schema.name!r} this server accepts"
        )
    try:
        scorer = CompiledScorer.compile(fitted, schema)
    except UnsupportedModelError as error:
        raise ModelLoadError(
            f"{name} v{version} cannot be compiled for serving: {error}"
        ) from error
    explainer = Explainer(
        schema, card.favourable_values, scorer.score_rows, scorer.score_row_variants
    )
    loaded = LoadedModel(
        name=name,
        version=str(version),
        run_id=model_version.run_id,
        card=card,
        scorer=scorer,
        explainer=explainer,
        input_example=_example_rows(example),
        metrics=_run_metrics(client, model_version.run_id),
        scorecard=points_table(fitted) if card.family == "scorecard" else None,
    )
    smoke_test(loaded)
    return loaded


def smoke_test(model: LoadedModel) -> None:
    """Score the model's own input example through the request contract, end to end.

    Raises:
        ModelLoadError: when the example is missing, does not validate, or scores badly.
    """
    if not model.input_example:
        raise ModelLoadError(f"{model.name} v{model.version} has no input example to test with")
    request_model: type[BaseModel] = model.schema.request_model()
    try:
        rows = [request_model.model_validate(r).model_dump() for r in model.input_example]
    except ValidationError as error:
        raise ModelLoadError(
            f"{model.name} v{model.version}: its input example breaks the request contract: "
            f"{error.errors()[0]['loc']} {error.errors()[0]['msg']}"
        ) from error
    scored = model.score(rows, top_reasons=1)
    bad = [s.probability for s in scored if not 0.0 <= s.probability <= 1.0]
    if bad:
        raise ModelLoadError(f"{model.name} v{model.version} scored its example as {bad[0]}")


def _example_rows(example: Any) -> list[dict[str, Any]]:
    if example is None:
        return []
    frame = example if isinstance(example, pd.DataFrame) else pd.DataFrame(example)
    return [
        {key: _plain(value) for key, value in record.items()}
        for record in frame.to_dict(orient="records")
    ]


def _plain(value: Any) -> Any:
    """A JSON value as a client would send it: None for missing, int for whole counts."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _run_metrics(client: MlflowClient, run_id: str | None) -> dict[str, float]:
    if run_id is None:
        return {}
    metrics = client.get_run(run_id).data.metrics
    return {key: float(metrics[key]) for key in REPORTED_METRICS if key in metrics}
