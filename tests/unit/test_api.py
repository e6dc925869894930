"""The scoring API in-process: contract, input validation, auth, decision log, metrics, OpenAPI.

The app is the real one (`create_app`) serving real registered versions from an MLflow registry
on SQLite in a temp folder. Requests go through FastAPI's TestClient, so the lifespan runs as
under uvicorn: start-up loads the model and starts the decision-log writer, shutdown flushes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from loanops import registry
from loanops.decisions.database import create_engine_for
from loanops.decisions.read import count_decisions, read_decisions
from loanops.settings import Settings
from serving.app import OPEN_API_WARNING, create_app
from serving.deps import AppState
from serving.model import REPORTED_METRICS, LoadedModel
from tests.factories import synthetic_applications
from tests.integration.api_fixtures import (
    API_KEYS,
    SCHEMA,
    api_settings,
    damage_model_file,
    point_alias,
    registry_settings,
    wait_until_ready,
)
from tests.integration.serving_fixtures import register_version
from tests.services import free_port
from tests.storage_fixtures import s3_endpoint  # noqa: F401  (a fixture)
from tests.waiting import wait_for

KEY = {"X-API-Key": API_KEYS[1]}
MAX_SYNC_BATCH = 3
MAX_BODY_BYTES = 8192
RESPONSE_KEYS = {
    "request_id",
    "model_version",
    "probability_of_default",
    "decision",
    "threshold",
    "reasons",
}


@cache
def _applicants() -> tuple[dict[str, Any], ...]:
    return tuple(synthetic_applications(60))


def typical(**overrides: Any) -> dict[str, Any]:
    """An applicant of middling risk, with `overrides`."""
    people = _applicants()
    return {**people[len(people) // 2], **overrides}


def safe() -> dict[str, Any]:
    """The safest of the sample, by the generator's true probability of default."""
    return dict(_applicants()[0])


def risky() -> dict[str, Any]:
    """The riskiest of the sample."""
    return dict(_applicants()[-1])


@dataclass(frozen=True)
class Version:
    number: str
    run_id: str


class Registry:
    """The registry the tests serve from: two good versions, and one whose file is damaged."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = registry.connect(settings)
        self.first = self._register(seed=0)
        self.second = self._register(seed=1)
        self.damaged = self._register(seed=2)
        point_alias(settings, self.first.number)
        damage_model_file(self.client, settings.model_name, self.damaged.number)

    def _register(self, seed: int) -> Version:
        number = register_version(self.settings, seed=seed, rows=2000)
        run_id = self.client.get_model_version(self.settings.model_name, number).run_id
        assert run_id is not None
        return Version(number, run_id)

    def new_alias(self, version: Version) -> str:
        """A fresh alias on `version`, which one test may move without disturbing the others."""
        alias = f"t-{uuid.uuid4().hex[:8]}"
        point_alias(self.settings, version.number, alias)
        return alias

    def ref(self, alias: str) -> str:
        return f"models:/{self.settings.model_name}@{alias}"

    def move(self, alias: str, version: Version) -> None:
        point_alias(self.settings, version.number, alias)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return Registry(registry_settings(tmp_path_factory.mktemp("registry")))


@contextlib.contextmanager
def serving(
    models: Registry, folder: Path, *, ready: bool = True, **overrides: Any
) -> Iterator[TestClient]:
    """A started app (lifespan entered); shut down, flushing its decision log, on exit."""
    app = create_app(api_settings(models.settings, folder, **overrides))
    with TestClient(app) as client:
        if ready:
            wait_until_ready(client)
        yield client


def state(client: TestClient) -> AppState:
    assert isinstance(client.app, FastAPI)
    app_state: AppState = client.app.state.loanops
    return app_state


def current(client: TestClient) -> LoadedModel:
    model = state(client).holder.current
    assert model is not None
    return model


@pytest.fixture(scope="module")
def client(models: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for the tests that only read: it follows `production`, which stays on v1."""
    with serving(
        models,
        tmp_path_factory.mktemp("api"),
        serving={"max_sync_batch": MAX_SYNC_BATCH, "max_body_bytes": MAX_BODY_BYTES},
    ) as started:
        yield started


