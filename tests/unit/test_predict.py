"""The compiled scorer on tiny hand-built models: exactness, the odd categories, and refusals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder

from loanops.evaluate import CostMatrix
from loanops.features import Split, build_model
from loanops.settings import ModelFamily
from loanops.train import fit
from serving.scorer import compiled, linear, parts
from serving.scorer.compiled import CompiledScorer
from serving.scorer.parts import UnsupportedModelError
from tests.factories import LENDING_CLUB, TINY, tiny_frame

PARAMS: dict[ModelFamily, dict[str, Any]] = {
    "logreg": {"C": 1.0, "log_amounts": True},
    "hist_gbt": {
        "learning_rate": 0.2,
        "max_leaf_nodes": 8,
        "min_samples_leaf": 10,
        "l2_regularization": 0.0,
        "max_iter": 30,
    },
}
EXACT = 1e-12


def split(frame: pd.DataFrame) -> Split:
    return Split(TINY.to_frame(frame), TINY.labels(frame))


def calibrated(family: ModelFamily, train: pd.DataFrame) -> CalibratedClassifierCV:
    """A model fitted and calibrated as `loanops.train.fit` does, on TINY rows."""
    validation = tiny_frame(300, seed=99)
    trained = fit(
        TINY, family, PARAMS[family], split(train), split(validation), CostMatrix(5, 1), 0
    )
    return trained.model


def sigmoid_around(pipeline: Pipeline) -> CalibratedClassifierCV:
    validation = split(tiny_frame(300, seed=99))
    model = CalibratedClassifierCV(FrozenEstimator(pipeline), method="sigmoid")
    return model.fit(validation.X, validation.y)


@pytest.fixture(scope="module", params=list(PARAMS))
def tiny_model(request: pytest.FixtureRequest) -> CalibratedClassifierCV:
    return calibrated(request.param, tiny_frame(600, seed=0))


def pipeline_scores(model: CalibratedClassifierCV, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict_proba(TINY.to_frame(frame))[:, 1])


def assert_all_paths_match(
    scorer: CompiledScorer, model: CalibratedClassifierCV, frame: pd.DataFrame
) -> None:
    expected = pipeline_scores(model, frame)
    rows = frame.to_dict("records")
    one_by_one = np.concatenate([scorer.score_rows([row]) for row in rows])
    for scores in (scorer.score_frame(frame), scorer.score_rows(rows), one_by_one):
        np.testing.assert_allclose(scores, expected, rtol=0, atol=EXACT)


def test_compiled_scores_equal_the_pipeline_with_nulls_in_both_kinds_of_feature(
    tiny_model: CalibratedClassifierCV,
) -> None:
    scorer = CompiledScorer.compile(tiny_model, TINY)
    frame = tiny_frame(200, seed=1)
    assert frame["late_payments"].isna().any() and frame["tenure"].isna().any()
    assert_all_paths_match(scorer, tiny_model, frame)


def test_family_is_named_as_in_settings(tiny_model: CalibratedClassifierCV) -> None:
    pipeline = tiny_model.calibrated_classifiers_[0].estimator.estimator
    linear = isinstance(pipeline.named_steps["classifier"], LogisticRegression)
    expected = "logreg" if linear else "hist_gbt"
    assert CompiledScorer.compile(tiny_model, TINY).family == expected


@pytest.mark.parametrize("family", list(PARAMS))
def test_rare_unseen_and_unknown_categories_score_as_the_pipeline_does(
    family: ModelFamily,
) -> None:
    train = tiny_frame(600, seed=0)
    # Grade C in 8 rows only: the one-hot encoder's infrequent bucket (min_frequency=20).
    # Tenure "long" never: an unseen category, with no infrequent bucket to fall into.
    c_rows = np.flatnonzero(train["grade"] == "C")[8:]
    train.loc[c_rows, "grade"] = "B"
    train.loc[train["tenure"] == "long", "tenure"] = "short"
    model = calibrated(family, train)
    scorer = CompiledScorer.compile(model, TINY)
    if family == "logreg":
        pipeline = model.calibrated_classifiers_[0].estimator.estimator
        encoder = pipeline["preprocess"].named_transformers_["cat"]["encode"]
        grade, tenure = encoder.infrequent_categories_
        assert list(grade) == ["C"]
        assert tenure is None and "long" not in encoder.categories_[1]

    frame = tiny_frame(60, seed=2)
    frame["grade"] = np.resize(np.array(["A", "B", "C", "Z", None], dtype=object), 60)
    frame["tenure"] = np.resize(np.array(["long", "short", None, "?"], dtype=object), 60)
    assert_all_paths_match(scorer, model, frame)


def test_nan_in_a_category_counts_as_none(tiny_model: CalibratedClassifierCV) -> None:
    scorer = CompiledScorer.compile(tiny_model, TINY)
    row = tiny_frame(1, seed=3).to_dict("records")[0]
    as_none, as_nan = {**row, "tenure": None}, {**row, "tenure": float("nan")}
    assert scorer.score_rows([as_nan])[0] == scorer.score_rows([as_none])[0]
    expected = pipeline_scores(tiny_model, pd.DataFrame([as_nan]))
    np.testing.assert_allclose(scorer.score_rows([as_nan]), expected, rtol=0, atol=EXACT)


def test_rows_are_scored_without_pandas(
    tiny_model: CalibratedClassifierCV, monkeypatch: pytest.MonkeyPatch
) -> None:
    scorer = CompiledScorer.compile(tiny_model, TINY)
    frame = tiny_frame(40, seed=4)
    expected = scorer.score_frame(frame)
    rows = frame.to_dict("records")
    for module in (compiled, parts):  # the modules holding pandas; any use of it now raises
        monkeypatch.setattr(module, "pd", None)
    one_by_one = np.concatenate([scorer.score_rows([row]) for row in rows])
    np.testing.assert_allclose(one_by_one, expected, rtol=0, atol=EXACT)
    np.testing.assert_allclose(scorer.score_rows(rows), expected, rtol=0, atol=EXACT)


def test_no_rows_give_no_scores(tiny_model: CalibratedClassifierCV) -> None:
    scores = CompiledScorer.compile(tiny_model, TINY).score_rows([])
    assert scores.shape == (0,)


def test_a_missing_feature_is_a_key_error(tiny_model: CalibratedClassifierCV) -> None:
    scorer = CompiledScorer.compile(tiny_model, TINY)
    frame = tiny_frame(5, seed=5)
    with pytest.raises(KeyError):
        scorer.score_frame(frame.drop(columns=["rate"]))
    row = frame.drop(columns=["rate"]).to_dict("records")[0]
    with pytest.raises(KeyError):
        scorer.score_rows([row])


# --- what the compiler refuses ----------------------------------------------------------------


def fitted_pipeline(family: ModelFamily) -> Pipeline:
    train = split(tiny_frame(600, seed=0))
    return build_model(TINY, family, PARAMS[family], seed=0).fit(train.X, train.y)


@pytest.fixture(scope="module")
def unsupported_models() -> dict[str, Any]:
    """Models the compiler must refuse, by what is wrong with them."""
    train = split(tiny_frame(600, seed=0))
    validation = split(tiny_frame(300, seed=99))
    logreg, hist_gbt = fitted_pipeline("logreg"), fitted_pipeline("hist_gbt")

    def refit(pipeline: Pipeline, name: str, step: Any) -> CalibratedClassifierCV:
        changed = clone(pipeline).set_params(**{name: step})
        return sigmoid_around(changed.fit(train.X, train.y))

    return {
        "a bare pipeline": logreg,
        "isotonic calibration": CalibratedClassifierCV(
            FrozenEstimator(hist_gbt), method="isotonic"
        ).fit(validation.X, validation.y),
        "an ensemble of calibrated classifiers": CalibratedClassifierCV(
            clone(logreg), method="sigmoid", cv=2, ensemble=True
        ).fit(train.X, train.y),
        "another classifier": refit(
            logreg, "classifier", SGDClassifier(loss="log_loss", random_state=0)
        ),
        "a scaler it cannot read": refit(logreg, "preprocess__num_log__scale", MinMaxScaler()),
        "a one-hot encoder that drops a column": refit(
            logreg,
            "preprocess__cat__encode",
            OneHotEncoder(drop="first", handle_unknown="ignore", sparse_output=False),
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "a bare pipeline",
        "isotonic calibration",
        "an ensemble of calibrated classifiers",
        "another classifier",
        "a scaler it cannot read",
        "a one-hot encoder that drops a column",
    ],
)
def test_models_it_cannot_reproduce_are_refused(
    case: str, unsupported_models: dict[str, Any]
) -> None:
    model = unsupported_models[case]
    with pytest.raises(UnsupportedModelError):
        CompiledScorer.compile(model, TINY)


def test_a_schema_that_does_not_fit_the_model_is_refused(
    tiny_model: CalibratedClassifierCV,
) -> None:
    with pytest.raises(UnsupportedModelError):
        CompiledScorer.compile(tiny_model, LENDING_CLUB)


def test_verification_refuses_a_compilation_that_disagrees_with_the_pipeline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = calibrated("logreg", tiny_frame(600, seed=0))
    CompiledScorer.compile(model, TINY)  # fine as it is
    row = linear.Linear.row
    monkeypatch.setattr(linear.Linear, "row", lambda self, values: row(self, values) + 1e-4)
    with pytest.raises(UnsupportedModelError, match="differs from the pipeline"):
        CompiledScorer.compile(model, TINY)
    assert CompiledScorer.compile(model, TINY, verify=False).family == "logreg"
