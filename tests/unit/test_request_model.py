"""The request model derived from a feature schema: what one application may look like."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from loanops.data import load_dataset
from loanops.data.synthetic import SCHEMA as SYNTHETIC
from loanops.data.synthetic import generate
from tests.factories import LENDING_CLUB, lending_club_applicant

Application = LENDING_CLUB.request_model()


def application() -> dict[str, Any]:
    """A typical applicant as the API receives it: features only, no label."""
    payload = lending_club_applicant()
    del payload[LENDING_CLUB.target.name]
    return payload


def errors(payload: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as failure:
        Application.model_validate_json(json.dumps(payload))
    return [(".".join(str(p) for p in e["loc"]), e["type"]) for e in failure.value.errors()]


def test_every_real_loan_is_a_valid_request() -> None:
    frame = LENDING_CLUB.to_frame(load_dataset("lending_club").frame)
    for record in frame.to_dict("records"):
        Application.model_validate_json(json.dumps(record))


def test_generated_loans_with_null_categories_are_valid_requests() -> None:
    model = SYNTHETIC.request_model()
    records = SYNTHETIC.to_frame(generate(2_000, seed=3)).to_dict("records")
    assert any(r["emp_length"] is None for r in records)
    for record in records:
        model.model_validate_json(json.dumps(record))


def test_a_nullable_feature_may_be_left_out() -> None:
    model = SYNTHETIC.request_model()
    record = SYNTHETIC.to_frame(generate(10, seed=1)).to_dict("records")[0]
    del record["emp_length"]
    assert model.model_validate_json(json.dumps(record)).emp_length is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"int_rate": "13.5%"}, ("int_rate", "float_type")),
        ({"int_rate": float("nan")}, ("int_rate", "finite_number")),
        ({"annual_inc": float("inf")}, ("annual_inc", "finite_number")),
        ({"funded_amnt": -5000}, ("funded_amnt", "greater_than_equal")),
        ({"funded_amnt": 10_000.5}, ("funded_amnt", "int_type")),
        ({"inq_last_6mths": "2"}, ("inq_last_6mths", "int_type")),
        ({"addr_state": "ZZ"}, ("addr_state", "literal_error")),
        ({"term": None}, ("term", "literal_error")),
        ({"revol_util": 301.0}, ("revol_util", "less_than_equal")),
        ({"favourite_colour": "blue"}, ("favourite_colour", "extra_forbidden")),
    ],
)
def test_each_bad_value_is_refused_naming_its_field_and_rule(
    change: dict[str, Any], expected: tuple[str, str]
) -> None:
    payload = {**application(), **change}
    assert errors(payload) == [expected]


def test_a_whole_float_is_a_count_as_json_schema_has_it() -> None:
    payload = {**application(), "funded_amnt": 10_000.0, "inq_last_6mths": 2.0}
    accepted = Application.model_validate_json(json.dumps(payload))
    assert (accepted.funded_amnt, accepted.inq_last_6mths) == (10_000, 2)  # type: ignore[attr-defined]
    assert type(accepted.funded_amnt) is int  # type: ignore[attr-defined]
    assert errors({**payload, "funded_amnt": -1.0}) == [("funded_amnt", "greater_than_equal")]


def test_a_missing_required_field_is_named() -> None:
    payload = application()
    del payload["sub_grade"]
    assert errors(payload) == [("sub_grade", "missing")]


def test_the_model_documents_every_feature_with_its_rules() -> None:
    schema = Application.model_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(LENDING_CLUB.feature_names)
    properties = schema["properties"]
    assert properties["funded_amnt"]["minimum"] == 500
    assert properties["sub_grade"]["enum"][0] == "A1"
    assert all(properties[name]["description"] for name in LENDING_CLUB.feature_names)


def test_the_model_is_built_once_per_schema() -> None:
    assert LENDING_CLUB.request_model() is Application