def post(client: TestClient, body: Any, path: str = "/v1/predict", **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    headers = kwargs.pop("headers", KEY)
    return client.post(path, content=content, headers=headers, **kwargs)


def metric_samples(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# --- the response contract ---------------------------------------------------------------------


def test_a_prediction_carries_version_request_id_decision_and_sorted_reasons(
    client: TestClient, models: Registry
) -> None:
    model = current(client)
    seen_decisions = set()
    request_ids = set()
    for application in (safe(), typical(), risky()):
        response = post(client, application)

        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == RESPONSE_KEYS
        assert body["model_version"] == models.first.number
        assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"])
        request_ids.add(body["request_id"])
        assert 0.0 <= body["probability_of_default"] <= 1.0
        assert body["threshold"] == pytest.approx(model.threshold, abs=0)
        expected = "decline" if body["probability_of_default"] >= body["threshold"] else "approve"
        assert body["decision"] == expected
        seen_decisions.add(body["decision"])
        impacts = [reason["impact"] for reason in body["reasons"]]
        assert impacts == sorted(impacts, reverse=True)
        assert all(impact > 0 for impact in impacts)
        assert len(body["reasons"]) <= state(client).settings.serving.reasons_top
        for reason in body["reasons"]:
            feature = SCHEMA.feature(reason["code"].lower())
            assert reason["text"] == feature.reason
    assert seen_decisions == {"approve", "decline"}, "a safe and a risky applicant, one threshold"
    assert len(request_ids) == 3


def test_the_top_reason_is_faithful_moving_its_feature_lowers_the_probability(
    client: TestClient,
) -> None:
    favourable = current(client).card.favourable_values
    application = risky()
    before = post(client, application).json()
    top = before["reasons"][0]
    feature = top["code"].lower()
    assert application[feature] != favourable[feature]

    after = post(client, {**application, feature: favourable[feature]}).json()

    assert after["probability_of_default"] < before["probability_of_default"]
    fall = before["probability_of_default"] - after["probability_of_default"]
    assert fall == pytest.approx(top["impact"], rel=1e-9, abs=1e-12)
    assert top["code"] not in [reason["code"] for reason in after["reasons"]]


def test_a_batch_is_scored_in_order_by_one_version_like_single_requests(
    client: TestClient, models: Registry
) -> None:
    applications = [risky(), safe(), typical()]

    response = post(client, {"applications": applications}, "/v1/predict/batch")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == models.first.number
    assert len(body["predictions"]) == len(applications)
    assert len({p["request_id"] for p in body["predictions"]}) == len(applications)
    for application, prediction in zip(applications, body["predictions"], strict=True):
        single = post(client, application).json()
        assert set(prediction) == RESPONSE_KEYS
        assert prediction["model_version"] == models.first.number
        assert prediction["probability_of_default"] == pytest.approx(
            single["probability_of_default"], rel=1e-12
        )
        assert prediction["decision"] == single["decision"]
        assert [r["code"] for r in prediction["reasons"]] == [r["code"] for r in single["reasons"]]


def test_a_nullable_field_may_be_null_or_left_out(client: TestClient) -> None:
    (nullable,) = [f.name for f in SCHEMA.features if f.nullable]
    as_null = typical(**{nullable: "10+ years"})
    as_null[nullable] = None
    left_out = dict(as_null)
    del left_out[nullable]

    responses = [post(client, application) for application in (as_null, left_out)]

    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    null_body, left_out_body = (r.json() for r in responses)
    for field in ("probability_of_default", "decision"):
        assert null_body[field] == left_out_body[field]


# --- bad input ----------------------------------------------------------------------------------

# Each case: the body, then where the error is, its type and words of its message.
BAD_APPLICATIONS: dict[str, tuple[bytes | str | dict[str, Any], list[Any], str, str]] = {
    "NaN token": (
        json.dumps(typical(int_rate=float("nan"))),
        ["body", "int_rate"],
        "finite_number",
        "finite number",
    ),
    "Infinity token": (
        json.dumps(typical(annual_inc=float("inf"))),
        ["body", "annual_inc"],
        "finite_number",
        "finite number",
    ),
    "-Infinity token": (
        json.dumps(typical(revol_util=float("-inf"))),
        ["body", "revol_util"],
        "finite_number",
        "finite number",
    ),
    "negative amount": (
        typical(loan_amnt=-5000),
        ["body", "loan_amnt"],
        "greater_than_equal",
        "greater than or equal to 1000",
    ),
    "negative income": (
        typical(annual_inc=-1.0),
        ["body", "annual_inc"],
        "greater_than_equal",
        "greater than or equal to 0",
    ),
    "amount above the maximum": (
        typical(loan_amnt=10**30),
        ["body", "loan_amnt"],
        "less_than_equal",
        "less than or equal to 40000",
    ),
    "unknown category": (
        typical(sub_grade="H1"),
        ["body", "sub_grade"],
        "literal_error",
        "Input should be 'A1', 'A2'",
    ),
    "category with its unit": (
        typical(term="36 months"),
        ["body", "term"],
        "literal_error",
        "Input should be '36' or '60'",
    ),
    "missing required field": (
        {k: v for k, v in typical().items() if k != "int_rate"},
        ["body", "int_rate"],
        "missing",
        "Field required",
    ),
    "null for a required field": (
        typical(int_rate=None),
        ["body", "int_rate"],
        "float_type",
        "valid number",
    ),
    "unknown extra field": (
        {**typical(), "ssn": "123-45-6789"},
        ["body", "ssn"],
        "extra_forbidden",
        "Extra inputs are not permitted",
    ),
    "percent string for a number": (
        typical(int_rate="13.5%"),
        ["body", "int_rate"],
        "float_type",
        "valid number",
    ),
    "numeric string for a number": (
        typical(int_rate="13.5"),
        ["body", "int_rate"],
        "float_type",
        "valid number",
    ),
    "fraction for a count": (
        typical(delinq_2yrs=1.5),
        ["body", "delinq_2yrs"],
        "int_type",
        "valid integer",
    ),
    "boolean for a count": (
        typical(delinq_2yrs=True),
        ["body", "delinq_2yrs"],
        "int_type",
        "valid integer",
    ),
    "number for a category": (
        typical(term=36),
        ["body", "term"],
        "literal_error",
        "Input should be '36' or '60'",
    ),
    "malformed JSON": (
        json.dumps(typical())[:-7],
        ["body"],
        "json_invalid",
        "Invalid JSON",
    ),
    "empty body": (b"", ["body"], "json_invalid", "Invalid JSON: EOF"),
    "not UTF-8": (b"\xff\xfe{}", ["body"], "json_invalid", "Invalid JSON"),
    "lone surrogate escape": (
        json.dumps(typical(term="\ud800")),
        ["body"],
        "json_invalid",
        "Invalid JSON",
    ),
    "deep nesting": (b"[" * 1000 + b"]" * 1000, ["body"], "json_invalid", "recursion limit"),
    "JSON array": (json.dumps([typical()]), ["body"], "model_type", "should be an object"),
    "JSON string": (json.dumps("hello"), ["body"], "model_type", "should be an object"),
    "JSON null": (b"null", ["body"], "model_type", "should be an object"),
    "JSON number": (b"42", ["body"], "model_type", "should be an object"),
}


@pytest.mark.parametrize("case", list(BAD_APPLICATIONS))
def test_a_bad_application_is_422_naming_the_field_and_the_rule(
    client: TestClient, case: str
) -> None:
    body, loc, error_type, words = BAD_APPLICATIONS[case]

    response = post(client, body)

    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    matching = [e for e in errors if e["loc"] == loc]
    assert matching, f"no error at {loc}: {errors}"
    assert matching[0]["type"] == error_type
    assert words in matching[0]["msg"]
    assert {e["loc"][0] for e in errors} == {"body"}


def test_a_field_error_echoes_the_offending_value_as_json_can_carry_it(
    client: TestClient,
) -> None:
    nan = post(client, json.dumps(typical(int_rate=float("nan"))))
    negative = post(client, typical(loan_amnt=-5000))

    assert nan.json()["detail"][0]["input"] == "nan"
    assert negative.json()["detail"][0]["input"] == -5000


def test_every_broken_field_is_reported_at_once(client: TestClient) -> None:
    application = typical(int_rate="high", term="forever", loan_amnt=0)
    del application["sub_grade"]

    response = post(client, {**application, "extra": 1})

    assert response.status_code == 422
    assert sorted(e["loc"][1] for e in response.json()["detail"]) == [
        "extra",
        "int_rate",
        "loan_amnt",
        "sub_grade",
        "term",
    ]


def test_a_batch_names_the_application_and_field_that_failed(client: TestClient) -> None:
    response = post(
        client, {"applications": [typical(), typical(int_rate=-1.0)]}, "/v1/predict/batch"
    )

    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "applications", 1, "int_rate"]
    assert error["type"] == "greater_than_equal"


@pytest.mark.parametrize(
    ("body", "error_type", "words"),
    [
        ({"applications": [typical()] * (MAX_SYNC_BATCH + 1)}, "too_long", "at most 3 items"),
        ({"applications": []}, "too_short", "at least 1 item"),
        ({"applications": typical()}, "list_type", "valid array"),
        ({}, "missing", "Field required"),
    ],
    ids=["over max_sync_batch", "empty", "not a list", "no applications"],
)
def test_a_bad_batch_is_422(
    client: TestClient, body: dict[str, Any], error_type: str, words: str
) -> None:
    response = post(client, body, "/v1/predict/batch")

    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "applications"]
    assert error["type"] == error_type
    assert words in error["msg"]


