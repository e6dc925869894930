"""The root settings object, its groups, and `get_settings()`.

Nothing here touches the filesystem or MLflow: paths are computed, not created.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, NonNegativeFloat, computed_field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from loanops.model_ref import ModelRef
from loanops.settings.batch import BatchSettings
from loanops.settings.client import ClientSettings
from loanops.settings.decision_log import DecisionLogSettings
from loanops.settings.environment import (
    ENV_PREFIX,
    GroupedEnvironmentSource,
    GroupedInitSource,
    Variable,
    variables_of,
)
from loanops.settings.gate import GateSettings
from loanops.settings.kube import KubeSettings
from loanops.settings.monitor import MonitorSettings
from loanops.settings.serving import ServingSettings
from loanops.settings.training import TrainingSettings

# MLflow's rules for registered-model alias names (mlflow.utils.validation): letters, digits,
# `_` and `-`, at most 255 characters; `latest` and version-like names such as `v3` are reserved.
_ALIAS_CHARACTERS = re.compile(r"[A-Za-z0-9_-]+")
_VERSION_ALIAS = re.compile(r"[vV][0-9]+")
_MAX_ALIAS_LENGTH = 255
# What manifests and templates ship in place of a secret; never a real one.
_PLACEHOLDER = re.compile(r"change[-_]?(this|me)|placeholder|replace[-_]?me|<[^>]*>", re.I)
TRACKING_RETRY_COUNT = 3
"""How often a flow task retries a call to the tracking server (flows/common.py)."""


class Settings(BaseSettings):
    """All loanops configuration, with embedded defaults that need no services.

    Where things are and what the model is called sit at the top; everything else is in a
    group by concern. Tests override a group field by field, over the environment:
    `Settings(gate=GateSettings(min_auc=0.7))`, or `Settings(gate={"min_auc": 0.7})`.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", hide_input_in_errors=True
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
    tracking_retry_delay_seconds: tuple[NonNegativeFloat, ...] = Field(
        default=(2.0, 5.0, 15.0),
        min_length=1,
        max_length=TRACKING_RETRY_COUNT,
        description=(
            f"Waits before each of a flow task's {TRACKING_RETRY_COUNT} retries of a call to the "
            "tracking server that failed transiently; the last wait repeats if fewer are given. "
            "Read once per process, when the flows define their tasks."
        ),
    )
    experiment_name: str = "loan-default"
    model_name: str = Field(default="loan-default", description="Registered model name.")
    production_alias: str = Field(
        default="production", description="Alias of the version that serves."
    )
    previous_alias: str = Field(
        default="previous", description="Alias of the version that served before it, for rollback."
    )

    training: TrainingSettings = Field(
        default_factory=TrainingSettings, description="How `train` builds a candidate."
    )
    gate: GateSettings = Field(
        default_factory=GateSettings, description="The promotion gate, `LOANOPS_PROMOTION_*`."
    )
    monitor: MonitorSettings = Field(
        default_factory=MonitorSettings, description="The monitor and performance runs."
    )
    serving: ServingSettings = Field(
        default_factory=ServingSettings, description="The model the API runs and its limits."
    )
    decision_log: DecisionLogSettings = Field(
        default_factory=DecisionLogSettings, description="Where decisions are recorded."
    )
    batch: BatchSettings = Field(
        default_factory=BatchSettings, description="The batch-job queue and its chunks."
    )
    kube: KubeSettings = Field(
        default_factory=KubeSettings, description="The cluster the deploy flow pins."
    )
    client: ClientSettings = Field(
        default_factory=ClientSettings, description="The API the CLI's batch commands call."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The stock sources, in their stock order, each taught to read the groups' flat names.
        assert isinstance(env_settings, EnvSettingsSource)
        assert isinstance(dotenv_settings, EnvSettingsSource)
        moved = {v.flat_name: v for v in variables_of(settings_cls).values() if v.group}
        return (
            GroupedInitSource(settings_cls, init_settings, moved),
            GroupedEnvironmentSource(settings_cls, env_settings),
            GroupedEnvironmentSource(settings_cls, dotenv_settings),
            file_secret_settings,
        )

    @classmethod
    def environment_variables(cls) -> dict[str, Variable]:
        """Every `LOANOPS_*` variable the settings read, by name, with the field it sets."""
        return variables_of(cls)

    if not TYPE_CHECKING:
        # Only at run time, so that mypy still reports an unknown attribute.
        def __getattr__(self, name: str) -> Any:
            try:
                return super().__getattr__(name)
            except AttributeError:
                variable = next(
                    (v for v in variables_of(type(self)).values() if v.flat_name == name), None
                )
                if variable is None or variable.group is None:
                    raise
                raise AttributeError(
                    f"{type(self).__name__!r} object has no attribute {name!r}: it is "
                    f"{variable.path} now"
                ) from None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def model_uri(self) -> str:
        """The model reference in force: the configured one, or the production alias."""
        return self.serving.model_ref or str(
            ModelRef.following(self.model_name, self.production_alias)
        )

    @property
    def decision_db_url(self) -> str:
        """The decision log's database URL: the configured one, or SQLite under `home`.

        A plain property, not a computed field, so the password it may hold stays out of dumps.
        """
        if self.decision_log.database_url is not None:
            return self.decision_log.database_url.get_secret_value()
        return f"sqlite:///{(self.home / 'decisions.db').resolve()}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def storage_path(self) -> Path:
        """The batch-job folder in force."""
        return (self.batch.storage_dir or self.home / "storage").resolve()

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

    @model_validator(mode="after")
    def _refuse_placeholder_secrets_outside_dev(self) -> Settings:
        if self.env == "dev":
            return self
        if not self.serving.api_key_values:
            raise ValueError(f"LOANOPS_API_KEYS must be set when env is {self.env!r}")
        secrets = {"LOANOPS_API_KEYS": self.serving.api_key_values}
        if self.decision_log.database_url is not None:
            secrets["LOANOPS_DATABASE_URL"] = (self.decision_log.database_url.get_secret_value(),)
        if self.training.tune_storage_url is not None:
            secrets["LOANOPS_TUNE_STORAGE_URL"] = (
                self.training.tune_storage_url.get_secret_value(),
            )
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
