"""Train: load → validate → split → tune → re-score → fit and calibrate → evaluate → log → register.

The first half of `retrain`. It ends with a new registered version carrying its lineage;
whether that version serves is for the `promote` flow to decide.
"""

from __future__ import annotations

import getpass
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.common import TRACKING_RETRIES, settings_for
from flows.tune_worker import run_workers_on_the_pool
from loanops import registry
from loanops.data import LoadedDataset, load_training_data
from loanops.evaluate import (
    CostMatrix,
    Evaluation,
    evaluate,
    feature_importance,
    plot_calibration,
    plot_confusion,
    plot_importance,
    plot_precision_recall,
    plot_roc,
)
from loanops.features import Splits, build_model, split_frame
from loanops.settings import Settings
from loanops.train import TrainedModel, fit
from loanops.tune import TuneResult, cross_validated_aucs, open_study, result_of
from loanops.tune_workers import (
    check_lineage,
    run_local_workers,
    search,
    storage_url,
    study_name,
)
from loanops.validation import ValidationReport, validate_training_frame


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    model_name: str
    version: str
    run_id: str
    family: str
    params: dict[str, Any]
    cv_roc_auc: float
    """The chosen configuration's mean AUC on folds the search never saw (see `rescore_best`)."""
    evaluation: Evaluation
    dataset: str
    dataset_sha256: str
    rows: int


@task(cache_policy=NO_CACHE)
def load(settings: Settings, data_path: str | None) -> LoadedDataset:
    training = settings.training
    return load_training_data(
        training.dataset, rows=training.dataset_rows, seed=training.seed, data_path=data_path
    )


@task(cache_policy=NO_CACHE)
def validate(loaded: LoadedDataset, settings: Settings) -> ValidationReport:
    report = validate_training_frame(
        loaded.frame,
        loaded.schema,
        min_positives=settings.training.validation_min_positives,
        unknown_category_tolerance=settings.training.validation_unknown_category_tolerance,
    )
    logger = get_run_logger()
    for problem in report.warnings:
        logger.warning("tolerated: %s", problem)
    return report


@task(cache_policy=NO_CACHE)
def split(loaded: LoadedDataset, settings: Settings) -> Splits:
    return split_frame(
        loaded.frame,
        loaded.schema,
        test_size=settings.training.test_size,
        validation_size=settings.training.validation_size,
        seed=settings.training.seed,
    )


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def start_run(
    settings: Settings, loaded: LoadedDataset, report: ValidationReport, splits: Splits
) -> str:
    """Open the parent MLflow run and record the data lineage and configuration."""
    client = registry.connect(settings)
    experiment_id = registry.ensure_experiment(client, settings.experiment_name, settings)
    run = client.create_run(
        experiment_id,
        run_name=f"train-{settings.training.dataset}",
        tags=lineage_tags(loaded, splits),
    )
    run_id = run.info.run_id
    client.log_batch(
        run_id,
        params=[
            mlflow.entities.Param(key, str(value))
            for key, value in {
                "dataset": settings.training.dataset,
                "dataset_rows": report.rows,
                "seed": settings.training.seed,
                "cv_folds": settings.training.cv_folds,
                "tune_trials": settings.training.tune_trials,
                "tune_timeout_seconds": settings.training.tune_timeout_seconds,
                "model_families": ",".join(settings.training.model_families),
                "cost_false_approve": settings.training.cost_false_approve,
                "cost_false_decline": settings.training.cost_false_decline,
                "train_rows": len(splits.train),
                "validation_rows": len(splits.validation),
                "test_rows": len(splits.test),
            }.items()
        ],
        metrics=[
            mlflow.entities.Metric("data_default_rate", report.default_rate, 0, 0),
            mlflow.entities.Metric("data_rows", report.rows, 0, 0),
        ],
    )
    # Through the client: `with mlflow.start_run(run_id=...)` would end the run on exit,
    # marking it FINISHED before tuning starts.
    dataset = from_pandas(loaded.frame, name=loaded.name, targets=loaded.schema.target.name)
    client.log_inputs(
        run_id,
        datasets=[
            DatasetInput(
                dataset._to_mlflow_entity(),
                tags=[InputTag(key=MLFLOW_DATASET_CONTEXT, value="training")],
            )
        ],
    )
    return run_id


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def reopen_run(settings: Settings, loaded: LoadedDataset, run_id: str) -> str:
    """Reopen an earlier training run to resume it: its data must be the data loaded now.

    Raises:
        WorkerDataError: when the data's hash differs from the run's lineage.
        ValueError: when the run has already registered a version.
    """
    client = registry.connect(settings)
    check_lineage(settings, run_id, loaded)
    versions = client.search_model_versions(f"run_id = '{run_id}'")
    if versions:
        raise ValueError(
            f"run {run_id} already registered {versions[0].name} v{versions[0].version}; "
            "start a new run instead"
        )
    client.update_run(run_id, status="RUNNING")
    return run_id