def test_a_batch_at_max_sync_batch_is_scored(client: TestClient) -> None:
    response = post(client, {"applications": [typical()] * MAX_SYNC_BATCH}, "/v1/predict/batch")

    assert response.status_code == 200
    assert len(response.json()["predictions"]) == MAX_SYNC_BATCH


def oversized() -> bytes:
    body = json.dumps({**typical(), "padding": "x" * MAX_BODY_BYTES}).encode()
    assert len(body) > MAX_BODY_BYTES
    return body


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/predict/batch"])
def test_a_body_over_max_body_bytes_with_content_length_is_413(
    client: TestClient, path: str
) -> None:
    body = oversized()

    response = post(client, body, path)

    assert response.request.headers["content-length"] == str(len(body))
    assert response.status_code == 413
    assert response.json() == {
        "detail": f"request body is larger than {MAX_BODY_BYTES} bytes (LOANOPS_MAX_BODY_BYTES)"
    }


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/predict/batch"])
def test_a_chunked_body_over_max_body_bytes_is_413_while_it_streams(
    client: TestClient, path: str
) -> None:
    body = oversized()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1024):
            yield body[start : start + 1024]

    response = client.post(path, content=chunks(), headers=KEY)

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413
    assert "larger than 8192 bytes" in response.json()["detail"]


