"""Hyperparameter search on a small lending_club subsample: the winner, the trials, the failures."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest

from loanops import progress
from loanops import tune as tune_module
from loanops.features import build_model
from loanops.tune import TrialRecord, TuneResult, cross_validated_aucs, suggest, tune
from tests.factories import LENDING_CLUB, keep_positives, lending_club_sample

FOLDS = 3
TRIALS = 8  # the median pruner starts after 5 trials, so the last ones may be pruned
SEED = 0


def logreg_search(X: pd.DataFrame, y: np.ndarray, **overrides: Any) -> TuneResult:
    """`tune` over logistic regression with this module's folds and seed, unless overridden."""
    options: dict[str, Any] = {
        "families": ("logreg",),
        "n_trials": TRIALS,
        "timeout_seconds": None,
        "folds": FOLDS,
        "seed": SEED,
        **overrides,
    }
    return tune(X, y, LENDING_CLUB, **options)


@dataclass(frozen=True)
class Search:
    X: pd.DataFrame
    y: np.ndarray
    result: TuneResult
    reported: list[TrialRecord]


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    frame = lending_club_sample(3_000, seed=SEED)
    return LENDING_CLUB.to_frame(frame), LENDING_CLUB.labels(frame)


@pytest.fixture(scope="module")
def search(data: tuple[pd.DataFrame, np.ndarray]) -> Search:
    X, y = data
    reported: list[TrialRecord] = []
    result = logreg_search(X, y, on_trial=reported.append)
    return Search(X, y, result, reported)


def test_best_config_is_the_best_complete_trial(search: Search) -> None:
    result = search.result
    complete = [t for t in result.trials if t.state == "COMPLETE"]
    best = max(complete, key=lambda t: t.cv_roc_auc or 0.0)
    assert (result.family, result.params) == (best.family, best.params)
    assert result.cv_roc_auc == max(t.cv_roc_auc or 0.0 for t in complete)
    assert 0.6 < result.cv_roc_auc < 0.9


def test_best_cv_auc_is_the_mean_of_its_fold_aucs(search: Search) -> None:
    result = search.result
    [best] = [t for t in result.trials if t.params == result.params and t.state == "COMPLETE"]
    assert len(best.fold_aucs) == FOLDS
    assert result.cv_roc_auc == pytest.approx(np.mean(best.fold_aucs), abs=1e-15)
    assert result.cv_roc_auc_std == pytest.approx(np.std(best.fold_aucs), abs=1e-15)


def test_fold_aucs_are_those_of_the_stratified_folds(search: Search) -> None:
    result = search.result
    [best] = [t for t in result.trials if t.params == result.params and t.state == "COMPLETE"]
    model = build_model(LENDING_CLUB, result.family, result.params, SEED)
    aucs = cross_validated_aucs(model, search.X, search.y, folds=FOLDS, seed=SEED)
    assert aucs == pytest.approx(best.fold_aucs, abs=1e-12)


def test_on_trial_is_called_once_per_trial_in_order(search: Search) -> None:
    assert search.reported == search.result.trials
    assert [t.number for t in search.reported] == list(range(TRIALS))


def test_pruned_trials_are_recorded_with_the_folds_they_finished(search: Search) -> None:
    result = search.result
    pruned = [t for t in result.trials if t.state == "PRUNED"]
    assert result.n_pruned == len(pruned) >= 1
    assert result.n_complete + result.n_pruned == TRIALS
    for trial in pruned:
        assert 1 <= len(trial.fold_aucs) < FOLDS
        assert trial.cv_roc_auc == pytest.approx(np.mean(trial.fold_aucs))
    for trial in result.trials[:5]:
        assert trial.state == "COMPLETE"  # nothing is pruned during the pruner's start-up


def test_trials_search_the_logreg_space(search: Search) -> None:
    for trial in search.result.trials:
        assert trial.family == "logreg"
        assert set(trial.params) == {"C", "log_amounts"}
        assert 1e-3 <= trial.params["C"] <= 10.0


def test_search_is_reproducible_for_a_seed(search: Search) -> None:
    again = tune(
        search.X,
        search.y,
        LENDING_CLUB,
        families=("logreg",),
        n_trials=3,
        timeout_seconds=None,
        folds=FOLDS,
        seed=SEED,
    )
    assert again.trials == search.result.trials[:3]