def lineage_tags(loaded: LoadedDataset, splits: Splits) -> dict[str, str]:
    """Where the data came from and how much of it the model was fitted on."""
    flow_run_id = flow_run.get_id()
    return {
        "loanops.dataset": loaded.name,
        "loanops.dataset_sha256": loaded.sha256,
        "loanops.data_source": loaded.source,
        **{f"loanops.provenance.{key}": value for key, value in loaded.dataset.provenance.items()},
        "loanops.git_commit": registry.git_commit(),
        "loanops.prefect_flow_run_id": str(flow_run_id) if flow_run_id else "",
        "loanops.data_rows": str(len(loaded.frame)),
        "loanops.training_rows": str(len(splits.train)),
        "loanops.trained_by": getpass.getuser(),
    }


@task(cache_policy=NO_CACHE)
def tune_models(
    splits: Splits,
    loaded: LoadedDataset,
    settings: Settings,
    run_id: str,
    data_path: str | None = None,
) -> TuneResult:
    """Optuna search, one MLflow child run per trial under the parent run.

    With no tuning storage the study lives in this process's memory. With one, the study is
    named after the run and shared: this process runs it alone when there is one worker, else
    the settings' workers pull its trials (local processes, or flow runs on the work pool), and
    a rerun with the same run id resumes it.
    """
    client = registry.connect(settings)
    training = settings.training
    url = storage_url(settings)
    study = open_study(
        seed=training.seed,
        storage_url=url,
        study_name=study_name(run_id) if url else None,
        heartbeat_seconds=training.tune_heartbeat_seconds,
    )
    if training.tune_workers == 1:
        search(study, settings, run_id, splits.development, loaded.schema)
    elif training.tune_launcher == "process":
        run_local_workers(settings, run_id, data_path, log_folder=settings.home / "logs")
    else:
        run_workers_on_the_pool(settings, run_id, data_path)
    result = result_of(study)
    client.log_batch(
        run_id,
        params=[mlflow.entities.Param("best_family", result.family)]
        + [mlflow.entities.Param(f"best_{k}", str(v)) for k, v in result.params.items()],
        metrics=[
            mlflow.entities.Metric("search_best_cv_roc_auc", result.cv_roc_auc, 0, 0),
            mlflow.entities.Metric("search_best_cv_roc_auc_std", result.cv_roc_auc_std, 0, 0),
            mlflow.entities.Metric("trials_complete", result.n_complete, 0, 0),
            mlflow.entities.Metric("trials_pruned", result.n_pruned, 0, 0),
        ],
    )
    get_run_logger().info(
        "best: %s %s, search CV ROC AUC %.4f ± %.4f (%d complete, %d pruned)",
        result.family,
        result.params,
        result.cv_roc_auc,
        result.cv_roc_auc_std,
        result.n_complete,
        result.n_pruned,
    )
    return result


def rescore_fold_seed(seed: int) -> int:
    """Seed for re-scoring folds: one the search's folds (seeded with `seed`) did not use."""
    return (seed + 1) % 2**32


