"""The API keeps its own contract: a running `loanops serve`, fuzzed against its OpenAPI schema.

Schemathesis reads `/openapi.json` from a real server (uvicorn, batch jobs on a Redis database of
its own and a worker scoring them: `keyed_api`, shared with the batch CLI's tests) and sends
schema-valid and schema-violating requests to every operation. Each response must be
documented: no 5xx, a documented status code and content type, a body that matches the
documented schema for its status, and a refusal of every request the schema forbids.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckFunction
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance
from schemathesis.specs.openapi.schemas import OpenApiSchema

from tests.integration.api_fixtures import API_KEYS, Server
from tests.integration.served_api import keyed_api  # noqa: F401
from tests.integration.serving_fixtures import serving_model  # noqa: F401

pytestmark = pytest.mark.integration

KEY = {"X-API-Key": API_KEYS[0]}
EXAMPLES_PER_OPERATION = 40
"""Hypothesis examples per operation and mode: some 10 operations, about a minute in all."""

RULES_THE_SCHEMA_CANNOT_STATE = {
    # A file's columns and values are checked after upload: a binary body may be a bad CSV.
    ("POST", "/v1/batch-jobs"),
    # `observed_at` must not lie in the future, which JSON Schema cannot say.
    ("POST", "/v1/outcomes"),
}
"""Operations where a schema-valid request may still be refused with the documented 422."""


@pytest.fixture(scope="module")
def api_schema(keyed_api: Server) -> OpenApiSchema:  # noqa: F811
    """The document the running server publishes; requests go to that server."""
    return schemathesis.openapi.from_url(f"{keyed_api.url}/openapi.json", timeout=30)


OPERATIONS = [
    ("POST", "/v1/predict"),
    ("POST", "/v1/predict/batch"),
    ("POST", "/v1/batch-jobs"),
    ("GET", "/v1/batch-jobs/{job_id}"),
    ("GET", "/v1/batch-jobs/{job_id}/result"),
    ("GET", "/v1/model"),
    ("POST", "/v1/outcomes"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
]
"""Every operation in the document (a test checks the list is complete), fuzzed one by one."""
TAKES_NOTHING = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}
"""Open operations without parameters or body: no request can violate their schema."""
FUZZED = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path in OPERATIONS
    for mode in GenerationMode
    if mode is GenerationMode.POSITIVE or (method, path) not in TAKES_NOTHING
]


def test_every_documented_operation_is_fuzzed(api_schema: OpenApiSchema) -> None:
    documented = set()
    for result in api_schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operation = result.ok()
        documented.add((operation.method.upper(), operation.path))
    assert documented == set(OPERATIONS)


# schemathesis's own `@schema.parametrize()` with `from_fixture` breaks on pytest 9 (it sets
# `request.node._nodeid`, which pytest 9 no longer has), so each operation's strategy is run here.
@pytest.mark.parametrize(("method", "path", "mode"), FUZZED)
def test_every_response_matches_the_documented_schema(
    api_schema: OpenApiSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    excluded: list[CheckFunction] = []
    if (method, path) in RULES_THE_SCHEMA_CANNOT_STATE:
        excluded.append(positive_data_acceptance)

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure says enough
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: Case) -> None:
        case.call_and_validate(headers=KEY, timeout=30, excluded_checks=excluded)

    call()
