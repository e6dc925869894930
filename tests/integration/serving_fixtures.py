"""Reusable pieces for the serving tests: a registered production model, Redis, batch workers.

- `serving_model` (session): a small logistic regression trained on synthetic loans, logged and
  registered the way the training flow does it (model card, signature, input example, test
  metrics, lineage tags) in a SQLite MLflow store under a temporary `LOANOPS_HOME`, and made
  production. It skips Prefect, tuning and the gate, which are tested elsewhere, so it takes
  a few seconds. Its threshold declines about a fifth of applicants, so adverse-action
  reasons get exercised.
- `register_version` / `promote`: another version of the same model, e.g. to move production.
- `batch_redis_url` (session): a Redis database of this session's own on the shared server (or
  on a throwaway server when none answers), flushed at the end.
- `celery_worker`: a real `loanops worker` process (the manifests' command), stopped by its
  PID; `pool_pids` lists its pool processes, for tests that kill one.

Import the fixtures into a test module or conftest:
`from tests.integration.serving_fixtures import serving_model, batch_redis_url  # noqa: F401`.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest
import redis
from mlflow.entities import Metric

from loanops import registry
from loanops.data import synthetic as syn
from loanops.evaluate import CostMatrix, evaluate
from loanops.features import split_frame
from loanops.settings import ModelFamily, Settings
from loanops.train import TrainedModel, fit
from tests.services import _process_group, _tail, redis_url
from tests.waiting import exited, wait_for

TRAINING_ROWS = 4000
LOGREG = {"C": 0.015, "log_amounts": True}
SCORECARD = {"C": 1.0, "max_n_bins": 5, "min_bin_size": 0.05}
DECLINE_SHARE = 0.2
"""Share of validation applicants the fixture model's threshold declines."""
WORKER_READY_TIMEOUT_S = 90.0
_CLAIM_KEY = "loanops:test-session"

Tamper = Callable[
    [TrainedModel, pd.DataFrame, registry.ModelCard], tuple[registry.ModelCard, pd.DataFrame]
]
"""Given the fitted model, its training features and its card: the card and example to log."""


@dataclass(frozen=True)
class ServingModel:
    """A registered model in a temporary `LOANOPS_HOME`, and how to point code at it.

    Attributes:
        home: the `LOANOPS_HOME` (SQLite MLflow store, artifacts, decision log, storage).
        model_name: the registered model's name, of this session's own.
        version: the version holding the production alias.
        applicants: synthetic applications the model never saw, every column the generator
            makes (features, `id`, label and `pd_true`).
    """

    home: Path
    model_name: str
    version: str
    applicants: pd.DataFrame = field(repr=False)

    def environment(self, **overrides: str) -> dict[str, str]:
        """`LOANOPS_*` variables that point a process at this model (and `overrides`)."""
        return {
            "LOANOPS_HOME": str(self.home),
            "LOANOPS_MODEL_NAME": self.model_name,
            "LOANOPS_DATASET": "synthetic",
            **overrides,
        }

    def settings(self, **overrides: Any) -> Settings:
        """Settings for this model, built without reading `LOANOPS_*` from the environment."""
        values: dict[str, Any] = {
            "home": self.home,
            "model_name": self.model_name,
            "training": {"dataset": "synthetic"},
            **overrides,
        }
        return Settings(**values)


def register_version(
    settings: Settings,
    *,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    rows: int = TRAINING_ROWS,
    decline_share: float = DECLINE_SHARE,
    family: ModelFamily = "logreg",
    tamper: Tamper | None = None,
) -> str:
    """Train a model (a logistic regression unless told) on synthetic loans and register it.

    Args:
        settings: where to register (`home` or `tracking_uri`, `model_name`).
        seed: draws the training rows and seeds the fit; another seed gives another model.
        params: the family's parameters (default: the fixture's logistic regression, or
            `SCORECARD` for a scorecard).
        rows: training rows drawn.
        decline_share: the threshold declines this share of validation applicants.
        family: the model family.
        tamper: what to log instead of the card and the input example as trained, from the
            fitted model and its training features; for versions that are broken on purpose.

    Returns:
        The new version.
    """
    schema = syn.SCHEMA
    raw = syn.generate(rows, seed=seed)
    splits = split_frame(raw, schema, test_size=0.2, validation_size=0.25, seed=seed)
    costs = CostMatrix(settings.training.cost_false_approve, settings.training.cost_false_decline)
    params = params or (SCORECARD if family == "scorecard" else LOGREG)
    trained = fit(schema, family, params, splits.train, splits.validation, costs, seed)
    p_validation = trained.predict_pd(splits.validation.X)
    threshold = float(np.quantile(p_validation, 1 - decline_share))
    favourable = trained.favourable_values(splits.train.X, schema, seed=seed)
    evaluation = evaluate(
        splits.test.y,
        trained.predict_pd(splits.test.X),
        threshold=threshold,
        costs=costs,
        bootstrap_samples=100,
        seed=seed,
    )
    card = registry.ModelCard(
        threshold=threshold,
        family=family,
        params=dict(params),
        dataset="synthetic",
        dataset_sha256="test-fixture",
        cost_false_approve=settings.training.cost_false_approve,
        cost_false_decline=settings.training.cost_false_decline,
        feature_schema=schema.model_dump(mode="json"),
        favourable_values=favourable,
    )
    client = registry.connect(settings)
    experiment_id = registry.ensure_experiment(client, settings.experiment_name, settings)
    tags = {"loanops.dataset": "synthetic", "loanops.training_rows": str(len(splits.train.X))}
    run_id = client.create_run(experiment_id, run_name=f"fixture-{seed}", tags=tags).info.run_id
    timestamp = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[
            Metric(name, value, timestamp, 0)
            for name, value in {**evaluation.as_metrics(), "cv_roc_auc": evaluation.roc_auc}.items()
        ],
    )
    example = splits.train.X.head(5)
    if tamper is not None:
        card, example = tamper(trained, splits.train.X, card)
    info = registry.log_model(client, run_id, trained.model, schema, example, card)
    version = registry.register_version(client, settings.model_name, info, run_id, tags)
    client.set_terminated(run_id)
    return str(version.version)


