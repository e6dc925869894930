"""Monitoring settings: the window, the sample and the thresholds that trigger retraining."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from loanops.settings.environment import SettingsGroup, variables_prefixed


class MonitorSettings(SettingsGroup):
    """The monitor and performance runs; fields are read from `LOANOPS_MONITOR_<FIELD>`.

    The first thresholds predate the prefix and keep their own variables.
    """

    model_config = variables_prefixed("MONITOR_")

    experiment_name: str = Field(
        default="loan-default-monitoring",
        validation_alias="LOANOPS_MONITORING_EXPERIMENT_NAME",
        description="Experiment holding one run per monitor or performance run.",
    )
    window_days: float = Field(
        default=7.0, gt=0, description="Days of the decision log a monitor run looks at."
    )
    sample_rows: int = Field(
        default=50_000, ge=1_000, description="Rows of the window given to Evidently's tests."
    )
    drift_share_threshold: float = Field(
        default=0.25,
        gt=0,
        le=1,
        validation_alias="LOANOPS_DRIFT_SHARE_THRESHOLD",
        description="Share of drifted features at which the monitor triggers retraining.",
    )
    prediction_psi_threshold: float = Field(
        default=0.1,
        gt=0,
        validation_alias="LOANOPS_PREDICTION_PSI_THRESHOLD",
        description="PSI of the score at which the monitor triggers retraining.",
    )
    distance_threshold: float = Field(
        default=0.1,
        gt=0,
        description="A feature drifts when its Wasserstein (normed) or Jensen-Shannon distance "
        "reaches this (windows of at least `min_rows_for_distance` rows).",
    )
    p_value_threshold: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="A feature drifts when its KS or chi-square p-value is below this "
        "(smaller windows).",
    )
    min_rows_for_distance: int = Field(
        default=5_000,
        ge=1,
        description="Rows in both compared samples below which p-value tests replace distances.",
    )
    null_rate_increase: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="A missingness spike is flagged when a feature's null rate exceeds the "
        "reference's by more than this.",
    )
    out_of_range_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="A feature is flagged when its share of values outside the schema's range "
        "is above this.",
    )
    unseen_category_share: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="A feature is flagged when its share of rows in categories absent from the "
        "reference is above this (categories unknown to the schema are flagged at any count).",
    )
    calibration_z_threshold: float = Field(
        default=3.0,
        gt=0,
        validation_alias="LOANOPS_CALIBRATION_Z_THRESHOLD",
        description=(
            "Standard errors between mean PD and the observed default rate at which the "
            "performance run triggers retraining."
        ),
    )
    auc_drop_threshold: float = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        validation_alias="LOANOPS_AUC_DROP_THRESHOLD",
        description="Fall of the labelled AUC below the test AUC that triggers retraining.",
    )
    retrain_trigger: Literal["subflow", "event", "off"] = Field(
        default="subflow",
        validation_alias="LOANOPS_RETRAIN_TRIGGER",
        description=(
            "What a crossed threshold does: run `retrain` as a subflow (local), emit the event "
            "a prefect.yaml deployment trigger listens for, or only log it."
        ),
    )
