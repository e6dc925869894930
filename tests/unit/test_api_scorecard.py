"""A scorecard served in process: `/v1/model` shows its points, and its reasons are its bins'."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from loanops.data import synthetic as syn
from serving.app import create_app
from tests.integration.api_fixtures import (
    API_KEYS,
    api_settings,
    point_alias,
    registry_settings,
    wait_until_ready,
)
from tests.integration.serving_fixtures import register_version

KEY = {"X-API-Key": API_KEYS[0]}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    registry = registry_settings(tmp_path_factory.mktemp("registry"))
    point_alias(registry, register_version(registry, rows=4000, family="scorecard"))
    app = create_app(api_settings(registry, tmp_path_factory.mktemp("api")))
    with TestClient(app) as started:
        wait_until_ready(started)
        yield started


def test_the_model_endpoint_shows_the_points_table_and_information_values(
    client: TestClient,
) -> None:
    info = client.get("/v1/model", headers=KEY).json()
    assert info["family"] == "scorecard"
    card = info["scorecard"]
    features = {row["feature"] for row in card["bins"]}
    assert features == set(syn.SCHEMA.feature_names)
    assert set(card["information_values"]) == features
    fico = [r for r in card["bins"] if r["feature"] == "fico_range_low" and r["bin"] != "missing"]
    # A higher score is safer, so the points rise bin by bin.
    assert [r["points"] for r in fico] == sorted(r["points"] for r in fico)
    assert len(fico) >= 2


def test_a_risky_applicant_is_declined_with_the_bins_that_cost_the_most_points(
    client: TestClient,
) -> None:
    applicants = syn.generate(400, seed=99)
    riskiest = applicants.sort_values("pd_true").iloc[-1]
    (body,) = json.loads(syn.SCHEMA.to_frame(riskiest.to_frame().T).to_json(orient="records"))
    response = client.post("/v1/predict", json=body, headers=KEY)
    assert response.status_code == 200, response.text
    prediction = response.json()
    assert prediction["decision"] == "decline"
    impacts = [r["impact"] for r in prediction["reasons"]]
    assert impacts and impacts == sorted(impacts, reverse=True)