def promote(settings: Settings, version: str) -> None:
    """Give `version` the production alias (and the replaced version the previous alias)."""
    client = registry.connect(settings)
    champion = registry.version_by_alias(client, settings.model_name, settings.production_alias)
    registry.move_aliases(
        client, settings, client.get_model_version(settings.model_name, version), champion
    )


@pytest.fixture(scope="session")
def serving_model(tmp_path_factory: pytest.TempPathFactory) -> ServingModel:
    """A production model in a temporary home; see the module docstring."""
    home = tmp_path_factory.mktemp("serving-home")
    model = ServingModel(
        home=home,
        model_name=f"loan-default-{uuid.uuid4().hex[:8]}",
        version="",
        applicants=syn.generate(5000, seed=2024),
    )
    settings = model.settings()
    version = register_version(settings, seed=0)
    promote(settings, version)
    return ServingModel(model.home, model.model_name, version, model.applicants)


# --- Redis -------------------------------------------------------------------------------------


@contextlib.contextmanager
def claimed_redis_db(server_url: str) -> Iterator[str]:
    """Yield the URL of an empty database on `server_url`, claimed for this context.

    The claim is a key in the database, so that other sessions that look for an empty
    database skip it; the database is flushed on exit.
    """
    token = secrets.token_hex(8)
    for db in random.sample(range(1, 16), 15):
        url = f"{server_url.rstrip('/')}/{db}"
        client = redis.Redis.from_url(url)
        try:
            if client.dbsize() == 0 and client.set(_CLAIM_KEY, token, nx=True, ex=3600):
                if client.dbsize() == 1:
                    break
                client.delete(_CLAIM_KEY)
        finally:
            client.close()
    else:
        raise RuntimeError(f"no empty Redis database on {server_url} to claim")
    try:
        yield url
    finally:
        client = redis.Redis.from_url(url)
        try:
            client.flushdb()
        finally:
            client.close()


@pytest.fixture(scope="session")
def batch_redis_url() -> Iterator[str]:
    """A Redis database of this session's own, for the batch-job queue."""
    with redis_url() as server, claimed_redis_db(server) as url:
        yield url


# --- worker processes --------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerProcess:
    """A running `loanops worker` process."""

    pid: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 60) -> str:
        return _tail(self.log_path, lines)


def pool_pids(worker: WorkerProcess) -> list[int]:
    """PIDs of the worker's pool processes (its live children)."""
    try:
        children = psutil.Process(worker.pid).children()
    except psutil.NoSuchProcess:
        return []
    return [c.pid for c in children if c.status() != psutil.STATUS_ZOMBIE]


@contextlib.contextmanager
def celery_worker(
    environment: dict[str, str],
    *,
    concurrency: int = 1,
    log_dir: Path | None = None,
) -> Iterator[WorkerProcess]:
    """Run `loanops worker` with `environment` on top of this process's.

    Waits until Celery reports ready and the pool is up; on exit the worker gets SIGTERM (warm
    shutdown), then SIGKILL for the whole process group if it lingers. The log goes to
    `log_dir`, or to a temporary folder removed on exit.
    """
    if log_dir is None:
        with tempfile.TemporaryDirectory(prefix="loanops-worker-") as temporary:
            with celery_worker(environment, concurrency=concurrency, log_dir=Path(temporary)) as w:
                yield w
        return
    folder = log_dir
    log_path = folder / f"worker-{secrets.token_hex(4)}.log"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **environment,
    }
    command = [
        str(Path(sys.executable).parent / "loanops"),
        "worker",
        f"--concurrency={concurrency}",
    ]
    with _process_group(
        command,
        log_path,
        stop_signal=signal.SIGTERM,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        grace=20.0,
    ) as proc:
        worker = WorkerProcess(pid=proc.pid, log_path=log_path)
        wait_for(
            lambda: " ready." in worker.log() and len(pool_pids(worker)) >= concurrency,
            timeout=WORKER_READY_TIMEOUT_S,
            what=f"the worker's ready line and {concurrency} pool processes",
            interval=0.2,
            given_up=lambda: exited(proc, "the worker"),
            details=worker.tail,
        )
        yield worker
