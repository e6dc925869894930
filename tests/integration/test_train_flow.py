"""The train flow's tracking: an open parent run, its data lineage, and an honest CV figure.

Runs against MLflow on SQLite in a folder of the test's own, on a small synthetic draw.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from flows.train import rescore_best, start_run, train_flow
from loanops import registry
from loanops.data import LoadedDataset, load_dataset
from loanops.features import Splits, build_model, split_frame
from loanops.settings import Settings
from loanops.tune import TuneResult, cross_validated_aucs
from loanops.validation import validate_training_frame
from tests.integration.conftest import LoanopsEnvironment

pytestmark = pytest.mark.integration

ROWS = 3_000


@pytest.fixture
def settings(tmp_path: Path, loanops_env: LoanopsEnvironment) -> Settings:
    env = {
        "LOANOPS_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "LOANOPS_HOME": str(tmp_path / "home"),
        "LOANOPS_DATASET": "synthetic",
        "LOANOPS_DATASET_ROWS": str(ROWS),
        "LOANOPS_TUNE_TRIALS": "2",
        "LOANOPS_BOOTSTRAP_SAMPLES": "200",
    }
    return loanops_env(env)


@pytest.fixture
def data(settings: Settings) -> tuple[LoadedDataset, Splits]:
    loaded = load_dataset(
        settings.training.dataset, rows=settings.training.dataset_rows, seed=settings.training.seed
    )
    splits = split_frame(
        loaded.frame,
        loaded.schema,
        test_size=settings.training.test_size,
        validation_size=settings.training.validation_size,
        seed=settings.training.seed,
    )
    return loaded, splits


def test_start_run_leaves_the_parent_run_open_with_its_lineage(
    settings: Settings, data: tuple[LoadedDataset, Splits]
) -> None:
    loaded, splits = data
    report = validate_training_frame(
        loaded.frame,
        loaded.schema,
        min_positives=settings.training.validation_min_positives,
        unknown_category_tolerance=settings.training.validation_unknown_category_tolerance,
    )

    run_id = start_run.fn(settings, loaded, report, splits)

    run = registry.connect(settings).get_run(run_id)
    assert run.info.status == "RUNNING" and run.info.end_time is None
    assert mlflow.active_run() is None
    assert run.inputs is not None
    (dataset_input,) = run.inputs.dataset_inputs
    assert {tag.key: tag.value for tag in dataset_input.tags} == {"mlflow.data.context": "training"}
    assert dataset_input.dataset.name == "synthetic"
    tags = run.data.tags
    assert tags["loanops.data_rows"] == str(ROWS)
    assert tags["loanops.training_rows"] == str(len(splits.train))
    for key, value in loaded.dataset.provenance.items():
        assert tags[f"loanops.provenance.{key}"] == value


def test_rescore_best_scores_the_winner_on_fresh_folds(
    settings: Settings, data: tuple[LoadedDataset, Splits]
) -> None:
    loaded, splits = data
    client = registry.connect(settings)
    experiment_id = registry.ensure_experiment(client, settings.experiment_name, settings)
    run_id = client.create_run(experiment_id).info.run_id
    params = {"C": 0.5, "log_amounts": True}
    best = TuneResult("logreg", params, cv_roc_auc=0.99, cv_roc_auc_std=0.0, trials=[])

    rescored = rescore_best.fn(splits, loaded, best, settings, run_id)

    development = splits.development
    expected = cross_validated_aucs(
        build_model(loaded.schema, "logreg", params, settings.training.seed),
        development.X,
        development.y,
        folds=settings.training.cv_folds,
        seed=settings.training.seed + 1,
    )
    assert rescored.fold_aucs == pytest.approx(expected)
    assert len(rescored.fold_aucs) == settings.training.cv_folds
    assert rescored.cv_roc_auc == pytest.approx(np.mean(expected))
    run = client.get_run(run_id)
    assert run.data.metrics["cv_roc_auc"] == pytest.approx(rescored.cv_roc_auc)
    assert run.data.metrics["cv_roc_auc_std"] == pytest.approx(np.std(expected))
    assert run.data.params["cv_rescore_fold_seed"] == str(settings.training.seed + 1)
    assert run.info.status == "RUNNING"


@pytest.mark.timeout(300)
def test_train_flow_reports_the_rescored_auc_and_keeps_the_searchs_own(
    settings: Settings,
) -> None:
    result = train_flow()

    client = registry.connect(settings)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert result.cv_roc_auc == pytest.approx(metrics["cv_roc_auc"])
    assert [m.value for m in client.get_metric_history(result.run_id, "cv_roc_auc")] == [
        pytest.approx(result.cv_roc_auc)
    ]
    trials = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    search_best = max(
        t.data.metrics["cv_roc_auc"] for t in trials if "cv_roc_auc" in t.data.metrics
    )
    assert metrics["search_best_cv_roc_auc"] == pytest.approx(search_best)
    assert metrics["cv_roc_auc"] != pytest.approx(metrics["search_best_cv_roc_auc"], abs=1e-9)
    version = client.get_model_version(settings.model_name, result.version)
    assert version.tags["loanops.data_rows"] == str(ROWS)
    assert version.tags["loanops.training_rows"] == run.data.params["train_rows"]
    assert version.tags["loanops.provenance.licence"] == "generated"


def test_logging_the_model_leaves_the_run_open_and_files_it_in_the_runs_experiment(
    settings: Settings, data: tuple[LoadedDataset, Splits]
) -> None:
    loaded, splits = data
    client = registry.connect(settings)
    experiment_id = registry.ensure_experiment(client, settings.experiment_name, settings)
    run_id = client.create_run(experiment_id).info.run_id
    model = build_model(loaded.schema, "logreg", {"C": 0.1}, seed=0).fit(
        splits.train.X, splits.train.y
    )
    card = registry.ModelCard(
        threshold=0.2,
        family="logreg",
        params={"C": 0.1},
        dataset=loaded.name,
        dataset_sha256=loaded.sha256,
        cost_false_approve=5.0,
        cost_false_decline=1.0,
        feature_schema=loaded.schema.model_dump(mode="json"),
    )

    info = registry.log_model(client, run_id, model, loaded.schema, splits.train.X.head(3), card)

    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.info.end_time is None
    logged = client.get_logged_model(info.model_id)
    assert logged.experiment_id == experiment_id and logged.source_run_id == run_id
    reloaded = mlflow.sklearn.load_model(info.model_uri)
    expected = model.predict_proba(splits.test.X)
    assert np.array_equal(reloaded.predict_proba(splits.test.X), expected)
