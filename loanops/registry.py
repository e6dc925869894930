"""MLflow tracking and Model Registry: where models, their lineage and gate decisions live.

Production is an alias (`models:/loan-default@production`), never a stage. Every gate decision,
pass or fail, is a run of its own in the promotions experiment, so the log is append-only and
readable in the MLflow UI as well as through `history()`. So is every deploy outcome (a version
rolled out, or rolled back with the alias moved back): `deploy_history()` reads those.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib.metadata
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models.model import ModelInfo

from loanops.model_ref import ModelRef
from loanops.promotion import GateDecision
from loanops.schema import FeatureSchema
from loanops.settings import Settings

MODEL_ARTIFACT = "model"
GATE_DATA_ARTIFACT = "gate/test.parquet"
REFERENCE_ARTIFACT = "reference"
"""The monitoring reference of a version's training run: sample and statistics."""
LOANOPS_METADATA_KEY = "loanops"
RECORD_KIND_TAG = "loanops.record_kind"
"""Tells the promotion log's two kinds of run apart: `gate` decisions and `deploy` outcomes."""

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
    """The commit of the loanops code that runs, `-dirty` with local changes; else `unknown`.

    Git runs in the package's own folder, so the answer is about this code, not about whatever
    repository the process happens to start in.
    """
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            cwd=here,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            cwd=here,
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

    Naming them beats MLflow's inference, which imports the model in a subprocess for each
    model it logs.
    """
    packages = ("mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy")
    return [f"{name}=={importlib.metadata.version(name)}" for name in packages]


def log_model(
    client: MlflowClient,
    run_id: str,
    model: Any,
    schema: FeatureSchema,
    input_example: pd.DataFrame,
    card: ModelCard,
) -> ModelInfo:
    """Log a fitted model to a run, with its signature, input example and card.

    The logged model is created in the run's experiment first and filled by `log_model`, which
    leaves the run open: `mlflow.start_run(run_id=...)` as a context would mark it FINISHED
    while the flow still has work to do on it.
    """
    run = client.get_run(run_id)
    logged = client.create_logged_model(
        experiment_id=run.info.experiment_id,
        name=MODEL_ARTIFACT,
        source_run_id=run_id,
        params=run.data.params,
    )
    return mlflow.sklearn.log_model(
        model,
        name=MODEL_ARTIFACT,
        model_id=logged.model_id,
        run_id=run_id,
        signature=schema.mlflow_signature(),
        input_example=input_example,
        pyfunc_predict_fn="predict_proba",
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
        metadata={LOANOPS_METADATA_KEY: asdict(card)},
        pip_requirements=model_requirements(),
    )


def register_version(
    client: MlflowClient, model_name: str, model: ModelInfo, run_id: str, tags: dict[str, str]
) -> ModelVersion:
    """Register a logged model as a new version carrying lineage tags.

    A run registers at most one version: when a retry follows a registration whose reply was
    lost, the version already there is returned instead of a second one.
    """
    existing = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    if existing:
        return existing[0]
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
    """The version holding `alias`, or None when the model or the alias does not exist.

    Any other failure is raised: a gate that took an outage for "no champion" would let the
    floors alone decide.
    """
    try:
        model = client.get_registered_model(model_name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if alias not in model.aliases:
        return None
    return client.get_model_version(model_name, str(model.aliases[alias]))


def latest_version(client: MlflowClient, model_name: str) -> ModelVersion | None:
    """The most recently registered version of a model."""
    versions = client.search_model_versions(f"name = '{model_name}'")
    return max(versions, key=lambda v: int(v.version), default=None)


def model_card(client: MlflowClient, version: ModelVersion) -> ModelCard:
    """The card stored with a registered version's model."""
    info = mlflow.models.get_model_info(str(ModelRef.pinned(version.name, version.version)))
    metadata = (info.metadata or {}).get(LOANOPS_METADATA_KEY)
    if metadata is None:
        raise ValueError(f"{version.name} v{version.version} was not logged by loanops")
    return ModelCard(**metadata)


def load_model(model_name: str, version: str) -> Any:
    """The fitted scikit-learn model of a registered version.

    The download goes to a folder removed on return: MLflow would otherwise leave a copy in
    /tmp for every load, which a long-running worker accumulates.
    """
    with tempfile.TemporaryDirectory(prefix="loanops-model-") as tmp:
        return mlflow.sklearn.load_model(str(ModelRef.pinned(model_name, version)), dst_path=tmp)


