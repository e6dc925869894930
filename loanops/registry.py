"""MLflow tracking and Model Registry: where models, their lineage and their aliases live.

Production is an alias (`models:/loan-default@production`), never a stage. The gate decisions
and deploy outcomes on those versions are kept apart, in `loanops.promotion_log`.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models.model import ModelInfo

from loanops.model_ref import ModelRef
from loanops.schema import FeatureSchema
from loanops.settings import Settings

MODEL_ARTIFACT = "model"
GATE_DATA_ARTIFACT = "gate/test.parquet"
REFERENCE_ARTIFACT = "reference"
"""The monitoring reference of a version's training run: sample and statistics."""
LOANOPS_METADATA_KEY = "loanops"

# Types inside our own calibrated pipelines that skops does not trust by default. Loading a model
# that needs anything else fails instead of unpickling it, which is the point of using skops.
SKOPS_TRUSTED_TYPES = [
    "functools.partial",
    "loanops.constrained.SignConstrainedLogisticRegression",
    "loanops.scorecard.FeatureBins",
    "loanops.scorecard.WoEEncoder",
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
