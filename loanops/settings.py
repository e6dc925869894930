"""Runtime configuration: one pydantic-settings class, read through `get_settings()`.

Every field maps to an environment variable `LOANOPS_<FIELD>`; the Kubernetes ConfigMap and
Secret use exactly these names. Nothing here touches the filesystem or MLflow: paths are computed,
not created.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, computed_field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from loanops.model_ref import ModelRef

ModelFamily = Literal["logreg", "hist_gbt"]

# MLflow's rules for registered-model alias names (mlflow.utils.validation): letters, digits,
# `_` and `-`, at most 255 characters; `latest` and version-like names such as `v3` are reserved.
_ALIAS_CHARACTERS = re.compile(r"[A-Za-z0-9_-]+")
_VERSION_ALIAS = re.compile(r"[vV][0-9]+")
_MAX_ALIAS_LENGTH = 255
# Kubernetes names: namespaces and container names are DNS labels (RFC 1123). Deployment names
# may be longer subdomains, but ours are Service-like labels, and one rule is easier to read.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_MAX_DNS_LABEL_LENGTH = 63
# What manifests and templates ship in place of a secret; never a real one.
_PLACEHOLDER = re.compile(r"change[-_]?(this|me)|placeholder|replace[-_]?me|<[^>]*>", re.I)


class Settings(BaseSettings):
    """All loanops configuration, with embedded defaults that need no services."""

    model_config = SettingsConfigDict(
        env_prefix="LOANOPS_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    env: Literal["dev", "staging", "production"] = Field(
        default="dev", description="Deployment environment; only `dev` tolerates embedded defaults."
    )
    home: Path = Field(
        default=Path(".loanops"),
        description="Folder for embedded state: the SQLite tracking store and file artifacts.",
    )
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; unset means SQLite under `home`."
    )

    experiment_name: str = "loan-default"
    promotion_experiment_name: str = Field(
        default="loan-default-promotions",
        description="Experiment holding one run per promotion decision: the append-only gate log.",
    )
    model_name: str = Field(default="loan-default", description="Registered model name.")
    production_alias: str = Field(
        default="production", description="Alias of the version that serves."
    )
    previous_alias: str = Field(
        default="previous", description="Alias of the version that served before it, for rollback."
    )

    dataset: str = Field(default="lending_club", description="Name of the training dataset.")
    dataset_rows: int | None = Field(
        default=None, gt=0, description="Rows to draw, for generated datasets."
    )
    seed: int = Field(
        default=42,
        ge=0,
        lt=2**32,
        description="Seed for the split, the search and the model; numpy takes 0 to 2**32 - 1.",
    )

    test_size: float = Field(default=0.2, gt=0, lt=0.5)
    validation_size: float = Field(
        default=0.25,
        gt=0,
        lt=0.5,
        description="Share of the non-test rows held out to calibrate and pick the threshold.",
    )
    cv_folds: int = Field(default=5, ge=2, le=10)
    tune_trials: int = Field(default=30, ge=1, description="Optuna trial budget.")
    tune_timeout_seconds: float | None = Field(
        default=None, gt=0, description="Optuna time budget; stops tuning at whichever comes first."
    )
    model_families: tuple[ModelFamily, ...] = Field(
        default=("logreg", "hist_gbt"), description="Model families the search chooses from."
    )
    bootstrap_samples: int = Field(default=1000, ge=100)

    cost_false_approve: float = Field(
        default=5.0,
        gt=0,
        description="Cost of approving a loan that defaults (loss given default).",
    )
    cost_false_decline: float = Field(
        default=1.0,
        gt=0,
        description="Cost of declining a loan that would have repaid (lost margin).",
    )

    promotion_min_auc: float = Field(default=0.65, ge=0.5, le=1.0)
    promotion_max_ece: float = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description="Ceiling on the challenger's expected calibration error.",
    )
    promotion_auc_tolerance: float = Field(
        default=0.01,
        ge=0,
        le=0.1,
        description="How far the challenger's AUC may fall below the champion's.",
    )
    promotion_max_calibration_z: float = Field(
        default=3.0,
        gt=0,
        description=(
            "How many standard errors the mean PD may sit from the observed default rate on the "
            "gate data."
        ),
    )
    promotion_min_gate_positives: int = Field(
        default=30,
        ge=1,
        description="Fewest defaults the gate data must hold for a comparison to count.",
    )

    validation_min_positives: int = Field(default=50, ge=1)
    validation_unknown_category_tolerance: float = Field(
        default=0.001,
        ge=0,
        lt=1,
        description="Share of rows per column allowed to carry a category outside the schema.",
    )

    model_ref: str | None = Field(
        default=None,
        description=(
            "Model the serving tier runs: `models:/NAME@ALIAS` follows an alias, "
            "`models:/NAME/VERSION` pins one. Unset follows `production_alias` of `model_name`."
        ),
    )
    model_poll_seconds: float = Field(
        default=10.0, gt=0, description="How often serving checks whether its alias has moved."
    )
    model_load_max_backoff_seconds: float = Field(
        default=30.0, gt=0, description="Longest wait between attempts to load the model at start."
    )
    reasons_top: int = Field(
        default=4, ge=1, le=10, description="Adverse-action reasons returned per application."
    )
    max_sync_batch: int = Field(
        default=1000, ge=1, description="Most applications one `/v1/predict/batch` call may hold."
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest JSON request body the API accepts."
    )
    max_upload_bytes: int = Field(
        default=4 * 1024**3, ge=1024, description="Largest batch-job file the API accepts."
    )
    body_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Longest wait for the next part of a request body (or upload) before the "
        "API answers 408.",
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description=(
            "Comma-separated keys accepted in `X-API-Key`. Required outside dev; unset in dev "
            "leaves the scoring endpoints open."
        ),
    )
    database_url: SecretStr | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the decision log; unset means SQLite under `home`. A secret: it "
            "can carry a password."
        ),
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis of the batch-job queue, e.g. `redis://redis:6379/0`; unset: no jobs.",
    )
    storage_dir: Path | None = Field(
        default=None,
        description="Shared folder for batch-job files and state; unset means `home`/storage.",
    )
    batch_chunk_rows: int = Field(
        default=50_000, ge=100, description="Rows per batch-job chunk, the unit of retry."
    )
    batch_visibility_seconds: float = Field(
        default=900.0,
        gt=0,
        description=(
            "How long a chunk may run before Redis hands it to another worker; a killed worker's "
            "chunk is redelivered after this."
        ),
    )
    decision_log_batch_size: int = Field(
        default=500, ge=1, description="Most decisions the log writes in one transaction."
    )
    decision_log_flush_seconds: float = Field(
        default=0.25, gt=0, description="Longest a decision waits before the log writes it."
    )
    decision_log_ready_backlog: int = Field(
        default=5_000,
        ge=1,
        description=(
            "Decisions recorded but not yet in the database above which /readyz answers 503: "
            "the log is falling behind (at 3,000 requests a second, under 2 s of no progress)."
        ),
    )
    decision_log_memory_backlog: int = Field(
        default=20_000,
        ge=1,
        description=(
            "Most decisions the API holds in memory for the writer (about 5 KB each); beyond "
            "it new ones go to overflow files under the storage folder, written once the "
            "database is back."
        ),
    )

    monitoring_experiment_name: str = Field(
        default="loan-default-monitoring",
        description="Experiment holding one run per monitor or performance run.",
    )
    monitor_window_days: float = Field(
        default=7.0, gt=0, description="Days of the decision log a monitor run looks at."
    )
    monitor_sample_rows: int = Field(
        default=50_000, ge=1_000, description="Rows of the window given to Evidently's tests."
    )
    drift_share_threshold: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="Share of drifted features at which the monitor triggers retraining.",
    )
    prediction_psi_threshold: float = Field(
        default=0.1, gt=0, description="PSI of the score at which the monitor triggers retraining."
    )
    monitor_distance_threshold: float = Field(
        default=0.1,
        gt=0,
        description="A feature drifts when its Wasserstein (normed) or Jensen-Shannon distance "
        "reaches this (windows of at least `monitor_min_rows_for_distance` rows).",
    )
    monitor_p_value_threshold: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="A feature drifts when its KS or chi-square p-value is below this "
        "(smaller windows).",
    )
    monitor_min_rows_for_distance: int = Field(
        default=5_000,
        ge=1,
        description="Rows in both compared samples below which p-value tests replace distances.",
    )
    monitor_null_rate_increase: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="A missingness spike is flagged when a feature's null rate exceeds the "
        "reference's by more than this.",
    )
    monitor_out_of_range_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="A feature is flagged when its share of values outside the schema's range "
        "is above this.",
    )
    monitor_unseen_category_share: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="A feature is flagged when its share of rows in categories absent from the "
        "reference is above this (categories unknown to the schema are flagged at any count).",
    )
    calibration_z_threshold: float = Field(
        default=3.0,
        gt=0,
        description=(
            "Standard errors between mean PD and the observed default rate at which the "
            "performance run triggers retraining."
        ),
    )
    auc_drop_threshold: float = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description="Fall of the labelled AUC below the test AUC that triggers retraining.",
    )
    deploy_target: Literal["none", "kubernetes"] = Field(
        default="none",
        description=(
            "Where `retrain` rolls out a promoted version: `none` stops at the registry, so local "
            "runs never touch a cluster; `kubernetes` runs the deploy flow after the promotion."
        ),
    )
    kube_config: Path | None = Field(
        default=None,
        description=(
            "Kubeconfig file the deploy flow reaches the cluster with. Unset: the pod's own "
            "service account inside the cluster, else KUBECONFIG or ~/.kube/config, as kubectl."
        ),
    )
    kube_namespace: str = Field(
        default="loan-default-prediction",
        description="Namespace of the Deployments the deploy flow pins.",
    )
    kube_deployments: dict[str, str] = Field(
        default_factory=lambda: {"loanops-api": "api", "loanops-worker": "worker"},
        description=(
            "The Deployments the deploy flow pins to a model version, each with the name of the "
            "container that loads the model."
        ),
    )
    rollout_timeout_seconds: float = Field(
        default=1800.0,
        gt=0,
        description=(
            "Longest the deploy flow waits for the Deployments to roll out before it rolls them "
            "back; a backstop behind each Deployment's own progressDeadlineSeconds."
        ),
    )
    retrain_trigger: Literal["subflow", "event", "off"] = Field(
        default="subflow",
        description=(
            "What a crossed threshold does: run `retrain` as a subflow (local), emit the event "
            "a prefect.yaml deployment trigger listens for, or only log it."
        ),
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def model_uri(self) -> str:
        """The model reference in force: the configured one, or the production alias."""
        return self.model_ref or str(ModelRef.following(self.model_name, self.production_alias))

    @property
    def decision_db_url(self) -> str:
        """The decision log's database URL: the configured one, or SQLite under `home`.

        A plain property, not a computed field, so the password it may hold stays out of dumps.
        """
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.home / 'decisions.db').resolve()}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def storage_path(self) -> Path:
        """The batch-job folder in force."""
        return (self.storage_dir or self.home / "storage").resolve()

    @property
    def api_key_values(self) -> tuple[str, ...]:
        """The accepted API keys; empty when auth is off."""
        if self.api_keys is None:
            return ()
        return tuple(k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip())

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mlflow_uri(self) -> str:
        """The tracking URI in force: the configured one, or the embedded SQLite store."""
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def artifact_location(self) -> str:
        """Where new experiments keep artifacts when the tracking store is a local database."""
        return (self.home / "artifacts").resolve().as_uri()

    @field_validator("model_families")
    @classmethod
    def _families_are_non_empty_and_unique(
        cls, families: tuple[ModelFamily, ...]
    ) -> tuple[ModelFamily, ...]:
        if not families:
            raise ValueError("name at least one model family for the search")
        repeated = sorted({family for family in families if families.count(family) > 1})
        if repeated:
            raise ValueError(f"each model family may appear once; repeated: {', '.join(repeated)}")
        return families

    @field_validator("production_alias", "previous_alias")
    @classmethod
    def _alias_is_valid_in_mlflow(cls, alias: str) -> str:
        if not _ALIAS_CHARACTERS.fullmatch(alias):
            raise ValueError(
                f"alias {alias!r} must be non-empty and use only letters, digits, '_' and '-'"
            )
        if len(alias) > _MAX_ALIAS_LENGTH:
            raise ValueError(f"alias must be at most {_MAX_ALIAS_LENGTH} characters")
        if alias.lower() == "latest":
            raise ValueError("alias 'latest' is reserved by MLflow")
        if _VERSION_ALIAS.fullmatch(alias):
            raise ValueError(
                f"alias {alias!r} looks like a version (v<digits>), which MLflow reserves"
            )
        return alias

    @model_validator(mode="after")
    def _aliases_differ(self) -> Settings:
        # Compared without case: the registry's database may not tell them apart.
        if self.production_alias.lower() == self.previous_alias.lower():
            raise ValueError(
                f"production_alias {self.production_alias!r} and previous_alias "
                f"{self.previous_alias!r} name the same alias; they must differ so that the "
                "replaced version stays reachable for rollback"
            )
        return self

    @model_validator(mode="after")
    def _require_explicit_store_outside_dev(self) -> Settings:
        if self.env != "dev" and not self.tracking_uri:
            raise ValueError(
                "LOANOPS_TRACKING_URI must be set outside dev mode; "
                "the embedded SQLite store is for local use only"
            )
        return self

    @field_validator("kube_namespace")
    @classmethod
    def _namespace_is_a_dns_label(cls, namespace: str) -> str:
        if not _DNS_LABEL.fullmatch(namespace) or len(namespace) > _MAX_DNS_LABEL_LENGTH:
            raise ValueError(
                f"namespace {namespace!r} must be a DNS label: at most 63 lowercase letters, "
                "digits and '-', starting and ending with a letter or digit"
            )
        return namespace

    @field_validator("kube_deployments")
    @classmethod
    def _deployments_name_objects_kubernetes_accepts(
        cls, deployments: dict[str, str]
    ) -> dict[str, str]:
        if not deployments:
            raise ValueError("name at least one Deployment for the deploy flow to pin")
        for deployment, container in deployments.items():
            for what, name in (("Deployment", deployment), ("container", container)):
                if not _DNS_LABEL.fullmatch(name) or len(name) > _MAX_DNS_LABEL_LENGTH:
                    raise ValueError(
                        f"{what} name {name!r} must be a DNS label: at most 63 lowercase "
                        "letters, digits and '-', starting and ending with a letter or digit"
                    )
        return deployments

    @field_validator("model_ref")
    @classmethod
    def _model_ref_is_a_registry_uri(cls, ref: str | None) -> str | None:
        if ref is not None:
            try:
                ModelRef.parse(ref)
            except ValueError as error:
                raise ValueError(f"model_ref {error}") from None
        return ref

    @model_validator(mode="after")
    def _refuse_placeholder_secrets_outside_dev(self) -> Settings:
        if self.env == "dev":
            return self
        if not self.api_key_values:
            raise ValueError(f"LOANOPS_API_KEYS must be set when env is {self.env!r}")
        secrets = {"LOANOPS_API_KEYS": self.api_key_values}
        if self.database_url is not None:
            secrets["LOANOPS_DATABASE_URL"] = (self.database_url.get_secret_value(),)
        for name, values in secrets.items():
            if any(_PLACEHOLDER.search(value) for value in values):
                raise ValueError(
                    f"{name} holds a placeholder; set a real secret when env is {self.env!r}"
                )
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