def reference_folder(client: MlflowClient, version: ModelVersion, dst: Path) -> Path:
    """Download the monitoring reference logged with a version's training run."""
    if version.run_id is None:
        raise ValueError(f"{version.name} v{version.version} has no training run")
    return Path(client.download_artifacts(version.run_id, REFERENCE_ARTIFACT, str(dst)))


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
    decision_id: str = ""
    run_id: str = ""


def operator() -> str:
    """Who is running this process, for the record; a container user may have no name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def decision_id(model_name: str, challenger_version: str, flow_run_id: str | None) -> str:
    """The same id for every retry of one gate run, so a retry cannot append a duplicate."""
    basis = f"{model_name}:{challenger_version}:{flow_run_id or datetime.now(UTC).isoformat()}"
    return hashlib.sha256(basis.encode()).hexdigest()[:32]


def _scores(scores: Any) -> dict[str, float]:
    return {
        "roc_auc": scores.roc_auc,
        "ece": scores.ece,
        "mean_pd": scores.mean_pd,
        "default_rate": scores.default_rate,
        "pd_variance": scores.pd_variance,
        "calibration_z": scores.calibration_z,
        "rows": float(scores.rows),
        "positives": float(scores.positives),
        **scores.metrics,
    }


def record_decision(
    client: MlflowClient,
    settings: Settings,
    decision: GateDecision,
    *,
    decided_by: str,
    gate_data_sha256: str,
    decision_key: str,
) -> DecisionRecord:
    """Append a decision to the promotion log, once per `decision_key`.

    The record is a run in the promotions experiment: tags to filter on, both versions'
    metrics, the policy, and `decision.json`. The tag `loanops.record_complete` is written last,
    so a run cut short is never read as a decision. A retry with the same key finds the
    complete record and returns it instead of writing a second one.
    """
    experiment_id = ensure_experiment(client, settings.gate.experiment_name, settings)
    existing = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`loanops.decision_id` = '{decision_key}' "
            "and tags.`loanops.record_complete` = 'true'"
        ),
        max_results=1,
    )
    if existing:
        return DecisionRecord(
            **mlflow.artifacts.load_dict(f"runs:/{existing[0].info.run_id}/decision.json")
        )
    champion = decision.champion
    record = DecisionRecord(
        decided_at=datetime.now(UTC).isoformat(timespec="seconds"),
        decided_by=decided_by,
        model_name=settings.model_name,
        outcome=decision.outcome,
        challenger_version=decision.challenger.version,
        champion_version=decision.champion_version,
        reasons=list(decision.reasons),
        challenger_metrics=_scores(decision.challenger),
        champion_metrics=_scores(champion) if champion else None,
        policy=asdict(decision.policy),
        gate_data_sha256=gate_data_sha256,
        decision_id=decision_key,
    )
    run_name = f"v{record.challenger_version} {record.outcome}"
    if record.champion_version:
        run_name += f" vs v{record.champion_version}"
    run = client.create_run(
        experiment_id,
        run_name=run_name,
        tags={
            "loanops.model_name": record.model_name,
            "loanops.decision_id": decision_key,
            "loanops.outcome": record.outcome,
            "loanops.challenger_version": record.challenger_version,
            "loanops.champion_version": record.champion_version or "",
            "loanops.decided_by": decided_by,
            RECORD_KIND_TAG: "gate",
            "mlflow.note.content": "\n".join(record.reasons),
        },
    )
    run_id = run.info.run_id
    client.log_batch(
        run_id,
        metrics=[
            Metric(f"{side}_{name}", value, 0, 0)
            for side, metrics in (
                ("challenger", record.challenger_metrics),
                ("champion", record.champion_metrics or {}),
            )
            for name, value in metrics.items()
        ],
        params=[Param(f"policy_{name}", str(value)) for name, value in record.policy.items()],
    )
    stored = DecisionRecord(**{**asdict(record), "run_id": run_id})
    client.log_dict(run_id, asdict(stored), "decision.json")
    client.set_tag(run_id, "loanops.record_complete", "true")
    client.set_terminated(run_id)
    return stored


def tag_version_with_decision(
    client: MlflowClient, settings: Settings, record: DecisionRecord
) -> None:
    """Show a version's latest gate decision on the version itself; the log keeps them all."""
    for key, value in {
        "gate.outcome": record.outcome,
        "gate.reasons": "; ".join(record.reasons),
        "gate.decided_at": record.decided_at,
        "gate.record_run_id": record.run_id,
    }.items():
        client.set_model_version_tag(settings.model_name, record.challenger_version, key, value)