@dataclass(frozen=True)
class Rescore:
    """The chosen configuration's AUC on fresh cross-validation folds."""

    cv_roc_auc: float
    cv_roc_auc_std: float
    fold_aucs: list[float]


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def rescore_best(
    splits: Splits, loaded: LoadedDataset, best: TuneResult, settings: Settings, run_id: str
) -> Rescore:
    """Score the search's winner on folds it was not chosen on.

    The search's own figure is the best of many trials on the same folds, so it runs high.
    One more cross-validation of the winner alone, on differently seeded folds, costs one
    trial and is logged as `cv_roc_auc`; the search's figure stays as `search_best_cv_roc_auc`.
    """
    development = splits.development
    fold_seed = rescore_fold_seed(settings.training.seed)
    aucs = cross_validated_aucs(
        build_model(loaded.schema, best.family, best.params, settings.training.seed),
        development.X,
        development.y,
        folds=settings.training.cv_folds,
        seed=fold_seed,
    )
    rescore = Rescore(float(np.mean(aucs)), float(np.std(aucs)), aucs)
    registry.connect(settings).log_batch(
        run_id,
        params=[mlflow.entities.Param("cv_rescore_fold_seed", str(fold_seed))],
        metrics=[
            mlflow.entities.Metric("cv_roc_auc", rescore.cv_roc_auc, 0, 0),
            mlflow.entities.Metric("cv_roc_auc_std", rescore.cv_roc_auc_std, 0, 0),
        ],
    )
    return rescore


def cost_matrix(settings: Settings) -> CostMatrix:
    return CostMatrix(
        false_approve=settings.training.cost_false_approve,
        false_decline=settings.training.cost_false_decline,
    )


@task(cache_policy=NO_CACHE)
def fit_calibrated(
    splits: Splits, loaded: LoadedDataset, best: TuneResult, settings: Settings
) -> TrainedModel:
    """Fit the best configuration, calibrate it and choose its threshold."""
    return fit(
        loaded.schema,
        best.family,
        best.params,
        splits.train,
        splits.validation,
        cost_matrix(settings),
        settings.training.seed,
    )


