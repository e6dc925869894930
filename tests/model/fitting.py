"""Fitting the behaviour-test models: fixed good configurations, trained as the flow trains.

Each model is fitted on the train split, calibrated and thresholded on the validation split, and
judged on the frozen test split, exactly as the training flow does, but with a fixed
configuration instead of a search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression

from loanops.evaluate import CostMatrix, choose_threshold
from loanops.features import Splits, split_frame
from loanops.schema import FeatureSchema
from loanops.settings import ModelFamily, Settings
from loanops.train import TrainedModel, fit

CONFIGS: dict[ModelFamily, dict[str, Any]] = {
    "logreg": {"C": 0.015, "log_amounts": True},
    "hist_gbt": {
        "learning_rate": 0.1,
        "max_leaf_nodes": 15,
        "min_samples_leaf": 50,
        "l2_regularization": 1.0,
    },
    "scorecard": {"C": 2.0, "max_n_bins": 4, "min_bin_size": 0.08},
}
SEED = 0
_DEFAULTS = Settings.model_construct()
COSTS = CostMatrix(_DEFAULTS.training.cost_false_approve, _DEFAULTS.training.cost_false_decline)


@dataclass(frozen=True)
class Fitted:
    """A trained model with the schema and splits it was trained and judged on."""

    model: TrainedModel
    schema: FeatureSchema
    splits: Splits
    raw: pd.DataFrame
    """The raw frame the splits came from: features, target and any other columns."""

    @property
    def family(self) -> ModelFamily:
        return self.model.family

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """PDs through the serving path: cast to the schema, then the calibrated model."""
        return self.model.predict_pd(self.schema.to_frame(frame))

    @property
    def raw_test(self) -> pd.DataFrame:
        """The test split's raw rows, target included."""
        return self.raw.loc[self.splits.test.X.index]


def fit_model(schema: FeatureSchema, raw: pd.DataFrame, family: ModelFamily) -> Fitted:
    """Split with the default settings, then fit, calibrate and threshold one family."""
    splits = split_frame(
        raw,
        schema,
        test_size=_DEFAULTS.training.test_size,
        validation_size=_DEFAULTS.training.validation_size,
        seed=SEED,
    )
    model = fit(schema, family, CONFIGS[family], splits.train, splits.validation, COSTS, SEED)
    return Fitted(model=model, schema=schema, splits=splits, raw=raw)


def unconstrained_logreg(fitted: Fitted) -> Fitted:
    """`fitted`, a logistic regression, refitted with a plain `LogisticRegression` (no sign
    constraints) and calibrated and thresholded the same way, on the same splits."""
    constrained = fitted.model.model.calibrated_classifiers_[0].estimator.estimator
    free = LogisticRegression(C=CONFIGS["logreg"]["C"], max_iter=2000)
    pipeline = clone(constrained).set_params(classifier=free)
    train, validation = fitted.splits.train, fitted.splits.validation
    pipeline.fit(train.X, train.y)
    calibrated = CalibratedClassifierCV(FrozenEstimator(pipeline), method="sigmoid")
    calibrated.fit(validation.X, validation.y)
    threshold = choose_threshold(validation.y, calibrated.predict_proba(validation.X)[:, 1], COSTS)
    model = TrainedModel(calibrated, "logreg", dict(CONFIGS["logreg"]), threshold)
    return Fitted(model=model, schema=fitted.schema, splits=fitted.splits, raw=fitted.raw)