def test_a_body_just_under_the_limit_is_read(client: TestClient) -> None:
    application = json.dumps(typical()).encode()
    padded = application + b" " * (MAX_BODY_BYTES - len(application))

    response = post(client, padded)

    assert response.status_code == 200


def test_a_content_length_that_is_not_a_number_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/predict", content=json.dumps(typical()), headers={**KEY, "Content-Length": "ten"}
    )

    assert response.status_code == 400
    assert response.json() == {"detail": "Content-Length is not a number"}


# --- API keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": ""}, {"X-API-Key": "wrong-key"}, {"X-API-Key": API_KEYS[0].upper()}],
    ids=["missing", "empty", "wrong", "wrong case"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/predict"),
        ("POST", "/v1/predict/batch"),
        ("GET", "/v1/model"),
        ("POST", "/v1/batch-jobs"),
        ("GET", "/v1/batch-jobs/some-job"),
    ],
)
def test_scoring_endpoints_refuse_a_missing_or_unknown_key_with_401(
    client: TestClient, headers: dict[str, str], method: str, path: str
) -> None:
    response = client.request(method, path, content=json.dumps(typical()), headers=headers)

    assert response.status_code == 401
    assert response.json() == {"detail": "missing or unknown API key in X-API-Key"}
    assert response.headers["www-authenticate"] == "APIKey"


