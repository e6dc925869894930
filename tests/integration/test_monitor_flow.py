"""The monitor flow end to end: a trained production model, a window of applications, reports in
MLflow and the storage folder, and retraining requested only when a threshold is crossed.

On the real parts: a `mlflow server` process backed by PostgreSQL, the decision log and outcomes
in PostgreSQL, decisions written by the real API app, and a real Prefect server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from flows.monitor import monitor_flow
from flows.performance import performance_flow
from flows.retrain import retrain_flow
from loanops import registry
from loanops.data.synthetic import generate
from loanops.data.synthetic_drift import Drift
from loanops.decisions.database import create_engine_for
from loanops.outcomes import Outcome, record_outcomes
from loanops.registry import version_by_alias
from loanops.settings import Settings
from tests.integration.api_fixtures import through_api
from tests.integration.conftest import LoanopsEnvironment
from tests.services import fresh_database

pytestmark = pytest.mark.integration

ROWS = 12_000  # a reference of about 7,700 rows: drift is judged by distances


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp(f"monitor-home-{uuid.uuid4().hex[:8]}", numbered=False)


@pytest.fixture(scope="module")
def decision_database(postgres_server: str) -> Iterator[str]:
    """The decision log and outcomes on a PostgreSQL database of this module's own."""
    with fresh_database(postgres_server) as url:
        yield url


@pytest.fixture
def settings(
    home: Path,
    loanops_env: LoanopsEnvironment,
    prefect_server: tuple[str, dict[str, str]],
    mlflow_server_url: str,
    decision_database: str,
) -> Settings:
    _, prefect_env = prefect_server
    suffix = home.name.removeprefix("monitor-home-")
    env = {
        **prefect_env,
        "LOANOPS_HOME": str(home),
        # The real `mlflow server` is shared by the session: names of this module's own keep
        # its registry and experiments apart from the other tests'.
        "LOANOPS_TRACKING_URI": mlflow_server_url,
        "LOANOPS_MODEL_NAME": f"loan-default-monitor-{suffix}",
        "LOANOPS_EXPERIMENT_NAME": f"monitor-tests-{suffix}",
        "LOANOPS_MONITORING_EXPERIMENT_NAME": f"monitoring-tests-{suffix}",
        "LOANOPS_PROMOTION_EXPERIMENT_NAME": f"promotion-tests-{suffix}",
        "LOANOPS_DATABASE_URL": decision_database,
        "LOANOPS_DATASET": "synthetic",
        "LOANOPS_DATASET_ROWS": str(ROWS),
        "LOANOPS_TUNE_TRIALS": "2",
        "LOANOPS_MODEL_FAMILIES": '["logreg"]',
        "LOANOPS_BOOTSTRAP_SAMPLES": "200",
        "LOANOPS_RETRAIN_TRIGGER": "subflow",
    }
    settings = loanops_env(env)
    # Both URIs: a bare MlflowClient(tracking_uri) takes the registry URI an earlier test set
    # process-wide, and would read and move aliases in another test's store.
    client = registry.connect(settings)
    if not client.search_model_versions(f"name = '{settings.model_name}'"):
        retrain_flow()
    if version_by_alias(client, settings.model_name, settings.production_alias) is None:
        # The gate's verdict on this small model is not what these tests are about; the
        # scenarios need a production version whether or not it cleared the floors.
        first = min(int(v) for v in versions(settings))
        client.set_registered_model_alias(
            settings.model_name, settings.production_alias, str(first)
        )
    return settings


def days_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 86_400


def window(home: Path, name: str, drift: Drift | None, seed: int) -> str:
    path = home / f"{name}.parquet"
    generate(8_000, seed=seed, drift=drift).to_parquet(path, index=False)
    return str(path)


def versions(settings: Settings) -> list[str]:
    client = registry.connect(settings)
    return [v.version for v in client.search_model_versions(f"name = '{settings.model_name}'")]


def test_no_drift_saves_the_report_and_triggers_nothing(settings: Settings, home: Path) -> None:
    before = versions(settings)
    start, end, _ = through_api(generate(8_000, seed=11))

    result = monitor_flow(days=days_between(start, end), end=end)

    assert result.reasons == []
    assert result.trigger is None
    assert result.summary.drift.share_drifted < settings.monitor.drift_share_threshold
    assert (result.report_dir / "report.html").stat().st_size > 0
    assert (result.report_dir / "report.json").stat().st_size > 0
    run = registry.connect(settings).get_run(result.run_id)
    assert run.data.tags["loanops.model_version"] == result.summary.model_version
    assert run.data.metrics["share_drifted_features"] == result.summary.drift.share_drifted
    assert result.summary.rows == 8_000
    assert result.summary.prediction is not None and not result.summary.prediction.drifted
    assert versions(settings) == before


def test_a_file_can_be_monitored_offline(settings: Settings, home: Path) -> None:
    result = monitor_flow(data_path=window(home, "calm", None, seed=15))

    assert result.summary.rows == 8_000
    assert result.summary.prediction is None  # applications, not decisions: no scores
    assert result.reasons == []


def test_covariate_shift_is_detected_and_retraining_registers_a_candidate(
    settings: Settings, home: Path
) -> None:
    before = versions(settings)
    shift = Drift.preset("covariate_shift", start=0.0)
    start, end, _ = through_api(generate(8_000, seed=12, drift=shift))

    result = monitor_flow(days=days_between(start, end), end=end)

    assert result.reasons, result.summary.drift
    assert "features drifted" in result.reasons[0]
    assert result.trigger is not None and result.trigger.retrain is not None
    assert result.trigger.event_id is not None
    assert len(versions(settings)) == len(before) + 1  # the gate then decides on it
    assert result.trigger.retrain.promotion is not None


def test_a_missingness_spike_is_flagged_in_data_quality(settings: Settings, home: Path) -> None:
    spike = Drift.preset("missingness_spike", start=0.0)
    start, end, _ = through_api(generate(8_000, seed=13, drift=spike))

    result = monitor_flow(days=days_between(start, end), end=end)

    assert result.summary.quality.missingness_spikes == ("emp_length",)


def test_a_macro_shock_moves_no_feature_but_the_performance_run_catches_it(
    settings: Settings, home: Path
) -> None:
    """Defaults rise with no feature moving: decisions go through the real API, outcomes follow."""
    shock = Drift.preset("macro_shock", start=0.0)
    loans = generate(3_000, seed=14, drift=shock)
    start, end, request_ids = through_api(loans)
    engine = create_engine_for(settings.decision_db_url)
    try:
        report = record_outcomes(
            engine,
            [
                Outcome(request_id=rid, defaulted=bool(d))
                for rid, d in zip(request_ids, loans["default"], strict=True)
            ],
        )
    finally:
        engine.dispose()
    assert report.recorded == len(loans)
    before = versions(settings)

    monitored = monitor_flow(days=days_between(start, end), end=end)
    result = performance_flow(days=days_between(start, end), end=end)

    assert monitored.summary.drift.share_drifted < settings.monitor.drift_share_threshold
    assert result.summary.overall.calibration_z is not None
    assert result.summary.overall.calibration_z < -settings.monitor.calibration_z_threshold
    assert any("standard errors" in reason for reason in result.reasons)
    assert result.trigger is not None and result.trigger.retrain is not None
    assert len(versions(settings)) == len(before) + 1
