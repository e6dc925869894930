"""MLflow tracking and Model Registry: where models, their lineage and gate decisions live.

Production is an alias (`models:/loan-default@production`), never a stage. Every gate decision,
pass or fail, is a run of its own in the promotions experiment, so the log is append-only and
readable in the MLflow UI as well as through `history()`.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models.model import ModelInfo

from loanops.promotion import GateDecision
from loanops.schema import FeatureSchema
from loanops.settings import Settings

MODEL_ARTIFACT = "model"
GATE_DATA_ARTIFACT = "gate/test.parquet"
LOANOPS_METADATA_KEY = "loanops"

# Types inside our own calibrated pipelines that skops does not trust by default. Loading a model
# that needs anything else fails instead of unpickling it, which is the point of using skops.
SKOPS_TRUSTED_TYPES = [
    "functools.partial",
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
]


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured tracking and registry store and return a client.

    The embedded default, SQLite under `settings.home`, gets its folder created here.
    """
    if not settings.tracking_uri:
        settings.home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_registry_uri(settings.mlflow_uri)
    return MlflowClient(tracking_uri=settings.mlflow_uri, registry_uri=settings.mlflow_uri)


def ensure_experiment(client: MlflowClient, name: str, settings: Settings) -> str:
    """The id of experiment `name`, created if missing.

    With a database store and no server, artifacts would land in `./mlruns` of whatever folder
    the process runs in, so new experiments put them under `settings.home` instead.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    served = settings.mlflow_uri.startswith(("http://", "https://", "databricks"))
    location = None if served else settings.artifact_location
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:
        # Another process created it between our lookup and create.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def git_commit() -> str:
    """The checked-out commit, `-dirty` when tracked files changed; `unknown` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


@dataclass(frozen=True)
class ModelCard:
    """What serving needs to know about a model, stored in its MLmodel metadata."""

    threshold: float
    family: str
    params: dict[str, Any]
    dataset: str
    dataset_sha256: str
    cost_false_approve: float
    cost_false_decline: float
    feature_schema: dict[str, Any]
    favourable_values: dict[str, Any] = field(default_factory=dict)
    """Per feature, the value adverse-action reasons compare an applicant with."""

    @property
    def schema(self) -> FeatureSchema:
        return FeatureSchema.model_validate(self.feature_schema)


def model_requirements() -> list[str]:
    """Pinned requirements to load a logged model: exactly what this process trained with.

    Naming them beats MLflow's inference, which imports the model in a subprocess and takes
    about ten seconds per model.
    """
    packages = ("mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy")
    return [f"{name}=={importlib.metadata.version(name)}" for name in packages]


def log_model(
    run_id: str,
    model: Any,
    schema: FeatureSchema,
    input_example: pd.DataFrame,
    card: ModelCard,
) -> ModelInfo:
    """Log a fitted model to a run, with its signature, input example and card."""
    with mlflow.start_run(run_id=run_id):
        info = mlflow.sklearn.log_model(
            model,
            name=MODEL_ARTIFACT,
            signature=schema.mlflow_signature(),
            input_example=input_example,
            pyfunc_predict_fn="predict_proba",
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            metadata={LOANOPS_METADATA_KEY: asdict(card)},
            pip_requirements=model_requirements(),
        )
    return info


def register_version(
    client: MlflowClient, model_name: str, model: ModelInfo, run_id: str, tags: dict[str, str]
) -> ModelVersion:
    """Register a logged model as a new version carrying lineage tags."""
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        try:
            client.create_registered_model(
                model_name, description="Probability of default for consumer loan applications."
            )
        except MlflowException:
            pass  # created concurrently
    return client.create_model_version(
        model_name, source=model.model_uri, run_id=run_id, tags=tags, model_id=model.model_id
    )


def version_by_alias(client: MlflowClient, model_name: str, alias: str) -> ModelVersion | None:
    """The version holding `alias`, or None when no version holds it."""
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def latest_version(client: MlflowClient, model_name: str) -> ModelVersion | None:
    """The most recently registered version of a model."""
    versions = client.search_model_versions(f"name = '{model_name}'")
    return max(versions, key=lambda v: int(v.version), default=None)


def model_card(client: MlflowClient, version: ModelVersion) -> ModelCard:
    """The card stored with a registered version's model."""
    info = mlflow.models.get_model_info(f"models:/{version.name}/{version.version}")
    metadata = (info.metadata or {}).get(LOANOPS_METADATA_KEY)
    if metadata is None:
        raise ValueError(f"{version.name} v{version.version} was not logged by loanops")
    return ModelCard(**metadata)