@pytest.mark.parametrize("key", API_KEYS)
def test_each_configured_key_is_accepted(client: TestClient, key: str) -> None:
    assert post(client, typical(), headers={"X-API-Key": key}).status_code == 200
    assert client.get("/v1/model", headers={"X-API-Key": key}).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
def test_health_metrics_and_the_api_description_are_open(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200


def test_api_keys_never_reach_the_logs(
    models: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-key-5e1f9d0c"
    with serving(models, tmp_path) as started:
        post(started, typical(), headers={"X-API-Key": API_KEYS[0]})
        post(started, typical(), headers={"X-API-Key": wrong})
        post(started, {**typical(), "int_rate": "x"}, headers={"X-API-Key": API_KEYS[1]})
        started.get("/v1/model", headers={"X-API-Key": API_KEYS[1]})
        started.get("/metrics")

    assert caplog.records, "nothing was logged: the check would pass vacuously"
    logged = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    for key in (*API_KEYS, wrong):
        assert key not in logged


def test_without_configured_keys_dev_mode_leaves_scoring_open_and_warns_once(
    models: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="serving.app"),
        serving(models, tmp_path, serving={"api_keys": None}) as started,
    ):
        assert started.post("/v1/predict", content=json.dumps(typical())).status_code == 200
        assert started.post("/v1/predict", content=json.dumps(typical())).status_code == 200

    warnings = [r.getMessage() for r in caplog.records if r.name == "serving.app"]
    assert warnings == [OPEN_API_WARNING]
    assert "accepts any X-API-Key" in OPEN_API_WARNING and "LOANOPS_API_KEYS=" in OPEN_API_WARNING


# --- readiness ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("@no-such-alias", "holds alias 'no-such-alias'"),
        ("-missing@production", "holds alias 'production'"),
    ],
    ids=["unknown alias", "unknown model"],
)
def test_before_a_model_loads_readyz_and_predict_are_503_saying_why(
    models: Registry, tmp_path: Path, ref: str, reason: str
) -> None:
    model_ref = f"models:/{models.settings.model_name}{ref}"
    with serving(models, tmp_path, ready=False, serving={"model_ref": model_ref}) as started:
        wait_for(
            lambda: state(started).holder.last_error is not None, what="a failed load", timeout=30
        )

        ready = started.get("/readyz")
        predicted = post(started, typical())
        batch = post(started, {"applications": [typical()]}, "/v1/predict/batch")
        info = started.get("/v1/model", headers=KEY)
        anonymous = post(started, typical(), headers={})
        alive = started.get("/healthz")
        samples = metric_samples(started)

    assert ready.status_code == 503
    assert ready.json()["status"] == "not ready"
    assert reason in ready.json()["detail"]
    for response in (predicted, batch, info):
        assert response.status_code == 503
        assert "no model is loaded yet" in response.json()["detail"]
        assert response.headers["retry-after"] == "5"
    assert anonymous.status_code == 401, "the key is checked first: no state leaks without one"
    assert alive.status_code == 200
    assert sample(samples, "loanops_model_reload_failures_total") >= 1
    assert not [name for name, _ in samples if name == "loanops_model_info"]


def test_readyz_names_the_version_serving(client: TestClient, models: Registry) -> None:
    assert client.get("/readyz").json() == {
        "status": "ready",
        "model_version": models.first.number,
        "detail": None,
    }


