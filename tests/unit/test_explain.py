"""The explainer and the schema's policy declarations, on hand-built scorers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from loanops.explain import Explainer
from loanops.schema import Feature, FeatureSchema, Target

SCHEMA = FeatureSchema(
    name="toy",
    target=Target(name="y", positive=1, negative=0),
    features=(
        Feature(name="debt", kind="float", description="Debt.", minimum=0, risk="increasing"),
        Feature(name="income", kind="float", description="Income.", minimum=0),
        Feature(name="tenure", kind="category", categories=("new", "old"), description="Tenure."),
    ),
).with_reasons({"debt": "Debt is high", "income": "Income is low", "tenure": "New customer"})

WEIGHTS = {"debt": 0.02, "income": -0.001, "tenure": 0.1}


def additive_pd(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """A transparent PD: each feature adds its own term."""
    return np.array(
        [
            0.05
            + WEIGHTS["debt"] * r["debt"]
            + WEIGHTS["income"] * r["income"]
            + WEIGHTS["tenure"] * (r["tenure"] == "new")
            for r in rows
        ]
    )


FAVOURABLE = {"debt": 0.0, "income": 50.0, "tenure": "old"}


def test_reasons_rank_features_by_how_much_their_favourable_value_lowers_pd() -> None:
    explainer = Explainer(SCHEMA, FAVOURABLE, additive_pd)
    row = {"debt": 10.0, "income": 20.0, "tenure": "new"}
    pd_ = float(additive_pd([row])[0])

    reasons = explainer.reasons(row, pd_)

    assert [(r.code, r.text) for r in reasons] == [
        ("DEBT", "Debt is high"),
        ("TENURE", "New customer"),
        ("INCOME", "Income is low"),
    ]
    assert [r.impact for r in reasons] == pytest.approx([0.2, 0.1, 0.03])


def test_top_limits_the_count_and_features_at_their_favourable_value_give_none() -> None:
    explainer = Explainer(SCHEMA, FAVOURABLE, additive_pd)
    row = {"debt": 10.0, "income": 50.0, "tenure": "old"}

    reasons = explainer.reasons(row, float(additive_pd([row])[0]), top=1)

    assert [r.feature for r in reasons] == ["debt"]


def test_a_change_that_would_raise_pd_is_never_a_reason() -> None:
    # Income above the favourable value: moving it there would raise PD, so it is no reason.
    explainer = Explainer(SCHEMA, FAVOURABLE, additive_pd)
    row = {"debt": 0.0, "income": 90.0, "tenure": "old"}

    assert explainer.reasons(row, float(additive_pd([row])[0])) == []


def test_reason_texts_must_cover_every_feature_and_name_only_features() -> None:
    with pytest.raises(ValueError, match=r"unknown features \['age'\], missing \['tenure'\]"):
        SCHEMA.with_reasons({"debt": "d", "income": "i", "age": "a"})


def test_risk_directions_name_only_numeric_features() -> None:
    with pytest.raises(ValueError, match="unknown features"):
        SCHEMA.with_risk({"age": "increasing"})
    with pytest.raises(ValidationError, match="cannot have a risk direction"):
        SCHEMA.with_risk({"tenure": "increasing"})
    assert SCHEMA.with_risk({"income": "decreasing"}).feature("income").risk == "decreasing"