def _complete_records(client: MlflowClient, settings: Settings) -> list[Any]:
    """Every complete run of the promotion log on the configured model, oldest first."""
    experiment = client.get_experiment_by_name(settings.gate.experiment_name)
    if experiment is None:
        return []
    runs: list[Any] = client.search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.`loanops.model_name` = '{settings.model_name}' "
            "and tags.`loanops.record_complete` = 'true'"
        ),
        order_by=["attributes.start_time ASC"],
        max_results=10_000,
    )
    return runs


def history(client: MlflowClient, settings: Settings) -> list[DecisionRecord]:
    """Every complete gate decision on the configured model, oldest first."""
    return [
        DecisionRecord(**mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/decision.json"))
        for run in _complete_records(client, settings)
        # Records written before the kind tag existed are all gate decisions.
        if run.data.tags.get(RECORD_KIND_TAG, "gate") == "gate"
    ]


@dataclass(frozen=True)
class DeployRecord:
    """One deploy outcome as stored: which version, where, what became of it and why."""

    deployed_at: str
    deployed_by: str
    model_name: str
    outcome: str
    """`deployed`; `rolled_back` when a rollout failed or timed out and was undone;
    `rollback_failed` when a Deployment could not be put back."""
    version: str
    previous_version: str | None
    """The champion before `version`: what the production alias goes back to on a rollback."""
    production_version: str | None
    """Where the production alias points once the deploy is over."""
    namespace: str
    rollouts: dict[str, str]
    """Per Deployment, the last word on its rollout (and rollback)."""
    reasons: list[str]
    deploy_id: str = ""
    run_id: str = ""


def deploy_id(model_name: str, version: str, flow_run_id: str | None) -> str:
    """The same id for every retry of one deploy run, so a retry cannot append a duplicate."""
    basis = f"deploy:{model_name}:{version}:{flow_run_id or datetime.now(UTC).isoformat()}"
    return hashlib.sha256(basis.encode()).hexdigest()[:32]


def record_deploy(
    client: MlflowClient, settings: Settings, record: DeployRecord, *, deploy_key: str
) -> DeployRecord:
    """Append a deploy outcome to the promotion log, once per `deploy_key`.

    Stored like a gate decision: a run in the promotions experiment with tags to filter on and
    `deploy.json`, marked complete last. The version also carries its latest deploy outcome as
    tags, as it carries its gate outcome.
    """
    experiment_id = ensure_experiment(client, settings.gate.experiment_name, settings)
    existing = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`loanops.deploy_id` = '{deploy_key}' and tags.`loanops.record_complete` = 'true'"
        ),
        max_results=1,
    )
    if existing:
        return DeployRecord(
            **mlflow.artifacts.load_dict(f"runs:/{existing[0].info.run_id}/deploy.json")
        )
    run = client.create_run(
        experiment_id,
        run_name=f"v{record.version} {record.outcome.replace('_', ' ')}",
        tags={
            "loanops.model_name": record.model_name,
            "loanops.deploy_id": deploy_key,
            "loanops.outcome": record.outcome,
            "loanops.version": record.version,
            "loanops.previous_version": record.previous_version or "",
            "loanops.decided_by": record.deployed_by,
            "loanops.namespace": record.namespace,
            RECORD_KIND_TAG: "deploy",
            "mlflow.note.content": "\n".join(record.reasons),
        },
    )
    run_id = run.info.run_id
    stored = DeployRecord(**{**asdict(record), "deploy_id": deploy_key, "run_id": run_id})
    client.log_dict(run_id, asdict(stored), "deploy.json")
    client.set_tag(run_id, "loanops.record_complete", "true")
    client.set_terminated(run_id, status="FINISHED" if record.outcome == "deployed" else "FAILED")
    for key, value in {
        "deploy.outcome": stored.outcome,
        "deploy.deployed_at": stored.deployed_at,
        "deploy.record_run_id": run_id,
    }.items():
        client.set_model_version_tag(settings.model_name, stored.version, key, value)
    return stored


def deploy_history(client: MlflowClient, settings: Settings) -> list[DeployRecord]:
    """Every complete deploy outcome on the configured model, oldest first."""
    return [
        DeployRecord(**mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/deploy.json"))
        for run in _complete_records(client, settings)
        if run.data.tags.get(RECORD_KIND_TAG) == "deploy"
    ]