def test_model_info_describes_the_version_and_its_run(client: TestClient, models: Registry) -> None:
    response = client.get("/v1/model", headers=KEY)

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == models.settings.model_name
    assert body["ref"] == f"models:/{models.settings.model_name}@production"
    assert body["version"] == models.first.number
    assert body["run_id"] == models.first.run_id
    assert body["family"] == "logreg"
    assert body["threshold"] == current(client).threshold
    run_metrics = models.client.get_run(models.first.run_id).data.metrics
    assert body["metrics"] == {k: run_metrics[k] for k in REPORTED_METRICS if k in run_metrics}
    assert "test_roc_auc" in body["metrics"]
    assert body["last_reload_error"] is None
    assert body["reload_failures"] == 0


# --- following the alias and pinning ------------------------------------------------------------


def test_a_moved_alias_swaps_the_model_and_a_broken_version_keeps_the_old_one(
    models: Registry, tmp_path: Path
) -> None:
    alias = models.new_alias(models.first)
    with serving(
        models, tmp_path, serving={"model_ref": models.ref(alias), "model_poll_seconds": 0.1}
    ) as started:
        assert post(started, typical()).json()["model_version"] == models.first.number

        models.move(alias, models.damaged)
        wait_for(
            lambda: state(started).holder.reload_failures > 0, what="a failed reload", timeout=30
        )
        still = post(started, typical())
        info = started.get("/v1/model", headers=KEY).json()
        failures = sample(metric_samples(started), "loanops_model_reload_failures_total")

        models.move(alias, models.first)  # rolled back: the version serving is in line again
        wait_for(
            lambda: started.get("/v1/model", headers=KEY).json()["last_reload_error"] is None,
            what="the stale error to clear",
            timeout=30,
        )
        rolled_back = started.get("/v1/model", headers=KEY).json()

        models.move(alias, models.second)
        wait_for(
            lambda: current(started).version == models.second.number,
            what="the swap to v2",
            timeout=30,
        )
        swapped = post(started, typical())
        after = started.get("/v1/model", headers=KEY).json()
        samples = metric_samples(started)

    assert still.status_code == 200
    assert still.json()["model_version"] == models.first.number
    assert info["version"] == models.first.number
    assert info["last_reload_error_version"] == models.damaged.number
    assert f"v{models.damaged.number} cannot be loaded" in info["last_reload_error"]
    assert info["reload_failures"] >= 1
    assert failures >= 1
    assert rolled_back["version"] == models.first.number
    assert rolled_back["last_reload_error_version"] is None
    assert rolled_back["reload_failures"] >= info["reload_failures"]

    assert swapped.json()["model_version"] == models.second.number
    assert after["version"] == models.second.number
    assert after["last_reload_error"] is None
    name = models.settings.model_name
    info_labels = {"model": name, "version": models.second.number}
    assert sample(samples, "loanops_model_info", **info_labels, run_id=models.second.run_id) == 1.0
    assert not [
        labels
        for metric, labels in samples
        if metric == "loanops_model_info" and ("version", models.first.number) in labels
    ]


def test_a_broken_version_is_retried_with_backoff_not_on_every_poll(
    models: Registry, tmp_path: Path
) -> None:
    alias = models.new_alias(models.first)
    poll = 0.05
    with serving(
        models, tmp_path, serving={"model_ref": models.ref(alias), "model_poll_seconds": poll}
    ) as started:
        models.move(alias, models.damaged)
        wait_for(
            lambda: state(started).holder.reload_failures > 0, what="a failed reload", timeout=30
        )
        time.sleep(1.5)  # 30 polls
        failures = state(started).holder.reload_failures
        models.move(alias, models.second)  # a different version is tried at once
        wait_for(
            lambda: current(started).version == models.second.number,
            what="the swap to v2",
            timeout=30,
        )

    # Retries after 0.1, 0.2, 0.4 and 0.8 s: at most 5 attempts in the window, not 30.
    assert 1 <= failures <= 5


