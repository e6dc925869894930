"""Training settings: the dataset, the split, the search and the costs the threshold weighs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from loanops.settings.environment import SettingsGroup, variables_prefixed

ModelFamily = Literal["logreg", "hist_gbt"]


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
