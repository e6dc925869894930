"""Helpers for the API tests: settings, broken model versions and running `loanops serve`.

Good model versions come from `tests.integration.serving_fixtures.register_version` (a small
logistic regression on synthetic loans, logged as the training flow logs it). This module adds
what a bad release looks like to the serving tier: a model without the loanops card, a loanops
model whose stored file was damaged after it was logged, and a loanops model that loads but
raises while scoring many applicants. The serving tier only follows an alias, so `point_alias`
is a faithful stand-in for the promotion flow here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import mlflow.sklearn
import pandas as pd
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

from loanops import registry
from loanops.data import synthetic as syn
from loanops.explain import Explainer
from loanops.settings import Settings
from loanops.train import TrainedModel
from serving.app import create_app
from serving.scorer.compiled import CompiledScorer
from tests.integration.serving_fixtures import register_version
from tests.services import _process_group, _tail, free_port
from tests.waiting import wait_for

API_KEYS = ("k1-3f9a7c2e", "k2-b81d04aa")
"""Keys the test APIs accept; distinctive, so that a leak into a log is easy to spot."""
SCHEMA = syn.SCHEMA


def unique_model_name(prefix: str = "api-test") -> str:
    """A registered-model name no other test uses, so tests can share one registry."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def layered(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`Settings` keywords: `overrides` on top of `values`, a group's dict field by field."""
    merged = dict(values)
    for key, value in overrides.items():
        below = merged.get(key)
        merged[key] = (
            {**below, **value} if isinstance(below, dict) and isinstance(value, dict) else value
        )
    return merged


def registry_settings(home: Path, **overrides: Any) -> Settings:
    """Settings of a fresh registered model on synthetic loans, stored under `home`."""
    values: dict[str, Any] = {
        "home": home,
        "model_name": unique_model_name(),
        "training": {"dataset": "synthetic"},
    }
    return Settings(**layered(values, overrides))


def api_settings(registry: Settings, folder: Path, **overrides: Any) -> Settings:
    """Settings of an API serving from `registry`'s model registry, with its state in `folder`.

    Each API gets a decision log and storage folder of its own, so tests can count what it wrote.
    """
    values: dict[str, Any] = {
        "home": folder / "home",
        "tracking_uri": registry.mlflow_uri,
        "model_name": registry.model_name,
        "training": {"dataset": registry.training.dataset},
        "serving": {"api_keys": ",".join(API_KEYS)},
        "decision_log": {"database_url": f"sqlite:///{folder / 'decisions.db'}"},
        "batch": {"storage_dir": folder / "storage"},
    }
    return Settings(**layered(values, overrides))


def api_environment(settings: Settings) -> dict[str, str]:
    """The `LOANOPS_*` variables that give a `loanops serve` process these settings."""
    environment = {
        "LOANOPS_HOME": str(settings.home),
        "LOANOPS_TRACKING_URI": settings.mlflow_uri,
        "LOANOPS_MODEL_NAME": settings.model_name,
        "LOANOPS_DATASET": settings.training.dataset,
        "LOANOPS_DATABASE_URL": settings.decision_db_url,
        "LOANOPS_STORAGE_DIR": str(settings.storage_path),
        "LOANOPS_MODEL_POLL_SECONDS": str(settings.serving.model_poll_seconds),
        "LOANOPS_DECISION_LOG_FLUSH_SECONDS": str(settings.decision_log.flush_seconds),
        "LOANOPS_DECISION_LOG_BATCH_SIZE": str(settings.decision_log.batch_size),
        "LOANOPS_DECISION_LOG_READY_BACKLOG": str(settings.decision_log.ready_backlog),
        "LOANOPS_DECISION_LOG_MEMORY_BACKLOG": str(settings.decision_log.memory_backlog),
        "LOANOPS_BODY_TIMEOUT_SECONDS": str(settings.serving.body_timeout_seconds),
        "LOANOPS_CHALLENGER_ALIAS": settings.serving.challenger_alias,
        "LOANOPS_CHALLENGER_SHARE": str(settings.serving.challenger_share),
        "LOANOPS_CHALLENGER_SEED": str(settings.serving.challenger_seed),
    }
    if settings.serving.api_keys is not None:
        environment["LOANOPS_API_KEYS"] = settings.serving.api_keys.get_secret_value()
    if settings.serving.model_ref is not None:
        environment["LOANOPS_MODEL_REF"] = settings.serving.model_ref
    if settings.batch.redis_url is not None:
        environment["LOANOPS_REDIS_URL"] = settings.batch.redis_url
    return environment