def test_a_pinned_version_serves_and_does_not_follow_the_alias(
    models: Registry, tmp_path: Path
) -> None:
    pinned = f"models:/{models.settings.model_name}/{models.second.number}"
    with serving(
        models, tmp_path, serving={"model_ref": pinned, "model_poll_seconds": 0.05}
    ) as started:
        # The alias this server would follow unpinned points at another version.
        production = models.client.get_model_version_by_alias(
            models.settings.model_name, "production"
        )
        assert str(production.version) == models.first.number
        time.sleep(0.5)  # ten poll intervals

        response = post(started, typical())
        info = started.get("/v1/model", headers=KEY).json()

    assert response.json()["model_version"] == models.second.number
    assert info["ref"] == pinned
    assert info["version"] == models.second.number
    assert info["reload_failures"] == 0


# --- the decision log ---------------------------------------------------------------------------


def test_every_scored_application_is_one_decision_log_record_after_shutdown(
    models: Registry, tmp_path: Path
) -> None:
    # Nothing is written while serving: only the flush at shutdown can write these.
    settings: dict[str, Any] = {"decision_log": {"flush_seconds": 60.0, "batch_size": 10_000}}
    sent: list[dict[str, Any]] = []
    answered: list[dict[str, Any]] = []
    with serving(models, tmp_path, **settings) as started:
        for application in (safe(), typical(), risky()):
            sent.append(application)
            answered.append(post(started, application).json())
        batch = [typical(loan_amnt=5000 * i) for i in range(1, 6)]
        sent.extend(batch)
        answered.extend(
            post(started, {"applications": batch}, "/v1/predict/batch").json()["predictions"]
        )
        post(started, typical(int_rate=-1.0))  # refused: no decision
        engine = create_engine_for(state(started).settings.decision_db_url)
        time.sleep(0.5)  # time enough for the writer process, were it flushing early
        written_while_serving = count_decisions(engine)

    log = read_decisions(engine)
    engine.dispose()

    assert written_while_serving == 0
    assert len(log) == len(sent) == 8
    by_id = log.set_index("request_id")
    assert set(by_id.index) == {a["request_id"] for a in answered}
    for application, answer in zip(sent, answered, strict=True):
        record = by_id.loc[answer["request_id"]]
        assert record["model_name"] == models.settings.model_name
        assert record["model_version"] == answer["model_version"] == models.first.number
        assert record["probability"] == answer["probability_of_default"]
        assert record["decision"] == answer["decision"]
        assert record["threshold"] == answer["threshold"]
        assert record["reasons"] == answer["reasons"]
        assert record["source"] == "api"
        assert {name: record[name] for name in application} == application


# --- metrics ------------------------------------------------------------------------------------


def test_metrics_count_requests_by_route_and_status_and_predictions_by_decision(
    models: Registry, tmp_path: Path
) -> None:
    with serving(models, tmp_path) as started:
        decided = [post(started, safe()).json(), post(started, risky()).json()]
        batch = post(started, {"applications": [safe(), risky(), typical()]}, "/v1/predict/batch")
        decided.extend(batch.json()["predictions"])
        post(started, typical(int_rate="x"))
        post(started, typical(), headers={})
        started.get("/v1/batch-jobs/nope/result", headers=KEY)
        started.get("/no/such/path")
        samples = metric_samples(started)

    def requests(route: str, method: str, status: int) -> float:
        return sample(
            samples, "loanops_http_requests_total", route=route, method=method, status=str(status)
        )

    assert requests("/v1/predict", "POST", 200) == 2
    assert requests("/v1/predict", "POST", 422) == 1
    assert requests("/v1/predict", "POST", 401) == 1
    assert requests("/v1/predict/batch", "POST", 200) == 1
    # The route template, never the raw path, so job ids cannot grow the series.
    assert requests("/v1/batch-jobs/{job_id}/result", "GET", 404) == 1
    assert requests("<unmatched>", "GET", 404) == 1
    by_decision = {d: sum(1 for p in decided if p["decision"] == d) for d in ("approve", "decline")}
    assert by_decision["approve"] >= 1 and by_decision["decline"] >= 1
    for decision, count in by_decision.items():
        assert sample(samples, "loanops_predictions_total", decision=decision) == count
    assert (
        sample(
            samples,
            "loanops_model_info",
            model=models.settings.model_name,
            version=models.first.number,
            run_id=models.first.run_id,
        )
        == 1.0
    )
    assert sample(samples, "loanops_model_reload_failures_total") == 0
    assert (
        sample(
            samples,
            "loanops_http_request_duration_seconds_count",
            route="/v1/predict",
            method="POST",
        )
        == 4
    )


