"""Tuning workers: processes that pull trials from one shared Optuna study.

The train flow names the study after its MLflow run, creates it in the storage the settings name
(`LOANOPS_TUNE_STORAGE_URL`), and starts `LOANOPS_TUNE_WORKERS` workers, all with the same entry
point, `loanops tune-worker RUN_ID --worker I`: local processes, or flow runs of the
`tune-worker` deployment on the Prefect work pool (`flows.tune_worker`). Each worker loads and
splits the data exactly as the flow did, refuses to go on when its data's hash differs from the
run's lineage, and runs trials until the study's budget is met, logging each as an MLflow child
run of the flow's run. The flow then reads the search's result from the study itself, so a trial
counts whichever worker ran it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from loanops import registry
from loanops.data import LoadedDataset, load_training_data
from loanops.features import Split, split_frame
from loanops.schema import FeatureSchema
from loanops.settings import Settings
from loanops.tune import TrialRecord, open_study, run_trials

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

STUDY_PREFIX = "loanops-train-"

# What the flow's parameters may override, passed on to each worker as its own settings.
_PASSED_ON = {
    "LOANOPS_DATASET": "dataset",
    "LOANOPS_DATASET_ROWS": "dataset_rows",
    "LOANOPS_SEED": "seed",
    "LOANOPS_TUNE_TRIALS": "tune_trials",
    "LOANOPS_TUNE_TIMEOUT_SECONDS": "tune_timeout_seconds",
}


class WorkerDataError(RuntimeError):
    """A worker's data differs from the data the run was started on."""


def study_name(run_id: str) -> str:
    return f"{STUDY_PREFIX}{run_id}"


def storage_url(settings: Settings) -> str | None:
    url = settings.training.tune_storage_url
    return url.get_secret_value() if url is not None else None


def trial_logger(settings: Settings, parent_run_id: str) -> TrialLogger:
    client = registry.connect(settings)
    return TrialLogger(client, client.get_run(parent_run_id).info.experiment_id, parent_run_id)


class TrialLogger:
    """Logs each finished trial as an MLflow child run of the training run."""

    def __init__(self, client: MlflowClient, experiment_id: str, parent_run_id: str) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id

    def __call__(self, record: TrialRecord) -> None:
        import mlflow.entities

        client = self.client
        run = client.create_run(
            self.experiment_id,
            run_name=f"trial-{record.number:03d}-{record.family}",
            tags={"mlflow.parentRunId": self.parent_run_id, "loanops.trial_state": record.state},
        )
        client.log_batch(
            run.info.run_id,
            params=[mlflow.entities.Param("family", record.family)]
            + [mlflow.entities.Param(k, str(v)) for k, v in record.params.items()],
            metrics=[
                mlflow.entities.Metric("fold_roc_auc", auc, 0, step)
                for step, auc in enumerate(record.fold_aucs)
            ]
            + (
                [mlflow.entities.Metric("cv_roc_auc", record.cv_roc_auc, 0, 0)]
                if record.state == "COMPLETE" and record.cv_roc_auc is not None
                else []
            ),
        )
        status = "FINISHED" if record.state == "COMPLETE" else "KILLED"
        client.set_terminated(run.info.run_id, status=status)


def run_worker(settings: Settings, run_id: str, worker: int, data_path: str | None) -> None:
    """One worker: load and split the run's data, then run trials until the study's budget.

    Raises:
        WorkerDataError: when the data's hash differs from the run's `loanops.dataset_sha256`.
        ValueError: when the settings name no shared storage.
    """
    url = storage_url(settings)
    if url is None:
        raise ValueError("a tuning worker needs LOANOPS_TUNE_STORAGE_URL")
    training = settings.training
    loaded = load_training_data(
        training.dataset, rows=training.dataset_rows, seed=training.seed, data_path=data_path
    )
    check_lineage(settings, run_id, loaded)
    splits = split_frame(
        loaded.frame,
        loaded.schema,
        test_size=training.test_size,
        validation_size=training.validation_size,
        seed=training.seed,
    )
    study = open_study(
        seed=training.seed,
        storage_url=url,
        study_name=study_name(run_id),
        worker=worker,
        heartbeat_seconds=training.tune_heartbeat_seconds,
    )
    search(study, settings, run_id, splits.development, loaded.schema, worker=worker)


def search(
    study: optuna.Study,
    settings: Settings,
    run_id: str,
    development: Split,
    schema: FeatureSchema,
    *,
    worker: int = 0,
) -> None:
    """Run the settings' search on `study` in this process, logging each trial under `run_id`."""
    training = settings.training
    run_trials(
        study,
        development.X,
        development.y,
        schema,
        families=training.model_families,
        n_trials=training.tune_trials,
        timeout_seconds=training.tune_timeout_seconds,
        folds=training.cv_folds,
        seed=training.seed,
        on_trial=trial_logger(settings, run_id),
        worker=worker,
    )


def check_lineage(settings: Settings, run_id: str, loaded: LoadedDataset) -> None:
    tags = registry.connect(settings).get_run(run_id).data.tags
    expected = tags.get("loanops.dataset_sha256")
    if expected != loaded.sha256:
        raise WorkerDataError(
            f"this worker's {loaded.name} data has sha256 {loaded.sha256[:12]}, but run "
            f"{run_id} was started on {str(expected)[:12]}: a worker must tune on the run's data"
        )


def worker_overrides(settings: Settings) -> dict[str, object]:
    """The training settings a run may have been given as flow parameters, for its workers."""
    return {field: getattr(settings.training, field) for field in _PASSED_ON.values()}


def worker_environment(settings: Settings) -> dict[str, str]:
    """The environment of a local worker: this process's, with the run's overrides."""
    environment = dict(os.environ)
    for variable, field in _PASSED_ON.items():
        value = getattr(settings.training, field)
        if value is None:
            environment.pop(variable, None)
        else:
            environment[variable] = str(value)
    # One thread per worker: N workers then use N cores, and two OpenMP threads stall
    # single-row work now and then (STACK-NOTES).
    environment["OMP_NUM_THREADS"] = "1"
    return environment


def worker_command(run_id: str, worker: int, data_path: str | None) -> list[str]:
    command = [sys.executable, "-m", "cli", "tune-worker", run_id, "--worker", str(worker)]
    if data_path is not None:
        command += ["--data", str(Path(data_path).resolve())]
    return command


def run_local_workers(
    settings: Settings, run_id: str, data_path: str | None, *, log_folder: Path
) -> Sequence[int]:
    """Start the settings' number of workers as local processes and wait for all of them.

    Returns:
        Each worker's exit code. A worker that fails does not stop the others: the study's
        budget is met by whoever is left.
    """
    log_folder.mkdir(parents=True, exist_ok=True)
    environment = worker_environment(settings)
    processes = []
    for worker in range(settings.training.tune_workers):
        log = (log_folder / f"tune-worker-{run_id}-{worker}.log").open("ab")
        processes.append(
            (
                subprocess.Popen(
                    worker_command(run_id, worker, data_path),
                    env=environment,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
    codes = []
    for worker, (process, log) in enumerate(processes):
        codes.append(process.wait())
        log.close()
        if codes[-1] != 0:
            logger.warning("tuning worker %d of run %s exited with %d", worker, run_id, codes[-1])
    return codes