def test_hist_gbt_trials_record_their_family_and_params(
    data: tuple[pd.DataFrame, np.ndarray],
) -> None:
    X, y = data
    result = tune(
        X.iloc[:1_500],
        y[:1_500],
        LENDING_CLUB,
        families=("hist_gbt",),
        n_trials=1,
        timeout_seconds=None,
        folds=2,
        seed=SEED,
    )
    assert result.family == "hist_gbt"
    assert set(result.params) == {
        "learning_rate",
        "max_leaf_nodes",
        "min_samples_leaf",
        "l2_regularization",
    }
    assert len(result.trials[0].fold_aucs) == 2


@pytest.mark.parametrize(
    ("params", "family"),
    [
        ({"family": "logreg", "C": 0.5, "log_amounts": False}, "logreg"),
        (
            {
                "family": "hist_gbt",
                "learning_rate": 0.05,
                "max_leaf_nodes": 16,
                "min_samples_leaf": 40,
                "l2_regularization": 0.1,
            },
            "hist_gbt",
        ),
    ],
)
def test_suggest_returns_the_family_and_its_own_params(params: dict[str, Any], family: str) -> None:
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(params)
    drawn_family, drawn = suggest(study.ask(), ["logreg", "hist_gbt"])
    assert drawn_family == family
    assert drawn == {k: v for k, v in params.items() if k != "family"}


def test_no_trial_at_all_raises_runtime_error(data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = data
    with pytest.raises(RuntimeError, match="without a single complete trial"):
        logreg_search(X, y, n_trials=0)


def test_every_trial_pruned_raises_runtime_error(
    data: tuple[pd.DataFrame, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    def pruned_after_one_fold(*args: Any, on_fold: Any, **kwargs: Any) -> list[float]:
        on_fold(0, 0.6)
        raise optuna.TrialPruned("pruned by the test")

    monkeypatch.setattr(tune_module, "cross_validated_aucs", pruned_after_one_fold)
    reported: list[TrialRecord] = []
    X, y = data
    with pytest.raises(RuntimeError, match="without a single complete trial"):
        logreg_search(X, y, n_trials=3, on_trial=reported.append)
    assert [(t.state, t.fold_aucs) for t in reported] == [("PRUNED", [0.6])] * 3


def test_a_failing_trial_is_reported_then_raised(
    data: tuple[pd.DataFrame, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> list[float]:
        raise ArithmeticError("broken fold")

    monkeypatch.setattr(tune_module, "cross_validated_aucs", broken)
    reported: list[TrialRecord] = []
    X, y = data
    with pytest.raises(ArithmeticError, match="broken fold"):
        logreg_search(X, y, n_trials=3, on_trial=reported.append)
    assert [(t.state, t.fold_aucs) for t in reported] == [("FAIL", [])]


@pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::sklearn.exceptions.UndefinedMetricWarning"
)
def test_folds_without_a_default_do_not_produce_a_nan_winner() -> None:
    frame = keep_positives(lending_club_sample(600, seed=1), LENDING_CLUB, 2)
    X, y = LENDING_CLUB.to_frame(frame), LENDING_CLUB.labels(frame)
    with pytest.raises(ValueError, match="needs at least 3 rows of each class"):
        logreg_search(X, y, n_trials=2)


def test_each_trial_reports_the_search_progress(
    data: tuple[pd.DataFrame, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    X, y = data
    with caplog.at_level(logging.INFO, logger=progress.LOGGER_NAME):
        result = logreg_search(X, y, n_trials=4)

    reported = [p for r in caplog.records if (p := progress.progress_of(r)) is not None]
    assert [(p.step, p.done, p.total) for p in reported] == [("tuning", n, 4) for n in (1, 2, 3, 4)]
    best_so_far = [
        max(t.cv_roc_auc for t in result.trials[:n] if t.state == "COMPLETE" and t.cv_roc_auc)
        for n in (1, 2, 3, 4)
    ]
    assert [p.figures["best CV AUC"] for p in reported] == [f"{b:.4f}" for b in best_so_far]