def load_model(model_name: str, version: str) -> Any:
    """The fitted scikit-learn model of a registered version."""
    return mlflow.sklearn.load_model(f"models:/{model_name}/{version}")


def gate_data(client: MlflowClient, version: ModelVersion, dst: Path) -> pd.DataFrame:
    """The frozen test split logged with a version's training run."""
    if version.run_id is None:
        raise ValueError(f"{version.name} v{version.version} has no training run")
    path = client.download_artifacts(version.run_id, GATE_DATA_ARTIFACT, str(dst))
    return pd.read_parquet(path)


def move_aliases(
    client: MlflowClient,
    settings: Settings,
    challenger: ModelVersion,
    champion: ModelVersion | None,
) -> None:
    """Make the challenger production, keeping the old champion reachable as `previous`."""
    if champion is not None:
        client.set_registered_model_alias(
            settings.model_name, settings.previous_alias, champion.version
        )
    client.set_registered_model_alias(
        settings.model_name, settings.production_alias, challenger.version
    )


@dataclass(frozen=True)
class DecisionRecord:
    """One gate decision as stored: who, what, when, both versions' metrics and why."""

    decided_at: str
    decided_by: str
    model_name: str
    outcome: str
    challenger_version: str
    champion_version: str | None
    reasons: list[str]
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    policy: dict[str, float]
    gate_data_sha256: str
    run_id: str = ""


def record_decision(
    client: MlflowClient,
    settings: Settings,
    decision: GateDecision,
    *,
    decided_by: str,
    gate_data_sha256: str,
) -> DecisionRecord:
    """Append a decision to the promotion log and tag the challenger version with it."""
    experiment_id = ensure_experiment(client, settings.promotion_experiment_name, settings)
    champion = decision.champion
    record = DecisionRecord(
        decided_at=datetime.now(UTC).isoformat(timespec="seconds"),
        decided_by=decided_by,
        model_name=settings.model_name,
        outcome=decision.outcome,
        challenger_version=decision.challenger.version,
        champion_version=champion.version if champion else None,
        reasons=list(decision.reasons),
        challenger_metrics={
            "roc_auc": decision.challenger.roc_auc,
            "ece": decision.challenger.ece,
            **decision.challenger.metrics,
        },
        champion_metrics=(
            {"roc_auc": champion.roc_auc, "ece": champion.ece, **champion.metrics}
            if champion
            else None
        ),
        policy=asdict(decision.policy),
        gate_data_sha256=gate_data_sha256,
    )
    run_name = f"v{record.challenger_version} {record.outcome}"
    if record.champion_version:
        run_name += f" vs v{record.champion_version}"
    run = client.create_run(
        experiment_id,
        run_name=run_name,
        tags={
            "loanops.model_name": record.model_name,
            "loanops.outcome": record.outcome,
            "loanops.challenger_version": record.challenger_version,
            "loanops.champion_version": record.champion_version or "",
            "loanops.decided_by": decided_by,
            "mlflow.note.content": "\n".join(record.reasons),
        },
    )
    run_id = run.info.run_id
    for side, metrics in (
        ("challenger", record.challenger_metrics),
        ("champion", record.champion_metrics or {}),
    ):
        for name, value in metrics.items():
            client.log_metric(run_id, f"{side}_{name}", value)
    for name, value in record.policy.items():
        client.log_param(run_id, f"policy_{name}", value)
    stored = DecisionRecord(**{**asdict(record), "run_id": run_id})
    client.log_dict(run_id, asdict(stored), "decision.json")
    client.set_terminated(run_id)

    for key, value in {
        "gate.outcome": record.outcome,
        "gate.reasons": "; ".join(record.reasons),
        "gate.decided_at": record.decided_at,
        "gate.record_run_id": run_id,
    }.items():
        client.set_model_version_tag(settings.model_name, record.challenger_version, key, value)
    return stored


def history(client: MlflowClient, settings: Settings) -> list[DecisionRecord]:
    """Every gate decision on the configured model, oldest first."""
    experiment = client.get_experiment_by_name(settings.promotion_experiment_name)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`loanops.model_name` = '{settings.model_name}'",
        order_by=["attributes.start_time ASC"],
        max_results=10_000,
    )
    return [
        DecisionRecord(**mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/decision.json"))
        for run in runs
    ]
