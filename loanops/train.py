"""Fitting the chosen configuration, calibrating it, and fixing its decision threshold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from loanops.evaluate import CostMatrix, choose_threshold
from loanops.explain import favourable_values
from loanops.features import Split, build_model
from loanops.schema import FeatureSchema
from loanops.scorecard import best_values
from loanops.settings import ModelFamily


@dataclass(frozen=True)
class TrainedModel:
    """A calibrated classifier and the threshold at which it declines."""

    model: CalibratedClassifierCV
    family: ModelFamily
    params: dict[str, Any]
    threshold: float

    def predict_pd(self, X: Any) -> np.ndarray:
        """Calibrated probability of default per row."""
        return np.asarray(self.model.predict_proba(X)[:, 1])

    def favourable_values(self, X: Any, schema: FeatureSchema, *, seed: int) -> dict[str, Any]:
        """The values adverse-action reasons compare applicants with, from reference rows `X`.

        A scorecard's are values in each feature's least risky bin, so its reasons are the bins
        that cost the applicant the most points; the other families' come from a search over
        `X` (`loanops.explain.favourable_values`).
        """
        if self.family == "scorecard":
            return best_values(self.model, schema)
        return favourable_values(self.predict_pd, X, schema, seed=seed)


def fit(
    schema: FeatureSchema,
    family: ModelFamily,
    params: dict[str, Any],
    train: Split,
    validation: Split,
    costs: CostMatrix,
    seed: int,
) -> TrainedModel:
    """Fit on the train split, calibrate and choose the threshold on the validation split.

    Platt (sigmoid) calibration is used rather than isotonic: with a few hundred defaults in the
    validation split, isotonic regression overfits its steps, while two parameters do not.
    """
    pipeline = build_model(schema, family, params, seed).fit(train.X, train.y)
    calibrated = CalibratedClassifierCV(FrozenEstimator(pipeline), method="sigmoid")
    calibrated.fit(validation.X, validation.y)
    p_validation = calibrated.predict_proba(validation.X)[:, 1]
    threshold = choose_threshold(validation.y, p_validation, costs)
    return TrainedModel(model=calibrated, family=family, params=params, threshold=threshold)
