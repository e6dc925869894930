"""`POST /v1/outcomes` in-process: the contract, all-or-nothing refusals, validation and auth.

The app is the real one (`create_app`) serving a registered version from an MLflow registry on
SQLite in a temp folder; decisions are made through `/v1/predict` (and, for batch ids, written
as a batch worker writes them), then their outcomes are posted through FastAPI's TestClient.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from loanops.decisions.database import create_engine_for
from loanops.decisions.read import count_decisions
from loanops.decisions.write import write_decisions
from loanops.outcomes import OutcomeRecord, read_labelled
from loanops.settings import Settings
from serving.app import create_app
from serving.deps import AppState
from serving.routers.outcomes import MAX_OUTCOMES
from tests.factories import make_decision, synthetic_applications
from tests.integration.api_fixtures import (
    API_KEYS,
    api_settings,
    point_alias,
    registry_settings,
    wait_until_ready,
)
from tests.integration.serving_fixtures import register_version
from tests.services import free_port
from tests.waiting import wait_for

KEY = {"X-API-Key": API_KEYS[0]}
PATH = "/v1/outcomes"
OBSERVED = "2026-06-01T00:00:00Z"
REPORT_KEYS = {"status", "detail", "received", "recorded", "duplicates", "unknown", "conflicts"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = registry_settings(tmp_path_factory.mktemp("registry"))
    point_alias(settings, register_version(settings, seed=0, rows=2000))
    return settings


@contextlib.contextmanager
def serving(registry: Settings, folder: Path) -> Iterator[TestClient]:
    """A started, ready app whose decision log lives in `folder`."""
    with TestClient(create_app(api_settings(registry, folder))) as client:
        wait_until_ready(client)
        # The app itself mounts the route and opens the decision database at start-up.
        assert PATH in fastapi_app(client).openapi()["paths"]
        assert state(client).database is not None
        yield client


def fastapi_app(client: TestClient) -> FastAPI:
    assert isinstance(client.app, FastAPI)
    return client.app


def state(client: TestClient) -> AppState:
    app_state: AppState = fastapi_app(client).state.loanops
    return app_state


def database(client: TestClient) -> sa.Engine:
    engine = state(client).database
    assert engine is not None
    return engine


@pytest.fixture(scope="module")
def client(registry: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with serving(registry, tmp_path_factory.mktemp("api")) as started:
        yield started


def decide(client: TestClient, count: int) -> list[str]:
    """Make `count` decisions through `/v1/predict` and wait until the log holds them."""
    engine = database(client)
    before = count_decisions(engine)
    ids: list[str] = []
    for application in synthetic_applications(count, seed=len(ids) + before):
        response = client.post("/v1/predict", json=application, headers=KEY)
        assert response.status_code == 200, response.text
        ids.append(response.json()["request_id"])
    wait_for(lambda: count_decisions(engine) == before + count, what="the decision log", timeout=30)
    return ids


def post(client: TestClient, body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    headers = kwargs.pop("headers", KEY)
    return client.post(PATH, content=content, headers=headers, **kwargs)


def outcomes(*pairs: tuple[str, bool], **fields: Any) -> dict[str, Any]:
    return {"outcomes": [{"request_id": i, "defaulted": d, **fields} for i, d in pairs]}


def stored(client: TestClient, ids: list[str]) -> dict[str, tuple[bool, str]]:
    table = OutcomeRecord.__table__
    with database(client).connect() as connection:
        rows = connection.execute(
            sa.select(table.c.request_id, table.c.defaulted, table.c.source).where(
                table.c.request_id.in_(ids)
            )
        ).all()
    return {row[0]: (row[1], row[2]) for row in rows}


# --- the contract ----------------------------------------------------------------------------


def test_outcomes_of_predictions_are_recorded_and_joined_to_them(client: TestClient) -> None:
    first, second = decide(client, 2)

    response = post(client, outcomes((first, True), (second, False), observed_at=OBSERVED))

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == REPORT_KEYS
    assert body | {"detail": ""} == {
        "status": "recorded",
        "detail": "",
        "received": 2,
        "recorded": 2,
        "duplicates": [],
        "unknown": [],
        "conflicts": [],
    }
    assert stored(client, [first, second]) == {first: (True, "api"), second: (False, "api")}
    labelled = read_labelled(database(client)).set_index("request_id")
    assert labelled.loc[first, "defaulted"]
    assert labelled.loc[first, "observed_at"] == datetime(2026, 6, 1, tzinfo=UTC)


def test_a_resent_outcome_is_a_duplicate_not_counted_twice(client: TestClient) -> None:
    first, second = decide(client, 2)
    assert post(client, outcomes((first, True))).status_code == 200

    response = post(client, outcomes((first, True), (second, False), (second, False)))

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["received"], body["recorded"]) == (3, 1)
    assert body["duplicates"] == sorted([first, second])
    assert "already recorded or repeated" in body["detail"]
    assert set(stored(client, [first, second])) == {first, second}


def test_a_conflicting_outcome_refuses_the_whole_request_with_409(client: TestClient) -> None:
    first, second = decide(client, 2)
    assert post(client, outcomes((first, True))).status_code == 200

    response = post(client, outcomes((first, False), (second, True)))

    assert response.status_code == 409, response.text
    body = response.json()
    assert (body["status"], body["recorded"], body["conflicts"]) == ("refused", 0, [first])
    assert body["detail"].startswith("refused all 2 outcomes; 1 conflicting")
    assert stored(client, [first, second]) == {first: (True, "api")}, "nothing half-written"


def test_unknown_ids_refuse_the_request_unless_skipped(client: TestClient) -> None:
    (known,) = decide(client, 1)
    body = outcomes((known, False), ("not-a-request-id", True))

    refused = post(client, body)

    assert refused.status_code == 409, refused.text
    assert refused.json()["unknown"] == ["not-a-request-id"]
    assert stored(client, [known]) == {}

    skipped = post(client, body, params={"skip_unknown": "true"})

    assert skipped.status_code == 200, skipped.text
    assert (skipped.json()["recorded"], skipped.json()["unknown"]) == (1, ["not-a-request-id"])
    assert stored(client, [known]) == {known: (False, "api")}


def test_a_batch_decision_is_named_by_job_id_and_row(client: TestClient) -> None:
    job_id = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
    write_decisions(
        database(client),
        [
            make_decision(
                row,
                start=datetime.now(UTC),
                request_id=f"{job_id}-{row}",
                source="batch",
                job_id=job_id,
            )
            for row in (0, 41)
        ],
    )

    response = post(client, outcomes((f"{job_id}-41", True)))

    assert response.status_code == 200, response.text
    assert stored(client, [f"{job_id}-41"]) == {f"{job_id}-41": (True, "api")}


# --- bad input -------------------------------------------------------------------------------


def _many(count: int) -> dict[str, Any]:
    return {"outcomes": [{"request_id": f"r-{i}", "defaulted": False} for i in range(count)]}


def _future() -> str:
    return (datetime.now(UTC) + timedelta(days=2)).isoformat()


# Each case: the body, where the error is, and its type.
BAD_BODIES: dict[str, tuple[Any, list[Any], str]] = {
    "a number for the flag": (
        outcomes(("r-1", True)) | {"outcomes": [{"request_id": "r-1", "defaulted": 1}]},
        ["body", "outcomes", 0, "defaulted"],
        "bool_type",
    ),
    "text for the flag": (
        {"outcomes": [{"request_id": "r-1", "defaulted": "yes"}]},
        ["body", "outcomes", 0, "defaulted"],
        "bool_type",
    ),
    "no flag": (
        {"outcomes": [{"request_id": "r-1"}]},
        ["body", "outcomes", 0, "defaulted"],
        "missing",
    ),
    "no id": (
        {"outcomes": [{"defaulted": True}]},
        ["body", "outcomes", 0, "request_id"],
        "missing",
    ),
    "an empty id": (
        {"outcomes": [{"request_id": "", "defaulted": True}]},
        ["body", "outcomes", 0, "request_id"],
        "string_too_short",
    ),
    "a loan id instead": (
        {"outcomes": [{"loan_id": "L-1", "request_id": "r-1", "defaulted": True}]},
        ["body", "outcomes", 0, "loan_id"],
        "extra_forbidden",
    ),
    "a time without a zone": (
        {"outcomes": [{"request_id": "r-1", "defaulted": True, "observed_at": "2026-06-01T00:00"}]},
        ["body", "outcomes", 0, "observed_at"],
        "timezone_aware",
    ),
    "a time in the future": (
        {"outcomes": [{"request_id": "r-1", "defaulted": True, "observed_at": _future()}]},
        ["body", "outcomes", 0, "observed_at"],
        "value_error",
    ),
    "a number for the time": (
        {"outcomes": [{"request_id": "r-1", "defaulted": True, "observed_at": 0}]},
        ["body", "outcomes", 0, "observed_at"],
        "datetime_type",
    ),
    "no outcomes": ({"outcomes": []}, ["body", "outcomes"], "too_short"),
    "too many outcomes": (_many(MAX_OUTCOMES + 1), ["body", "outcomes"], "too_long"),
    "a bare list": ([{"request_id": "r-1", "defaulted": True}], ["body"], "model_attributes_type"),
}


@pytest.mark.parametrize("case", BAD_BODIES)
def test_a_bad_body_gets_field_errors(client: TestClient, case: str) -> None:
    body, where, kind = BAD_BODIES[case]

    response = post(client, body)

    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert [(e["loc"], e["type"]) for e in errors][:1] == [(where, kind)]


def test_a_body_that_is_not_json_gets_a_field_error(client: TestClient) -> None:
    response = post(client, b"{not json", headers=KEY | {"Content-Type": "application/json"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_a_body_that_is_not_text_gets_a_field_error_not_a_400(client: TestClient) -> None:
    response = post(client, b"\xff\xfe{", headers=KEY | {"Content-Type": "application/json"})

    assert response.status_code == 422, response.text
    assert response.json()["detail"] == [
        {"loc": ["body"], "msg": "JSON decode error: not UTF-8", "type": "json_invalid"}
    ]


def test_the_largest_request_is_accepted(client: TestClient) -> None:
    ids = [f"unknown-{i:032d}" for i in range(MAX_OUTCOMES)]
    body = {"outcomes": [{"request_id": i, "defaulted": False, "observed_at": OBSERVED}
                         for i in ids]}  # fmt: skip
    assert len(json.dumps(body)) < state(client).settings.serving.max_body_bytes

    response = post(client, body)

    assert response.status_code == 409, response.text
    assert len(response.json()["unknown"]) == MAX_OUTCOMES


def test_outcomes_need_an_api_key(client: TestClient) -> None:
    for headers in ({}, {"X-API-Key": "wrong"}):
        response = post(client, outcomes(("r-1", True)), headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "APIKey"


def test_an_unreachable_database_is_a_503_and_nothing_else_breaks(client: TestClient) -> None:
    app_state = state(client)
    working = app_state.database
    dead = create_engine_for(f"postgresql://postgres@127.0.0.1:{free_port()}/x?connect_timeout=2")
    app_state.database = dead
    try:
        response = post(client, outcomes(("r-1", True)))
    finally:
        app_state.database = working
        dead.dispose()

    assert response.status_code == 503
    assert "nothing was written" in response.json()["detail"]
    assert response.headers["Retry-After"] == "30"


def test_the_openapi_page_documents_the_route(client: TestClient) -> None:
    document = client.get("/openapi.json").json()

    operation = document["paths"][PATH]["post"]
    assert operation["tags"] == ["outcomes"]
    assert set(operation["responses"]) >= {"200", "401", "409", "422", "503"}
    schemas = document["components"]["schemas"]
    assert schemas["OutcomesIn"]["examples"]
    assert schemas["Outcome"]["properties"]["defaulted"]["type"] == "boolean"
    assert "description" in schemas["Outcome"]["properties"]["request_id"]
    assert [p["name"] for p in operation["parameters"]] == ["skip_unknown"]
