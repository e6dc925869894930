"""Hyperparameter search: Optuna over model families, scored by stratified k-fold ROC AUC.

Each trial reports its running mean AUC after every fold, so the median pruner can stop a poor
configuration after a fold or two instead of paying for all of them. The study lives in memory,
or in Optuna's RDB storage (PostgreSQL) when several workers share one search
(`loanops.tune_workers`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import optuna
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sqlalchemy.exc import IntegrityError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random

from loanops import progress
from loanops.features import build_model
from loanops.schema import FeatureSchema
from loanops.settings import ModelFamily


@dataclass(frozen=True)
class TrialRecord:
    """What one trial tried, how it ended, and the AUC of each fold it got through."""

    number: int
    family: ModelFamily
    params: dict[str, Any]
    state: str
    fold_aucs: list[float]

    @property
    def cv_roc_auc(self) -> float | None:
        return float(np.mean(self.fold_aucs)) if self.fold_aucs else None


@dataclass(frozen=True)
class TuneResult:
    """The winning configuration and how the search went."""

    family: ModelFamily
    params: dict[str, Any]
    cv_roc_auc: float
    cv_roc_auc_std: float
    trials: list[TrialRecord]

    @property
    def n_complete(self) -> int:
        return sum(t.state == "COMPLETE" for t in self.trials)

    @property
    def n_pruned(self) -> int:
        return sum(t.state == "PRUNED" for t in self.trials)


def suggest(trial: optuna.Trial, families: Sequence[ModelFamily]) -> tuple[ModelFamily, dict]:
    """Draw a model family and its hyperparameters from the search space."""
    family = cast(ModelFamily, trial.suggest_categorical("family", list(families)))
    if family == "logreg":
        return family, {
            "C": trial.suggest_float("C", 1e-3, 10.0, log=True),
            "log_amounts": trial.suggest_categorical("log_amounts", [True, False]),
        }
    if family == "scorecard":
        return family, {
            "C": trial.suggest_float("scorecard_C", 1e-3, 10.0, log=True),
            "max_n_bins": trial.suggest_int("max_n_bins", 3, 8),
            "min_bin_size": trial.suggest_float("min_bin_size", 0.02, 0.1),
        }
    return family, {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 4, 64, log=True),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 10, 400, log=True),
        "l2_regularization": trial.suggest_float("l2_regularization", 1e-4, 10.0, log=True),
    }


def cross_validated_aucs(
    model: Any,
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    folds: int,
    seed: int,
    on_fold: Callable[[int, float], None] | None = None,
) -> list[float]:
    """ROC AUC of `model` on each stratified fold; `on_fold(step, auc)` after each fold."""
    aucs: list[float] = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for step, (fit_idx, score_idx) in enumerate(splitter.split(X, y)):
        fitted = clone(model).fit(X.iloc[fit_idx], y[fit_idx])
        scores = fitted.predict_proba(X.iloc[score_idx])[:, 1]
        aucs.append(float(roc_auc_score(y[score_idx], scores)))
        if on_fold is not None:
            on_fold(step, aucs[-1])
    return aucs


def _search_progress(records: Sequence[TrialRecord], n_trials: int) -> progress.Progress:
    complete = [r.cv_roc_auc for r in records if r.state == "COMPLETE" and r.cv_roc_auc is not None]
    figures = {"best CV AUC": f"{max(complete):.4f}"} if complete else {}
    return progress.Progress("tuning", done=len(records), total=n_trials, figures=figures)


def open_study(
    *,
    seed: int,
    storage_url: str | None = None,
    study_name: str | None = None,
    worker: int = 0,
    heartbeat_seconds: int = 10,
) -> optuna.Study:
    """The study a search adds its trials to: in memory, or shared in an RDB storage.

    A shared study is created by the first process that asks for it and loaded by the rest, so
    N workers on N machines pull trials from one search; a rerun with the same name resumes it.
    Each running trial sends a heartbeat, and a trial whose heartbeat stops for three intervals
    (a killed worker) is marked FAIL by the next worker to start a trial.

    Args:
        seed: seeds the sampler; each worker offsets it by its index, so that two workers
            starting together do not propose the same configuration.
        storage_url: an SQLAlchemy URL (PostgreSQL in production); None for an in-memory study.
        study_name: the shared study's name; required with `storage_url`.
        worker: this worker's index.
        heartbeat_seconds: how often a running trial's heartbeat is written.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage: optuna.storages.BaseStorage | None = None
    if storage_url is not None:
        if study_name is None:
            raise ValueError("a shared study needs a name")
        storage = _shared_storage(storage_url, heartbeat_seconds)
    return optuna.create_study(
        storage=storage,
        study_name=study_name,
        load_if_exists=storage is not None,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=(seed + worker) % 2**32),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    )


