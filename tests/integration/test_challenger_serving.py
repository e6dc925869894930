"""The challenger on live traffic, against a real `loanops serve`, MLflow server and PostgreSQL.

Shadow (share 0): the applicant gets the champion's answer and the log gets one paired record
per application. Share: a seeded share of applicants gets the challenger's answer, always the
same applicants. A challenger that cannot load, or that raises while scoring (in shadow, or on
the request path under a share), is detached, named and counted, and the champion answers on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loanops import registry as loanops_registry
from loanops.arms import assign_arm
from loanops.decisions.database import create_engine_for
from loanops.decisions.read import count_decisions, read_decisions
from loanops.settings import Settings
from serving.model import LoadedModel, load_version
from tests.factories import synthetic_applications
from tests.integration.api_fixtures import (
    API_KEYS,
    SCHEMA,
    Server,
    api_settings,
    loanops_serve,
    point_alias,
    register_model_without_card,
    register_version_failing_to_explain,
    registry_settings,
)
from tests.integration.serving_fixtures import register_version
from tests.services import fresh_database
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

KEY = {"X-API-Key": API_KEYS[0]}
POLL_SECONDS = 0.5
SHARE = 0.3
SEED = 7
ALIAS = "challenger"


@dataclass(frozen=True)
class Versions:
    settings: Settings
    champion: str
    challenger: str
    without_card: str


@pytest.fixture(scope="module")
def versions(mlflow_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Versions:
    settings = registry_settings(
        tmp_path_factory.mktemp("challenger-registry"), tracking_uri=mlflow_server_url
    )
    champion = register_version(settings, seed=0, rows=2000)
    challenger = register_version(settings, seed=1, rows=2000)
    without_card = register_model_without_card(settings)
    point_alias(settings, champion)
    return Versions(settings, champion, challenger, without_card)


def serve(versions: Versions, folder: Path, database_url: str, *, share: float) -> Any:
    settings = api_settings(
        versions.settings,
        folder,
        serving={
            "model_poll_seconds": POLL_SECONDS,
            "challenger_alias": ALIAS,
            "challenger_share": share,
            "challenger_seed": SEED,
        },
        decision_log={"database_url": database_url, "flush_seconds": 0.1},
    )
    return loanops_serve(settings, folder)


def challenger_info(server: Server) -> dict[str, Any]:
    response = server.client.get("/v1/model", headers=KEY)
    assert response.status_code == 200, response.text
    block: dict[str, Any] = response.json()["challenger"]
    return block


def challenger_failures(server: Server, stage: str) -> float:
    text = server.client.get("/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "loanops_challenger_failures_total"
        and sample.labels.get("stage") == stage
    )


def predict_all(server: Server, applications: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answers = []
    for application in applications:
        response = server.client.post("/v1/predict", json=application, headers=KEY)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


def set_challenger(versions: Versions, version: str | None) -> None:
    client = loanops_registry.connect(versions.settings)
    if version is None:
        client.delete_registered_model_alias(versions.settings.model_name, ALIAS)
    else:
        client.set_registered_model_alias(versions.settings.model_name, ALIAS, version)


@pytest.fixture
def decision_db(postgres_server: str) -> Iterator[str]:
    with fresh_database(postgres_server) as url:
        yield url


def test_shadow_logs_paired_records_answers_as_the_champion_and_survives_a_broken_challenger(
    versions: Versions, decision_db: str, tmp_path: Path
) -> None:
    applications = synthetic_applications(30)
    set_challenger(versions, versions.challenger)
    engine = create_engine_for(decision_db)
    try:
        with serve(versions, tmp_path, decision_db, share=0.0) as server:
            wait_for(
                lambda: challenger_info(server)["state"] == "attached",
                timeout=30,
                what="the challenger to attach",
            )
            shadowed = predict_all(server, applications)
            wait_for(
                lambda: count_decisions(engine) == len(applications),
                timeout=30,
                what="every shadowed decision in the log",
            )

            set_challenger(versions, None)
            wait_for(
                lambda: challenger_info(server)["state"] == "detached",
                timeout=30,
                what="the challenger to detach",
            )
            alone = predict_all(server, applications)

            set_challenger(versions, versions.without_card)
            wait_for(
                lambda: challenger_info(server)["state"] == "failed",
                timeout=30,
                what="the broken challenger to fail",
            )
            broken = challenger_info(server)
            with_broken = predict_all(server, applications[:5])
            load_failures = challenger_failures(server, "load")
    finally:
        set_challenger(versions, None)
    records = read_decisions(engine)
    engine.dispose()

    def answer(a: dict[str, Any]) -> tuple[Any, ...]:
        return a["model_version"], a["probability_of_default"], a["decision"], a["reasons"]

    assert [answer(a) for a in shadowed] == [answer(a) for a in alone]
    assert {a["model_version"] for a in shadowed} == {versions.champion}
    by_id = records.set_index("request_id")
    paired = by_id.loc[[a["request_id"] for a in shadowed]]
    assert (paired["arm"] == "champion").all()
    assert (paired["model_version"] == versions.champion).all()
    assert (paired["challenger_version"] == versions.challenger).all()
    assert paired["challenger_probability"].notna().all()
    assert paired["challenger_decision"].isin(["approve", "decline"]).all()
    assert (paired["probability"] != paired["challenger_probability"]).any()
    assert list(paired["probability"]) == [a["probability_of_default"] for a in shadowed]
    solo = by_id.loc[[a["request_id"] for a in alone]]
    assert solo["challenger_version"].isna().all()

    assert broken["version"] == versions.without_card
    assert broken["last_error_stage"] == "load"
    assert broken["last_error"]
    assert load_failures >= 1
    assert {a["model_version"] for a in with_broken} == {versions.champion}
    assert by_id.loc[[a["request_id"] for a in with_broken]]["challenger_version"].isna().all()


def test_a_share_of_applicants_gets_the_challenger_always_the_same_ones(
    versions: Versions, decision_db: str, tmp_path: Path
) -> None:
    applications = synthetic_applications(300)
    set_challenger(versions, versions.challenger)
    engine = create_engine_for(decision_db)
    try:
        with serve(versions, tmp_path, decision_db, share=SHARE) as server:
            wait_for(
                lambda: challenger_info(server)["state"] == "attached",
                timeout=30,
                what="the challenger to attach",
            )
            rounds = []
            for _ in range(2):
                response = server.client.post(
                    "/v1/predict/batch", json={"applications": applications}, headers=KEY
                )
                assert response.status_code == 200, response.text
                rounds.append(response.json()["predictions"])
            wait_for(
                lambda: count_decisions(engine) == 2 * len(applications),
                timeout=30,
                what="every decision in the log",
            )
    finally:
        set_challenger(versions, None)
    records = read_decisions(engine).set_index("request_id")
    engine.dispose()

    expected = [
        assign_arm(a, share=SHARE, seed=SEED, applicant_key=SCHEMA.applicant_key)
        for a in applications
    ]
    assert 0.15 < expected.count("challenger") / len(expected) < 0.45
    for answers in rounds:
        logged = list(records.loc[[a["request_id"] for a in answers]]["arm"])
        assert logged == expected
        served = [a["model_version"] for a in answers]
        assert served == [
            versions.challenger if arm == "challenger" else versions.champion for arm in expected
        ]
    first, second = rounds
    assert [a["decision"] for a in first] == [a["decision"] for a in second]
    challenger_rows = records[records["arm"] == "challenger"]
    assert (challenger_rows["challenger_version"] == versions.challenger).all()
    assert (challenger_rows["model_version"] == versions.champion).all()


@dataclass(frozen=True)
class ScoringFault:
    version: str
    raising: list[dict[str, Any]]
    """Applications its scoring raises on; its input example is not among them."""


@pytest.fixture(scope="module")
def scoring_fault(versions: Versions) -> ScoringFault:
    version = register_version_failing_to_explain(versions.settings)
    client = loanops_registry.connect(versions.settings)
    # The path the API loads by, smoke test included: the version is accepted.
    loaded = load_version(client, versions.settings.model_name, version, expected_schema=SCHEMA)
    raising = [a for a in synthetic_applications(300) if _raises(loaded, a)]
    return ScoringFault(version, raising)


def arm(application: dict[str, Any], share: float) -> str:
    return assign_arm(application, share=share, seed=SEED, applicant_key=SCHEMA.applicant_key)


def _raises(model: LoadedModel, application: dict[str, Any]) -> bool:
    row = SCHEMA.request_model().model_validate(application).model_dump()
    try:
        model.score([row], top_reasons=4)
    except ValueError:
        return True
    return False


@pytest.mark.parametrize("share", [0.0, SHARE], ids=["shadow", "share"])
def test_a_challenger_that_raises_while_scoring_is_dropped_and_the_champion_answers_alone(
    versions: Versions, scoring_fault: ScoringFault, decision_db: str, tmp_path: Path, share: float
) -> None:
    # Under a share, applicants of the challenger's arm only: it scores on the request path.
    applications = [
        a for a in scoring_fault.raising if share == 0.0 or arm(a, share) == "challenger"
    ]
    applications = applications[:6]
    assert len(applications) == 6
    set_challenger(versions, None)
    engine = create_engine_for(decision_db)
    try:
        with serve(versions, tmp_path, decision_db, share=share) as server:
            alone = predict_all(server, applications)
            set_challenger(versions, scoring_fault.version)
            wait_for(
                lambda: challenger_info(server)["state"] == "attached",
                timeout=30,
                what="the challenger to attach",
            )
            answered = predict_all(server, applications)
            wait_for(
                lambda: challenger_info(server)["state"] == "failed",
                timeout=30,
                what="the challenger to fail while scoring",
            )
            failed = challenger_info(server)
            failures = {stage: challenger_failures(server, stage) for stage in ("load", "score")}
            wait_for(
                lambda: count_decisions(engine) == 2 * len(applications),
                timeout=30,
                what="every decision in the log",
            )
    finally:
        set_challenger(versions, None)
    records = read_decisions(engine).set_index("request_id")
    engine.dispose()

    def answer(a: dict[str, Any]) -> tuple[Any, ...]:
        return a["model_version"], a["probability_of_default"], a["decision"], a["reasons"]

    assert [answer(a) for a in answered] == [answer(a) for a in alone]
    assert {a["model_version"] for a in answered} == {versions.champion}
    assert failed["version"] == scoring_fault.version
    assert failed["last_error_stage"] == "score"
    assert "n/a" in failed["last_error"]
    # Dropped at its first failure: no application scores with it after that.
    assert failures == {"load": 0, "score": 1}
    logged = records.loc[[a["request_id"] for a in answered]]
    assert (logged["arm"] == "champion").all()
    assert (logged["model_version"] == versions.champion).all()
    assert logged["challenger_version"].isna().all()
    assert logged["challenger_probability"].isna().all()
    assert list(logged["probability"]) == [a["probability_of_default"] for a in answered]
