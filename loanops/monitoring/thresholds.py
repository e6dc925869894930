"""When a monitor run calls something drifted or flags it, and which drift tests it may use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from loanops.settings import Settings

DriftMethod = Literal["wasserstein", "jensenshannon", "ks", "chisquare"]
"""Evidently stat-test names: two distances (drift at >= threshold), two p-values (< threshold)."""
DriftFamily = Literal["distance", "p_value"]
"""Distances on large windows, p-value tests on small ones (see `loanops.monitoring`)."""
P_VALUE_METHODS: Final = frozenset({"ks", "chisquare"})


class MonitorThresholds(BaseModel):
    """When a monitor run calls something drifted or flags it.

    The defaults are Evidently's distance threshold and the usual PSI reading (below 0.1 stable,
    0.1-0.25 moderate shift, above 0.25 major). On the synthetic generator a covariate shift
    (`z_shift=-0.5`) drifts 7 of 20 features (share 0.35) and moves the score's PSI to 0.15;
    no drift and the macro shock give a share of 0 and a PSI of about 0.001.

    Each knob is a setting (see `monitor_thresholds`), so a deployment tunes them without code.
    """

    model_config = ConfigDict(frozen=True)

    distance: float = Field(
        default=0.1, gt=0, description="Drift when a Wasserstein (normed) or JS distance >= this."
    )
    p_value: float = Field(
        default=0.05, gt=0, lt=1, description="Drift when a KS or chi-square p-value < this."
    )
    min_rows_for_distance: int = Field(
        default=5_000,
        ge=1,
        description="Rows (in both compared samples) below which p-value tests replace distances.",
    )
    drift_share: float = Field(
        default=0.25, gt=0, le=1, description="Dataset drift when this share of features drifts."
    )
    prediction_psi: float = Field(
        default=0.1, gt=0, description="Prediction drift when the PSI of the score >= this."
    )
    null_rate_increase: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="Missingness spike when a null rate exceeds the reference's by more than this.",
    )
    out_of_range_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Flag a feature whose out-of-range share is above this.",
    )
    unseen_category_share: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Flag a feature whose rows in categories absent from the reference exceed "
        "this share. Categories unknown to the schema are flagged at any count.",
    )

    def for_method(self, method: DriftMethod) -> float:
        """The threshold a drift test of this method is judged by."""
        return self.p_value if method in P_VALUE_METHODS else self.distance


def monitor_thresholds(settings: Settings) -> MonitorThresholds:
    """The thresholds a deployment configured: every knob comes from its `LOANOPS_` setting.

    Args:
        settings: The loanops settings.

    Returns:
        The monitor thresholds those settings describe.
    """
    return MonitorThresholds(
        distance=settings.monitor.distance_threshold,
        p_value=settings.monitor.p_value_threshold,
        min_rows_for_distance=settings.monitor.min_rows_for_distance,
        drift_share=settings.monitor.drift_share_threshold,
        prediction_psi=settings.monitor.prediction_psi_threshold,
        null_rate_increase=settings.monitor.null_rate_increase,
        out_of_range_share=settings.monitor.out_of_range_share,
        unseen_category_share=settings.monitor.unseen_category_share,
    )