# --- OpenAPI ------------------------------------------------------------------------------------


def test_every_operation_has_a_summary_and_a_description(client: TestClient) -> None:
    document = client.get("/openapi.json").json()

    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    assert {path for path, _, _ in operations} >= {
        "/v1/predict",
        "/v1/predict/batch",
        "/v1/model",
        "/v1/batch-jobs",
        "/v1/batch-jobs/{job_id}",
        "/v1/batch-jobs/{job_id}/result",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    for path, method, operation in operations:
        assert operation.get("summary"), f"{method.upper()} {path} has no summary"
        assert operation.get("description"), f"{method.upper()} {path} has no description"
    assert document["info"]["description"].strip()


@pytest.mark.parametrize(
    ("path", "wrap"),
    [("/v1/predict", False), ("/v1/predict/batch", True)],
    ids=["single", "batch"],
)
def test_the_documented_request_example_is_the_models_input_example_and_validates(
    client: TestClient, path: str, wrap: bool
) -> None:
    document = client.get("/openapi.json").json()
    body = document["paths"][path]["post"]["requestBody"]
    media = body["content"]["application/json"]
    example = media["example"]
    expected = current(client).input_example[0]

    assert body["required"] is True
    assert example == ({"applications": [expected]} if wrap else expected)
    # The example satisfies the documented schema, as a client generator would read it.
    resolver_document = {**media["schema"], "components": document["components"]}
    jsonschema.validate(
        example,
        resolver_document,
        cls=jsonschema.Draft202012Validator,
    )
    # And the server accepts it.
    assert post(client, example, path).status_code == 200


def test_the_documented_schema_refuses_what_the_server_refuses(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    schema = {
        **document["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ],
        "components": document["components"],
    }
    validator = jsonschema.Draft202012Validator(schema)

    for case in ("negative amount", "unknown category", "missing required field"):
        body = BAD_APPLICATIONS[case][0]
        assert isinstance(body, dict)
        assert not validator.is_valid(body), case
        assert post(client, body).status_code == 422


@pytest.mark.integration
def test_an_upload_the_job_storage_cannot_take_is_503_and_leaves_no_job(
    models: Registry,
    tmp_path: Path,
    s3_endpoint: str,  # noqa: F811
) -> None:
    # A bucket nobody created: the S3 server answers NoSuchBucket, as a misnamed bucket would.
    batch = {
        "storage_dir": tmp_path / "storage",
        "redis_url": f"redis://127.0.0.1:{free_port()}/0",  # never reached: storage comes first
        "storage": "s3",
        "s3_bucket": "loanops-no-such-bucket",
        "s3_endpoint_url": s3_endpoint,
    }
    with serving(models, tmp_path, batch=batch) as started:
        refused = started.post(
            "/v1/batch-jobs",
            params={"filename": "applications.csv"},
            content=pd.DataFrame(list(_applicants()[:10])).to_csv(index=False).encode(),
            headers={**KEY, "Content-Type": "text/csv"},
        )
        jobs = state(started).jobs

    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "30"
    detail = refused.json()["detail"]
    assert "batch-job storage (s3://loanops-no-such-bucket/batch-jobs at http" in detail
    assert "NoSuchBucket" in detail
    assert jobs.job_ids() == []
    assert not any((tmp_path / "storage" / "batch-staging").iterdir())
