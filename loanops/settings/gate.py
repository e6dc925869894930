"""Promotion gate settings: the floors a challenger must clear, read from `LOANOPS_PROMOTION_*`."""

from __future__ import annotations

from pydantic import Field

from loanops.settings.environment import SettingsGroup, variables_prefixed


class GateSettings(SettingsGroup):
    """The promotion gate; each field is read from `LOANOPS_PROMOTION_<FIELD>`."""

    model_config = variables_prefixed("PROMOTION_")

    experiment_name: str = Field(
        default="loan-default-promotions",
        description="Experiment holding one run per promotion decision: the append-only gate log.",
    )
    min_auc: float = Field(default=0.65, ge=0.5, le=1.0)
    max_ece: float = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description="Ceiling on the challenger's expected calibration error.",
    )
    auc_tolerance: float = Field(
        default=0.01,
        ge=0,
        le=0.1,
        description="How far the challenger's AUC may fall below the champion's.",
    )
    max_calibration_z: float = Field(
        default=3.0,
        gt=0,
        description=(
            "How many standard errors the mean PD may sit from the observed default rate on the "
            "gate data."
        ),
    )
    min_gate_positives: int = Field(
        default=30,
        ge=1,
        description="Fewest defaults the gate data must hold for a comparison to count.",
    )
    min_adverse_impact_ratio: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description=(
            "Floor on each fair-lending segment's adverse impact ratio: the least favoured "
            "group's approval rate over the most favoured group's."
        ),
    )
    adverse_impact_tolerance: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="How far the challenger's adverse impact ratio may fall below the champion's.",
    )
    min_group_rows: int = Field(
        default=30,
        ge=1,
        description="Fewest gate loans a group needs to count in its adverse impact ratio.",
    )
    maker_checker: bool = Field(
        default=False,
        description=(
            "Whether a promotion the gate passes waits for a second person to approve it "
            "(`loanops models approve`, or the Prefect UI) before any alias moves."
        ),
    )
    approval_timeout_seconds: int = Field(
        default=86_400,
        ge=1,
        description="How long a promotion waits for approval before it counts as rejected.",
    )
    approval_poll_seconds: int = Field(
        default=10,
        ge=1,
        description="How often a waiting promotion asks the Prefect server for an answer.",
    )
