"""Property: whatever a client sends, the scoring API answers 200 or a 4xx, never a 500.

Bodies are drawn near the contract, where bugs hide: objects keyed by the real feature names
whose values are sometimes valid and sometimes any JSON value (NaN and the infinities included),
plus unknown keys; and far from it: any JSON value, and any bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loanops.schema import Feature
from serving.app import create_app
from tests.integration.api_fixtures import (
    API_KEYS,
    SCHEMA,
    api_settings,
    point_alias,
    registry_settings,
    wait_until_ready,
)
from tests.integration.serving_fixtures import register_version

KEY = {"X-API-Key": API_KEYS[0]}
MAX_SYNC_BATCH = 4
MAX_BODY_BYTES = 16_384
PROPERTY_SETTINGS = settings(
    max_examples=70,
    deadline=None,
    database=None,  # no example database: each run stands on its own
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    registry = registry_settings(tmp_path_factory.mktemp("registry"))
    point_alias(registry, register_version(registry, rows=2000))
    app = create_app(
        api_settings(
            registry,
            tmp_path_factory.mktemp("api"),
            serving={"max_sync_batch": MAX_SYNC_BATCH, "max_body_bytes": MAX_BODY_BYTES},
        )
    )
    with TestClient(app, raise_server_exceptions=False) as started:
        wait_until_ready(started)
        yield started


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3)
    ),
    max_leaves=6,
)


def valid_value(feature: Feature) -> st.SearchStrategy[Any]:
    if feature.kind == "category":
        return st.sampled_from(feature.categories or ())
    low = feature.minimum
    high = feature.maximum
    if feature.kind == "int":
        return st.integers(
            min_value=None if low is None else int(low),
            max_value=None if high is None else int(high),
        )
    return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)


def near_miss(feature: Feature) -> st.SearchStrategy[Any]:
    """Values one step outside the contract: out of range, the wrong type, a category's cousin."""
    if feature.kind == "category":
        return st.sampled_from(feature.categories or ()).map(str.upper) | st.text(max_size=8)
    outside = [value for value in (feature.minimum, feature.maximum) if value is not None]
    out_of_range = st.sampled_from(outside).flatmap(
        lambda v: st.sampled_from([v - 1, v + 1, -v, v * 1e6])
    )
    wrong_type = st.sampled_from(
        [float("nan"), float("inf"), float("-inf"), 1.5, "12", "1e3", True]
    )
    return out_of_range | wrong_type


@st.composite
def applications(draw: st.DrawFn) -> dict[str, Any]:
    """A valid application with a few of its fields broken, left out or joined by unknown ones.

    Mostly a handful of changes at most, so that about a third of the bodies are valid and the
    scoring path runs as often as the validation path.
    """
    body = {feature.name: draw(valid_value(feature)) for feature in SCHEMA.features}
    changed = draw(st.lists(st.sampled_from(SCHEMA.features), max_size=3, unique=True))
    for feature in changed:
        change = draw(st.sampled_from(["near miss", "any", "absent"]))
        if change == "absent":
            del body[feature.name]
        else:
            body[feature.name] = draw(near_miss(feature) if change == "near miss" else json_values)
    extras = draw(st.dictionaries(st.text(max_size=12), json_values, max_size=1))
    return {**body, **{k: v for k, v in extras.items() if k not in body}}


def encode(body: Any, ascii_only: bool) -> bytes:
    # allow_nan: NaN, Infinity and -Infinity tokens, which the API must refuse as input.
    return json.dumps(body, allow_nan=True, ensure_ascii=ascii_only).encode()


def check(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 413, 422), response.text
    body: dict[str, Any] = response.json()
    if response.status_code == 422:
        assert body["detail"] and all(e["loc"][0] == "body" for e in body["detail"])
    return body


def check_prediction(prediction: dict[str, Any]) -> None:
    assert 0.0 <= prediction["probability_of_default"] <= 1.0
    threshold = prediction["threshold"]
    expected = "decline" if prediction["probability_of_default"] >= threshold else "approve"
    assert prediction["decision"] == expected


@PROPERTY_SETTINGS
@given(body=applications(), ascii_only=st.booleans())
def test_one_application_is_scored_or_refused_never_a_server_error(
    client: TestClient, body: dict[str, Any], ascii_only: bool
) -> None:
    response = client.post("/v1/predict", content=encode(body, ascii_only), headers=KEY)

    answer = check(response)
    if response.status_code == 200:
        check_prediction(answer)


@PROPERTY_SETTINGS
@given(
    body=st.lists(applications(), max_size=MAX_SYNC_BATCH + 1).map(lambda a: {"applications": a})
    | st.dictionaries(st.sampled_from(["applications", "application", ""]), json_values)
)
def test_a_batch_is_scored_or_refused_never_a_server_error(
    client: TestClient, body: dict[str, Any]
) -> None:
    response = client.post("/v1/predict/batch", content=encode(body, True), headers=KEY)

    answer = check(response)
    if response.status_code == 200:
        assert len(answer["predictions"]) == len(body["applications"])
        for prediction in answer["predictions"]:
            check_prediction(prediction)


@PROPERTY_SETTINGS
@given(
    body=st.binary(max_size=300) | json_values.map(lambda v: encode(v, False)),
    path=st.sampled_from(["/v1/predict", "/v1/predict/batch"]),
)
def test_any_bytes_are_refused_cleanly(client: TestClient, body: bytes, path: str) -> None:
    response = client.post(path, content=body, headers=KEY)

    check(response)
    assert response.status_code != 200 or body.lstrip().startswith(b"{")