@task(cache_policy=NO_CACHE)
def find_favourable_values(
    trained: TrainedModel, splits: Splits, loaded: LoadedDataset, settings: Settings
) -> dict[str, Any]:
    """The values adverse-action reasons compare applicants with, from the training split."""
    return trained.favourable_values(splits.train.X, loaded.schema, seed=settings.training.seed)


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def evaluate_on_test(
    trained: TrainedModel, splits: Splits, settings: Settings, run_id: str
) -> Evaluation:
    """Score the test split, log the metrics and the plots."""
    p = trained.predict_pd(splits.test.X)
    y = splits.test.y
    evaluation = evaluate(
        y,
        p,
        threshold=trained.threshold,
        costs=cost_matrix(settings),
        bootstrap_samples=settings.training.bootstrap_samples,
        seed=settings.training.seed,
    )
    client = registry.connect(settings)
    client.log_batch(
        run_id,
        metrics=[
            mlflow.entities.Metric(name, value, 0, 0)
            for name, value in {
                **evaluation.as_metrics(),
                "threshold": trained.threshold,
                "bayes_threshold": cost_matrix(settings).bayes_threshold,
            }.items()
        ],
    )
    importance = feature_importance(trained.model, splits.test.X, y, seed=settings.training.seed)
    figures = {
        "plots/roc.png": plot_roc(y, p),
        "plots/precision_recall.png": plot_precision_recall(y, p),
        "plots/calibration.png": plot_calibration(y, p),
        "plots/confusion_matrix.png": plot_confusion(y, p, trained.threshold),
        "plots/feature_importance.png": plot_importance(importance),
    }
    for path, figure in figures.items():
        client.log_figure(run_id, figure, path)
    client.log_dict(run_id, importance.round(6).to_dict(), "feature_importance.json")
    return evaluation


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def log_reference(
    trained: TrainedModel, splits: Splits, loaded: LoadedDataset, settings: Settings, run_id: str
) -> int:
    """Store the version's monitoring reference: development rows, their scores and labels.

    The development split (train and validation) is what the model learned from, and the largest
    sample that leaves the frozen test split alone; drift tests need rows. Its statistics are
    computed here, once, and stored beside the sample; every monitor run of this version reads
    them instead of recomputing them.
    """
    from loanops.monitoring.reference import build_reference, save_reference

    development = splits.development
    reference = build_reference(
        development.X,
        trained.predict_pd(development.X),
        development.y,
        loaded.schema,
        seed=settings.training.seed,
    )
    client = registry.connect(settings)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_reference(reference, Path(tmp) / "reference")
        client.log_artifacts(run_id, str(folder), registry.REFERENCE_ARTIFACT)
    return reference.rows


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def log_and_register(
    trained: TrainedModel,
    favourable: dict[str, Any],
    splits: Splits,
    loaded: LoadedDataset,
    settings: Settings,
    run_id: str,
) -> str:
    """Log the model with its card and frozen gate data, then register a new version."""
    schema = loaded.schema
    card = registry.ModelCard(
        threshold=trained.threshold,
        family=trained.family,
        params=trained.params,
        dataset=loaded.name,
        dataset_sha256=loaded.sha256,
        cost_false_approve=settings.training.cost_false_approve,
        cost_false_decline=settings.training.cost_false_decline,
        feature_schema=schema.model_dump(mode="json"),
        favourable_values=favourable,
    )
    client = registry.connect(settings)
    model_info = registry.log_model(
        client, run_id, trained.model, schema, splits.train.X.head(5), card
    )
    labels = np.where(splits.test.y == 1, schema.target.positive, schema.target.negative)
    # The columns the declared segments read beyond the model inputs (a protected attribute)
    # travel with the gate data, so the gate and the card can judge them; the model never sees
    # them.
    review = [c for c in schema.review_columns if c in loaded.frame]
    gate_frame = splits.test.X.join(loaded.frame.loc[splits.test.X.index, review]).assign(
        **{schema.target.name: labels}
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(registry.GATE_DATA_ARTIFACT).name
        gate_frame.to_parquet(path, index=False)
        client.log_artifact(run_id, str(path), str(Path(registry.GATE_DATA_ARTIFACT).parent))
    tags = client.get_run(run_id).data.tags
    lineage = {key: value for key, value in tags.items() if key.startswith("loanops.")}
    version = registry.register_version(
        client, settings.model_name, model_info, run_id, {**lineage, "loanops.run_id": run_id}
    )
    client.set_terminated(run_id)
    get_run_logger().info("registered %s v%s", settings.model_name, version.version)
    return str(version.version)


@flow(name="train")
def train_flow(
    dataset: str | None = None,
    rows: int | None = None,
    seed: int | None = None,
    trials: int | None = None,
    timeout_seconds: float | None = None,
    data_path: str | None = None,
    resume_run_id: str | None = None,
) -> TrainResult:
    """Train, evaluate and register a new candidate model version.

    Args:
        dataset: dataset name (default: settings).
        rows: rows to draw or subsample.
        seed: seed for the split, the search and the model.
        trials: Optuna trial budget.
        timeout_seconds: Optuna time budget.
        data_path: train on this CSV or Parquet file, which must follow the dataset's schema.
        resume_run_id: resume this earlier, unfinished training run instead of starting one:
            with a tuning storage its study goes on to the budget, keeping the trials it has.
    """
    settings = settings_for(
        training={
            "dataset": dataset,
            "dataset_rows": rows,
            "seed": seed,
            "tune_trials": trials,
            "tune_timeout_seconds": timeout_seconds,
        }
    )
    loaded = load(settings, data_path)
    report = validate(loaded, settings)
    splits = split(loaded, settings)
    if resume_run_id is None:
        run_id = start_run(settings, loaded, report, splits)
    else:
        run_id = reopen_run(settings, loaded, resume_run_id)
    try:
        best = tune_models(splits, loaded, settings, run_id, data_path)
        rescored = rescore_best(splits, loaded, best, settings, run_id)
        trained = fit_calibrated(splits, loaded, best, settings)
        favourable = find_favourable_values(trained, splits, loaded, settings)
        evaluation = evaluate_on_test(trained, splits, settings, run_id)
        log_reference(trained, splits, loaded, settings, run_id)
        version = log_and_register(trained, favourable, splits, loaded, settings, run_id)
    except BaseException:
        registry.connect(settings).set_terminated(run_id, status="FAILED")
        raise
    return TrainResult(
        model_name=settings.model_name,
        version=version,
        run_id=run_id,
        family=best.family,
        params=best.params,
        cv_roc_auc=rescored.cv_roc_auc,
        evaluation=evaluation,
        dataset=loaded.name,
        dataset_sha256=loaded.sha256,
        rows=report.rows,
    )
