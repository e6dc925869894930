"""Whether a model's PD moves the way credit policy declares: a finite-difference test per feature.

Each feature with a declared `risk` is moved one step toward risk on every row of a frame (up for
"increasing", down for "decreasing", held inside the schema's range), all else fixed, and the
mean PD is compared before and after. A model that obeys the declaration never shows a fall; the
promotion gate (`loanops.promotion`) refuses one that does. The step is the feature's standard
deviation on those rows, a whole number of at least one for counts, so it means as much for an
income as for a number of inquiries.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from loanops.schema import Feature, FeatureSchema, RiskDirection

FrameScorer = Callable[[pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class DirectionEffect:
    """How the mean PD of a set of loans changed when one feature moved toward risk."""

    feature: str
    risk: RiskDirection
    step: float
    """How far each loan's value moved (before clipping at the schema's range)."""
    mean_change: float
    """Mean PD after the move minus before; negative means the model contradicts `risk`."""
    rows: int

    @property
    def moved(self) -> str:
        """'rises' or 'falls': the way the feature moved, toward risk."""
        return "rises" if self.risk == "increasing" else "falls"


def step_for(feature: Feature, values: pd.Series) -> float:
    """One standard deviation of `values`; whole and at least one for an integer feature.

    A float feature without spread (constant or all missing) moves by one unit.
    """
    spread = float(values.std())
    if not math.isfinite(spread) or spread <= 0:
        spread = 1.0
    return float(max(1, math.ceil(spread))) if feature.kind == "int" else spread


def toward_risk(feature: Feature, values: pd.Series, step: float) -> pd.Series:
    """`values` moved `step` in the direction that raises risk, held inside the schema's range.

    Missing values stay missing: a missing value is no amount to move.

    Raises:
        ValueError: when the feature declares no direction.
    """
    if feature.risk == "increasing":
        moved = values + step
        if feature.maximum is not None:
            moved = moved.clip(upper=feature.maximum)
    elif feature.risk == "decreasing":
        moved = values - step
        if feature.minimum is not None:
            moved = moved.clip(lower=feature.minimum)
    else:
        raise ValueError(f"feature {feature.name!r} declares no direction of risk")
    # A whole step keeps an integer column whole; keep its dtype too, as the schema casts it.
    return moved.astype(values.dtype) if values.dtype.kind in "iu" else moved


def direction_effects(
    score: FrameScorer, X: pd.DataFrame, schema: FeatureSchema
) -> tuple[DirectionEffect, ...]:
    """The mean-PD change of moving each declared feature toward risk, one feature at a time.

    Args:
        score: PD of each row of a feature frame (e.g. a model's `predict_proba(X)[:, 1]`).
        X: feature rows, as `FeatureSchema.to_frame` gives them: typically the gate data.
        schema: their schema, with the declared directions.

    Returns:
        One effect per feature with a declared `risk`, in schema order.

    Raises:
        ValueError: when `X` has no rows.
    """
    if X.empty:
        raise ValueError("direction effects need at least one row")
    baseline = float(np.mean(score(X)))
    effects = []
    for feature in schema.features:
        if feature.risk is None:
            continue
        values = X[feature.name]
        step = step_for(feature, values)
        moved = X.assign(**{feature.name: toward_risk(feature, values, step)})
        change = float(np.mean(score(moved))) - baseline
        effects.append(DirectionEffect(feature.name, feature.risk, step, change, len(X)))
    return tuple(effects)
