"""Training settings: the dataset, the split, the search and the costs the threshold weighs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from loanops.settings.environment import SettingsGroup, variables_prefixed

ModelFamily = Literal["logreg", "hist_gbt", "scorecard"]


class TrainingSettings(SettingsGroup):
    """How `train` builds a candidate; each field is read from `LOANOPS_<FIELD>`."""

    model_config = variables_prefixed("")

    dataset: str = Field(
        default="lending_club",
        description="Name of the training dataset, or the path of a declaration file (.yaml).",
    )
    source_database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the database a declared dataset's query reads from.",
    )
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
    tune_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Worker processes that share one Optuna study; more than one needs a "
        "storage URL.",
    )
    tune_storage_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the Optuna storage the workers share (a PostgreSQL "
        "database of its own); unset keeps the study in memory.",
    )
    tune_launcher: Literal["process", "prefect"] = Field(
        default="process",
        description="How the train flow starts its tuning workers: local processes, or flow "
        "runs of the tune-worker deployment on the Prefect work pool.",
    )
    tune_heartbeat_seconds: int = Field(
        default=10,
        ge=1,
        le=600,
        description="How often a running trial reports it is alive; after three missed beats "
        "it is marked failed and the other workers make it up.",
    )
    model_families: tuple[ModelFamily, ...] = Field(
        default=("logreg", "hist_gbt", "scorecard"),
        description="Model families the search chooses from.",
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

    validation_min_positives: int = Field(default=50, ge=1)
    validation_unknown_category_tolerance: float = Field(
        default=0.001,
        ge=0,
        lt=1,
        description="Share of rows per column allowed to carry a category outside the schema.",
    )

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

    @field_validator("tune_storage_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # A Secret key must hold a string; the base's empty one means "no shared storage".
        return None if value == "" else value

    @model_validator(mode="after")
    def _workers_share_a_storage(self) -> TrainingSettings:
        if self.tune_workers > 1 and self.tune_storage_url is None:
            raise ValueError(
                f"LOANOPS_TUNE_WORKERS={self.tune_workers} needs LOANOPS_TUNE_STORAGE_URL: "
                "workers share their study through it"
            )
        return self
