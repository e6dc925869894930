"""Tuning workers sharing one Optuna study in PostgreSQL: a killed worker, the train flow's own
workers, and a resumed study.

Real parts throughout: the study lives in a fresh PostgreSQL database, the trials are logged to a
real `mlflow server` (backed by PostgreSQL), and each worker is the production entry point,
`python -m cli tune-worker RUN_ID --worker I`, started as its own process.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from loanops.data import load_training_data
from loanops.settings import Settings
from loanops.tune_workers import study_name, worker_command, worker_environment
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

TRIALS = 8
# Large enough that a trial takes a few seconds, so that a kill lands inside one.
ROWS = 20_000


@dataclass(frozen=True)
class Search:
    settings: Settings
    run_id: str
    storage_url: str
    folder: Path

    def start(self, worker: int, **overrides: str) -> subprocess.Popen[bytes]:
        environment = {**worker_environment(self.settings), **overrides}
        log = (self.folder / f"worker-{worker}.log").open("ab")
        return subprocess.Popen(
            worker_command(self.run_id, worker, None),
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=study_name(self.run_id), storage=self.storage_url)

    def log(self, worker: int) -> str:
        return (self.folder / f"worker-{worker}.log").read_text(errors="replace")


@pytest.fixture
def search(
    database_url: str, mlflow_server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Search]:
    variables = {
        "LOANOPS_HOME": str(tmp_path / "home"),
        "LOANOPS_TRACKING_URI": mlflow_server_url,
        "LOANOPS_EXPERIMENT_NAME": f"shared-study-{tmp_path.name}",
        "LOANOPS_TUNE_STORAGE_URL": database_url,
        "LOANOPS_TUNE_WORKERS": "2",
        "LOANOPS_TUNE_HEARTBEAT_SECONDS": "1",
        "LOANOPS_DATASET": "synthetic",
        "LOANOPS_DATASET_ROWS": str(ROWS),
        "LOANOPS_MODEL_FAMILIES": '["hist_gbt"]',
        "LOANOPS_CV_FOLDS": "3",
        "LOANOPS_TUNE_TRIALS": str(TRIALS),
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    training = settings.training
    loaded = load_training_data(
        training.dataset, rows=training.dataset_rows, seed=training.seed, data_path=None
    )
    client = MlflowClient(mlflow_server_url)
    experiment_id = client.create_experiment(variables["LOANOPS_EXPERIMENT_NAME"])
    run = client.create_run(experiment_id, tags={"loanops.dataset_sha256": loaded.sha256})
    yield Search(settings, run.info.run_id, database_url, tmp_path)


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def test_a_worker_killed_mid_trial_leaves_it_failed_and_the_other_meets_the_budget(
    search: Search,
) -> None:
    workers = [search.start(0), search.start(1)]
    try:

        def running_trial_of_worker_0() -> int | None:
            try:
                trials = search.study().get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            except KeyError:  # the study does not exist yet
                return None
            mine = [t.number for t in trials if t.user_attrs.get("worker") == 0]
            return mine[0] if mine else None

        killed_trial = wait_for(
            running_trial_of_worker_0, timeout=180, interval=0.2, what="a trial of worker 0"
        )
        os.kill(workers[0].pid, signal.SIGKILL)
        assert workers[1].wait(timeout=600) == 0, search.log(1)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

    study = search.study()
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states[killed_trial] == TrialState.FAIL
    assert len(finished(study)) == TRIALS
    assert not [n for n, state in states.items() if state == TrialState.RUNNING]
    by_worker = {t.user_attrs["worker"] for t in finished(study)}
    assert 1 in by_worker

    client = MlflowClient(search.settings.tracking_uri)
    children = client.search_runs(
        [client.get_run(search.run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{search.run_id}'",
    )
    assert len(children) == TRIALS  # one per finished trial; the killed one logged none


def test_the_train_flow_starts_its_workers_and_registers_the_studys_best(
    search: Search, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.train import train_flow

    monkeypatch.setenv("LOANOPS_DATASET_ROWS", "3000")
    monkeypatch.setenv("LOANOPS_MODEL_FAMILIES", '["logreg"]')
    monkeypatch.setenv("LOANOPS_TUNE_TRIALS", "4")
    monkeypatch.setenv("LOANOPS_BOOTSTRAP_SAMPLES", "200")
    result = train_flow()

    study = optuna.load_study(study_name=study_name(result.run_id), storage=search.storage_url)
    trials = finished(study)
    assert len(trials) >= 4
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value or 0)
    assert result.params == best.user_attrs["params"]
    client = MlflowClient(search.settings.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert len(children) == len(trials)
    logs = sorted((search.settings.home / "logs").glob(f"tune-worker-{result.run_id}-*.log"))
    assert len(logs) == 2  # two worker processes, each with its own log


def test_the_train_flow_resumes_a_runs_study_instead_of_starting_over(
    search: Search, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.train import train_flow

    monkeypatch.setenv("LOANOPS_BOOTSTRAP_SAMPLES", "200")
    first = search.start(0, LOANOPS_TUNE_TRIALS="2")
    assert first.wait(timeout=600) == 0, search.log(0)
    before = {t.number: t.value for t in finished(search.study())}

    monkeypatch.setenv("LOANOPS_TUNE_WORKERS", "1")
    result = train_flow(trials=4, resume_run_id=search.run_id)

    assert result.run_id == search.run_id
    after = {t.number: t.value for t in finished(search.study())}
    assert len(after) == 4
    assert {n: after[n] for n in before} == before
    with pytest.raises(ValueError, match="already registered"):
        train_flow(trials=5, resume_run_id=search.run_id)