# Workers that start together on an empty database race to create Optuna's tables and enum
# types; the loser's CREATE fails with a unique violation, and its second try finds them made.
@retry(
    retry=retry_if_exception_type(IntegrityError),
    stop=stop_after_attempt(3),
    wait=wait_random(0.1, 1.0),
    reraise=True,
)
def _shared_storage(url: str, heartbeat_seconds: int) -> optuna.storages.RDBStorage:
    with warnings.catch_warnings():
        # Heartbeats are marked experimental in Optuna 4; the budget's accounting of a killed
        # worker depends on them, and tests/integration/test_shared_study.py checks it.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=heartbeat_seconds,
            grace_period=3 * heartbeat_seconds,
            engine_kwargs={"pool_pre_ping": True},
        )


def run_trials(
    study: optuna.Study,
    X: pd.DataFrame,
    y: np.ndarray,
    schema: FeatureSchema,
    *,
    families: Sequence[ModelFamily],
    n_trials: int,
    timeout_seconds: float | None,
    folds: int,
    seed: int,
    on_trial: Callable[[TrialRecord], None] | None = None,
    worker: int = 0,
) -> None:
    """Add trials to `study` until it holds `n_trials` finished ones, from every worker together.

    Complete and pruned trials count toward the budget; failed ones (a worker killed mid-trial)
    do not, so the others make up for them.

    Raises:
        ValueError: when a class has fewer rows than there are folds.
    """
    smallest_class = int(np.bincount(y, minlength=2).min())
    if smallest_class < folds:
        raise ValueError(
            f"{folds}-fold cross-validation needs at least {folds} rows of each class; "
            f"the smallest class has {smallest_class}"
        )
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    budget = optuna.study.MaxTrialsCallback(n_trials, states=finished)
    if len(study.get_trials(deepcopy=False, states=finished)) >= n_trials:
        return
    records: list[TrialRecord] = []

    def objective(trial: optuna.Trial) -> float:
        family, params = suggest(trial, families)
        trial.set_user_attr("family", family)
        trial.set_user_attr("params", params)
        trial.set_user_attr("worker", worker)
        model = build_model(schema, family, params, seed)
        fold_aucs: list[float] = []

        def report(step: int, auc: float) -> None:
            fold_aucs.append(auc)
            running_mean = float(np.mean(fold_aucs))
            trial.set_user_attr("fold_aucs", fold_aucs)
            trial.report(running_mean, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"running AUC {running_mean:.4f} after fold {step + 1}")

        state = "FAIL"
        try:
            cross_validated_aucs(model, X, y, folds=folds, seed=seed, on_fold=report)
            state = "COMPLETE"
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        finally:
            record = TrialRecord(trial.number, family, params, state, list(fold_aucs))
            records.append(record)
            if on_trial is not None:
                on_trial(record)
            progress.report(_search_progress(records, n_trials))
        return float(np.mean(fold_aucs))

    study.optimize(objective, n_trials=n_trials, timeout=timeout_seconds, callbacks=[budget])


def result_of(study: optuna.Study) -> TuneResult:
    """The best configuration of a study and every trial it holds, whoever ran them.

    Raises:
        RuntimeError: when no trial completed.
    """
    records = [
        TrialRecord(
            t.number,
            t.user_attrs["family"],
            dict(t.user_attrs["params"]),
            t.state.name,
            list(t.user_attrs.get("fold_aucs", [])),
        )
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and "family" in t.user_attrs
    ]
    complete = [r for r in records if r.state == "COMPLETE"]
    if not complete:
        raise RuntimeError("tuning finished without a single complete trial; raise the budget")
    best = max(complete, key=lambda r: r.cv_roc_auc or 0.0)
    return TuneResult(
        family=best.family,
        params=best.params,
        cv_roc_auc=float(np.mean(best.fold_aucs)),
        cv_roc_auc_std=float(np.std(best.fold_aucs)),
        trials=records,
    )


def tune(
    X: pd.DataFrame,
    y: np.ndarray,
    schema: FeatureSchema,
    *,
    families: Sequence[ModelFamily],
    n_trials: int,
    timeout_seconds: float | None,
    folds: int,
    seed: int,
    on_trial: Callable[[TrialRecord], None] | None = None,
) -> TuneResult:
    """Search model families and hyperparameters for the best cross-validated ROC AUC, in this
    process and in memory.

    Args:
        X: development features.
        y: development labels, 0/1.
        schema: the feature schema, for building pipelines.
        families: model families to search over.
        n_trials: trial budget.
        timeout_seconds: time budget; the search stops at whichever budget runs out first.
        folds: cross-validation folds per trial.
        seed: seeds the sampler and the folds, so a search is reproducible.
        on_trial: called with each finished or pruned trial, e.g. to track it.

    Returns:
        The best configuration with its mean and spread of fold AUCs.

    Raises:
        ValueError: when a class has fewer rows than there are folds.
        RuntimeError: when no trial completed within the budget.
    """
    study = open_study(seed=seed)
    run_trials(
        study,
        X,
        y,
        schema,
        families=families,
        n_trials=n_trials,
        timeout_seconds=timeout_seconds,
        folds=folds,
        seed=seed,
        on_trial=on_trial,
    )
    return result_of(study)
