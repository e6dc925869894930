"""Feature preparation: the splits, and the scikit-learn pipelines built from a feature schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

from loanops.constrained import SignConstrainedLogisticRegression
from loanops.schema import FeatureSchema
from loanops.scorecard import build_encoder
from loanops.settings import ModelFamily

MISSING_CATEGORY = "__missing__"
_MONOTONIC = {"increasing": 1, "decreasing": -1, None: 0}
# Changing this salt reshuffles every frozen test split and so breaks champion comparisons.
_HOLDOUT_SALT = "loanops-holdout1"  # pandas wants exactly 16 bytes


@dataclass(frozen=True)
class Split:
    """Features and 0/1 labels of one part of the data."""

    X: pd.DataFrame
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    @property
    def positives(self) -> int:
        return int(self.y.sum())


@dataclass(frozen=True)
class Splits:
    """Train (fit), validation (calibrate, pick the threshold) and test (report, gate)."""

    train: Split
    validation: Split
    test: Split

    @property
    def development(self) -> Split:
        """Train and validation together: what cross-validation tunes on."""
        return Split(
            X=pd.concat([self.train.X, self.validation.X]),
            y=np.concatenate([self.train.y, self.validation.y]),
        )


def holdout_mask(X: pd.DataFrame, y: np.ndarray, share: float) -> np.ndarray:
    """Which rows belong to the frozen test split: a pure function of each loan's features.

    A row's salted content hash, read as a number in [0, 1), puts it in the test split when it
    falls below `share`. The split therefore does not move with the seed, a subsample or a data
    refresh: a champion and a challenger trained on the same loans never saw each other's test
    rows, so the gate compares them fairly. Identical rows always land together, so duplicates
    cannot leak across the split. Within each class the share holds in expectation, which keeps
    the split stratified without depending on which other rows are present.
    """
    hashes = pd.util.hash_pandas_object(X, index=False, hash_key=_HOLDOUT_SALT).to_numpy()
    position = hashes.astype(np.float64) / float(2**64)
    mask = position < share
    for label in (0, 1):
        in_class = y == label
        if in_class.any() and not (mask & in_class).any():
            raise ValueError(f"the test split got no rows of class {label}; use more data")
    return mask


def split_frame(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    *,
    test_size: float,
    validation_size: float,
    seed: int,
) -> Splits:
    """Split into train, validation and a frozen test split.

    Args:
        frame: a validated raw frame.
        schema: its feature schema.
        test_size: share of rows held out for the test split, chosen by `holdout_mask`.
        validation_size: share of the remaining rows held out for calibration, stratified and
            seeded.
        seed: makes the train/validation split reproducible.
    """
    X = schema.to_frame(frame)
    y = schema.labels(frame)
    test = holdout_mask(X, y, test_size)
    X_dev, y_dev = X[~test], y[~test]
    X_train, X_val, y_train, y_val = train_test_split(
        X_dev, y_dev, test_size=validation_size, stratify=y_dev, random_state=seed
    )
    return Splits(Split(X_train, y_train), Split(X_val, y_val), Split(X[test], y[test]))


def _non_negative(schema: FeatureSchema, name: str) -> bool:
    minimum = schema.feature(name).minimum
    return minimum is not None and minimum >= 0


def _numeric_steps(*, log: bool) -> Pipeline:
    steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if log:
        steps.append(("log", FunctionTransformer(np.log1p, feature_names_out="one-to-one")))
    steps.append(("scale", StandardScaler()))
    return Pipeline(steps)


def _categorical_imputer() -> SimpleImputer:
    return SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY, missing_values=None)


def _linear_numbers(schema: FeatureSchema, *, log_amounts: bool) -> tuple[list[str], list[str]]:
    """The linear model's plain and log-compressed numbers, in the order its columns start with.

    Amounts and counts are right-skewed; log1p tames them for a linear model. Negative values
    cannot reach it: validation and the request model both enforce the minimum.
    """
    numeric = schema.numeric_features
    loggable = [n for n in numeric if log_amounts and _non_negative(schema, n)]
    return [n for n in numeric if n not in loggable], loggable


def build_preprocessor(schema: FeatureSchema, family: ModelFamily, *, log_amounts: bool) -> Any:
    """The column transformer for a model family.

    Linear models get imputed and standardised numbers, optionally log-compressed where the
    schema rules out negatives, plus one-hot categories; tree models get raw numbers (they
    handle NaN) and ordinal-coded categories. Categories not seen in training never raise: they
    map to the infrequent bucket or to NaN.
    """
    numeric, categorical = schema.numeric_features, schema.categorical_features
    if family == "logreg":
        plain, loggable = _linear_numbers(schema, log_amounts=log_amounts)
        numbers: list[tuple[str, Any, list[str]]] = [
            ("num", _numeric_steps(log=False), plain),
            ("num_log", _numeric_steps(log=True), loggable),
        ]
        categories = Pipeline(
            [
                ("impute", _categorical_imputer()),
                (
                    "encode",
                    OneHotEncoder(
                        handle_unknown="infrequent_if_exist",
                        min_frequency=20,
                        sparse_output=False,
                    ),
                ),
            ]
        )
        transformers = [*(t for t in numbers if t[2]), ("cat", categories, categorical)]
    else:
        encoder = OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=np.nan,
            encoded_missing_value=np.nan,
        )
        transformers = [("num", "passthrough", numeric), ("cat", encoder, categorical)]
    return ColumnTransformer(transformers, verbose_feature_names_out=False)


def build_model(
    schema: FeatureSchema, family: ModelFamily, params: dict[str, Any], seed: int
) -> Pipeline:
    """An unfitted pipeline for one model family and its hyperparameters."""
    params = dict(params)
    log_amounts = bool(params.pop("log_amounts", False))
    classifier: Any
    if family == "logreg":
        # Every number reaches the model through monotone increasing steps (median imputation,
        # log1p, standardising) and one column each, ahead of the one-hot categories, so
        # bounding its coefficient's sign binds the model to the declared direction of risk.
        # Imputation adds no missing-value indicator: a missing value scores as the median.
        plain, loggable = _linear_numbers(schema, log_amounts=log_amounts)
        signs = [_MONOTONIC[schema.feature(n).risk] for n in (*plain, *loggable)]
        classifier = SignConstrainedLogisticRegression(signs, C=params["C"], max_iter=2000)
    elif family == "hist_gbt":
        numeric = [schema.feature(name) for name in schema.numeric_features]
        n_categorical = len(schema.categorical_features)
        categorical_mask = [False] * len(numeric) + [True] * n_categorical
        # Credit policy's direction of risk, where the schema declares one, binds the trees.
        monotonic = [_MONOTONIC[f.risk] for f in numeric] + [0] * n_categorical
        classifier = HistGradientBoostingClassifier(
            learning_rate=params["learning_rate"],
            max_leaf_nodes=params["max_leaf_nodes"],
            min_samples_leaf=params["min_samples_leaf"],
            l2_regularization=params["l2_regularization"],
            max_iter=params.get("max_iter", 500),
            early_stopping=True,
            validation_fraction=0.15,
            n_iter_no_change=20,
            categorical_features=categorical_mask,
            monotonic_cst=monotonic,
            random_state=seed,
        )
    elif family == "scorecard":
        # Each feature becomes its bin's risk weight of evidence, monotone in the declared
        # direction; non-negative coefficients keep it so.
        encoder = build_encoder(schema, params["max_n_bins"], params["min_bin_size"])
        n_features = len(schema.features)
        return Pipeline(
            [
                (
                    "preprocess",
                    ColumnTransformer(
                        [
                            (
                                "woe",
                                encoder,
                                [*schema.numeric_features, *schema.categorical_features],
                            )
                        ],
                        verbose_feature_names_out=False,
                    ),
                ),
                (
                    "classifier",
                    SignConstrainedLogisticRegression(
                        [1] * n_features, C=params["C"], max_iter=2000
                    ),
                ),
            ]
        )
    else:
        raise ValueError(f"unknown model family {family!r}")
    return Pipeline(
        [
            ("preprocess", build_preprocessor(schema, family, log_amounts=log_amounts)),
            ("classifier", classifier),
        ]
    )
