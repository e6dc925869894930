"""Segment declarations: how a column's values group for review, and how declarations fail."""

from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError

from loanops.card import segments
from loanops.data import catalog
from loanops.data.synthetic import generate
from loanops.schema import FeatureSchema, Segment


def test_bands_prefixes_and_groups_label_each_row_and_leave_missing_values_missing() -> None:
    frame = pd.DataFrame(
        {
            "income": [1_000.0, 40_000.0, 250_000.0, None],
            "sub_grade": ["A1", "B2", None, "C3"],
            "status": ["male : single", "female : married", None, "unlisted"],
        }
    )
    band = Segment(name="band", column="income", use="reporting", edges=(0, 40_000, float("inf")))
    grade = Segment(name="grade", column="sub_grade", use="reporting", prefix=1)
    # Declared as a mapping, as a YAML declaration writes it.
    sex = Segment.model_validate(
        {
            "name": "sex",
            "column": "status",
            "use": "fair_lending",
            "groups": {"male": ["male : single"], "female": ["female : married"]},
        }
    )

    assert band.labels(frame).tolist() == ["0–40k", "≥ 40k", "≥ 40k", pd.NA]
    assert grade.labels(frame).tolist() == ["A", "B", pd.NA, "C"]
    assert sex.labels(frame).tolist() == ["male", "female", pd.NA, pd.NA]


def test_a_segment_round_trips_through_json_with_the_schema() -> None:
    schema = catalog()["lending_club"].schema
    again = FeatureSchema.model_validate_json(schema.model_dump_json())
    assert again == schema
    assert hash(again) == hash(schema)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"edges": (0.0, 1.0), "prefix": 1}, "sets edges and prefix: choose one"),
        ({"edges": (5.0, 1.0)}, "edges must be two or more, increasing"),
        ({"groups": {"a": ["x"], "b": ["x"]}}, "puts ['x'] in two groups"),
        ({"prefix": 0}, "greater than or equal to 1"),
    ],
)
def test_a_malformed_segment_is_refused_with_the_rule(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Segment.model_validate({"name": "s", "column": "c", "use": "reporting", **fields})


def test_a_schema_refuses_repeated_segment_names_and_a_segment_on_the_target() -> None:
    schema = catalog()["synthetic"].schema
    with pytest.raises(ValidationError, match="duplicate segment names"):
        schema.with_segments(*schema.segments, schema.segments[0])
    with pytest.raises(ValidationError, match="cannot split on the target"):
        schema.with_segments(Segment(name="y", column="default", use="reporting"))


def test_the_card_reports_whatever_columns_the_schema_declares() -> None:
    # No sub_grade, term or income: the segments still come from the declaration alone.
    frame = pd.DataFrame({"branch": ["north", "south", "north"], "score": [1, 2, 3]})
    declared = (Segment(name="branch", column="branch", use="reporting"),)
    assert segments(frame, declared)["branch"].tolist() == ["north", "south", "north"]
    absent = (Segment(name="region", column="region", use="reporting"),)
    assert segments(frame, absent) == {}


def test_synthetic_review_columns_are_outside_the_model_inputs() -> None:
    schema = catalog()["synthetic"].schema
    assert schema.review_columns == ["protected_group"]
    assert [s.name for s in schema.segments_for("fair_lending")] == ["protected group"]
    assert "protected_group" not in schema.feature_names


def test_the_proxy_effect_moves_only_the_minoritys_rows_toward_risk() -> None:
    alike = generate(20_000, seed=3)
    proxied = generate(20_000, seed=3, proxy_effect=1.0)
    minority = proxied["protected_group"] == "minority"

    assert (alike["protected_group"] == proxied["protected_group"]).all()
    assert minority.mean() == pytest.approx(0.3, abs=0.01)
    # Drawn from streams of their own with no rejection step, these stay put for the majority.
    # (Poisson counts do not: a rate changed on one row shifts that stream for the rows after.)
    unmoved = ["fico_range_low", "annual_inc", "dti", "revol_util", "loan_amnt"]
    pd.testing.assert_frame_equal(alike.loc[~minority, unmoved], proxied.loc[~minority, unmoved])
    assert proxied.loc[minority, "fico_range_low"].mean() < (
        alike.loc[minority, "fico_range_low"].mean() - 20
    )
    assert proxied.loc[minority, "pd_true"].mean() > 1.3 * alike.loc[minority, "pd_true"].mean()


def test_a_proxy_effect_outside_its_range_is_refused() -> None:
    with pytest.raises(ValueError, match="proxy_effect must be 0 to 3 standard deviations"):
        generate(10, proxy_effect=-0.5)