# --- model versions -----------------------------------------------------------------------------


def register_model_without_card(settings: Settings) -> str:
    """Register a plain scikit-learn model, which loanops did not log; returns its version."""
    frame = syn.generate(500, seed=0)
    features = frame[["loan_amnt", "int_rate"]].astype("float64")
    model = LogisticRegression().fit(features, frame["default"])
    client = registry.connect(settings)
    experiment_id = registry.ensure_experiment(client, settings.experiment_name, settings)
    run_id = client.create_run(experiment_id, run_name="api-test-no-card").info.run_id
    logged = client.create_logged_model(
        experiment_id=experiment_id, name=registry.MODEL_ARTIFACT, source_run_id=run_id
    )
    info = mlflow.sklearn.log_model(
        model,
        name=registry.MODEL_ARTIFACT,
        model_id=logged.model_id,
        run_id=run_id,
        input_example=features.head(2),
        pip_requirements=registry.model_requirements(),
    )
    version = registry.register_version(client, settings.model_name, info, run_id, {})
    client.set_terminated(run_id)
    return str(version.version)


def damage_model_file(client: MlflowClient, name: str, version: str) -> Path:
    """Overwrite a version's serialized model, in a local file artifact store, with junk.

    Returns:
        The damaged file.
    """
    source = client.get_model_version_download_uri(name, version)
    folder = Path(unquote(urlparse(source).path))
    (damaged,) = folder.glob("*.skops")
    damaged.write_bytes(b"this is not a skops archive")
    return damaged


UNREADABLE_FAVOURABLE = "n/a"
"""The favourable value `register_version_failing_to_explain` stores: text where a number goes."""
FOREST = {
    "learning_rate": 0.1,
    "max_leaf_nodes": 4,
    "min_samples_leaf": 50,
    "l2_regularization": 1.0,
    "max_iter": 20,
}
"""A small forest: its trees split on a feature only in some branches, so a feature may lie on
one applicant's paths and not on another's."""


def register_version_failing_to_explain(settings: Settings, *, seed: int = 3) -> str:
    """Register a forest that loads and passes its smoke test, then raises scoring applicants.

    Its card gives one numeric feature a favourable value that is text. Adverse-action reasons
    read a favourable value only when one of the applicant's tree paths splits on that feature;
    the input example the smoke test scores holds training rows whose paths never do. An
    applicant whose paths do makes `LoadedModel.score` raise (`float("n/a")`). The feature is
    the one on the most training rows' paths that still leaves five rows off them.

    Returns:
        The new version.
    """

    def unreadable_reason(
        trained: TrainedModel, train: pd.DataFrame, card: registry.ModelCard
    ) -> tuple[registry.ModelCard, pd.DataFrame]:
        scorer = CompiledScorer.compile(trained.model, SCHEMA)
        rows = train.head(400)
        records = [
            {k: None if pd.isna(v) else v for k, v in r.items()}
            for r in rows.astype(object).to_dict(orient="records")
        ]
        best: tuple[int, str, list[int]] | None = None
        for feature in SCHEMA.numeric_features:
            favourable = {**card.favourable_values, feature: UNREADABLE_FAVOURABLE}
            explainer = Explainer(SCHEMA, favourable, scorer.score_rows, scorer.score_row_variants)
            safe = [i for i, row in enumerate(records) if _explains(explainer, row)]
            failing = len(records) - len(safe)
            if len(safe) >= 5 and (best is None or failing > best[0]):
                best = (failing, feature, safe[:5])
        assert best is not None and best[0] > 0, "no feature lies on only some trees' paths"
        _, feature, safe = best
        damaged = dataclasses.replace(
            card, favourable_values={**card.favourable_values, feature: UNREADABLE_FAVOURABLE}
        )
        return damaged, rows.iloc[safe]

    return register_version(
        settings, seed=seed, family="hist_gbt", params=FOREST, rows=2000, tamper=unreadable_reason
    )


def _explains(explainer: Explainer, row: dict[str, Any]) -> bool:
    try:
        explainer.reasons(row, 0.5)
    except ValueError:
        return False
    return True


def point_alias(settings: Settings, version: str, alias: str | None = None) -> None:
    """Point `alias` (default: the production alias) at `version`: all serving watches."""
    client = registry.connect(settings)
    client.set_registered_model_alias(
        settings.model_name, alias or settings.production_alias, version
    )


def wait_until_ready(client: httpx.Client, timeout: float = 60.0) -> dict[str, Any]:
    """Poll `/readyz` until it answers 200; its body.

    Raises:
        AssertionError: when it does not within `timeout` seconds, with the last answer.
    """

    def ready() -> dict[str, Any] | None:
        response = client.get("/readyz")
        if response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body

    def last_answer() -> str:
        try:
            return f"/readyz: {client.get('/readyz').text}"
        except httpx.TransportError as error:
            return f"/readyz: {error!r}"

    return wait_for(
        ready,
        timeout=timeout,
        what="/readyz to answer 200",
        ignoring=(httpx.TransportError,),
        details=last_answer,
    )


LOANOPS = Path(sys.executable).parent / "loanops"


@dataclass
class Server:
    """A running `loanops serve` process and an HTTP client for it."""

    url: str
    pid: int
    log_path: Path
    settings: Settings
    process: Any = field(repr=False)
    client: httpx.Client = field(repr=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def loanops_serve(settings: Settings, folder: Path) -> Iterator[Server]:
    """Run `loanops serve` with `settings` until the context exits, then SIGTERM it by PID."""
    port = free_port()
    log_path = folder / "serve.log"
    command = [
        str(LOANOPS),
        "serve",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
        "--log-level", "info",
    ]  # fmt: skip
    env = {
        **os.environ,
        **api_environment(settings),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    url = f"http://127.0.0.1:{port}"
    with (
        _process_group(
            command, log_path, stop_signal=signal.SIGTERM, env=env, cwd=folder, grace=40.0
        ) as process,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        server = Server(url, process.pid, log_path, settings, process, client)
        try:
            wait_for(
                lambda: _answers(client) or process.poll() is not None,
                timeout=90,
                what="loanops serve to answer or exit",
            )
            assert process.poll() is None, f"loanops serve exited:\n{_tail(log_path)}"
            wait_until_ready(client, timeout=90)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{_tail(log_path)}") from None
        yield server


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def through_api(
    loans: pd.DataFrame, *, ready_timeout: float = 180.0
) -> tuple[datetime, datetime, list[str]]:
    """Score synthetic `loans` through the real API app, so their decisions land in the log.

    The app is built from the `LOANOPS_*` environment in force. Returns the window that holds
    exactly those decisions, and their request ids.
    """
    rows = [
        {k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in syn.SCHEMA.to_frame(loans).astype(object).to_dict(orient="records")
    ]
    start = datetime.now(UTC)
    request_ids: list[str] = []
    with TestClient(create_app(Settings())) as client:
        wait_until_ready(client, timeout=ready_timeout)
        for first in range(0, len(rows), 1000):
            body = {"applications": rows[first : first + 1000]}
            response = client.post("/v1/predict/batch", content=json.dumps(body))
            assert response.status_code == 200, response.text
            request_ids += [p["request_id"] for p in response.json()["predictions"]]
    # The app's shutdown has flushed the decision log.
    return start, datetime.now(UTC), request_ids
