"""The feature schema: its own validation rules, dtypes, frames, labels, signature and JSON."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.types import TensorSpec
from pydantic import ValidationError

from loanops.data import catalog
from loanops.schema import Feature, FeatureSchema, Target
from tests.factories import LENDING_CLUB, TINY, applicants_frame, lending_club_applicant, tiny_frame


def feature(**overrides: Any) -> Feature:
    return Feature(**{"name": "x", "kind": "float", "description": "x", **overrides})


# --- Feature rules ----------------------------------------------------------------------------


@pytest.mark.parametrize("categories", [None, ()])
def test_category_feature_needs_its_categories(categories: tuple[str, ...] | None) -> None:
    with pytest.raises(ValidationError, match="'x' needs its categories"):
        feature(kind="category", categories=categories)


@pytest.mark.parametrize("bound", [{"minimum": 0}, {"maximum": 1}])
def test_category_feature_cannot_have_a_range(bound: dict[str, float]) -> None:
    with pytest.raises(ValidationError, match="cannot have a range"):
        feature(kind="category", categories=("a",), **bound)


@pytest.mark.parametrize("kind", ["int", "float"])
def test_numeric_feature_cannot_have_categories(kind: str) -> None:
    with pytest.raises(ValidationError, match="numeric feature 'x' cannot have categories"):
        feature(kind=kind, categories=("a",))


def test_minimum_above_maximum_is_refused() -> None:
    with pytest.raises(ValidationError, match="minimum above maximum"):
        feature(minimum=2, maximum=1)


def test_degenerate_and_one_sided_ranges_are_allowed() -> None:
    assert feature(minimum=1, maximum=1).maximum == 1
    assert feature(minimum=0).maximum is None
    assert feature(maximum=0).minimum is None


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValidationError):
        feature(kind="date")


def test_features_are_immutable() -> None:
    with pytest.raises(ValidationError):
        feature().name = "y"


# --- FeatureSchema rules ----------------------------------------------------------------------


def test_duplicate_feature_names_are_listed() -> None:
    with pytest.raises(ValidationError, match=r"duplicate feature names: \['a', 'b'\]"):
        FeatureSchema(
            name="s",
            target=Target(name="y", positive=1, negative=0),
            features=tuple(feature(name=n) for n in ("a", "b", "c", "a", "b")),
        )


def test_target_cannot_also_be_a_feature() -> None:
    with pytest.raises(ValidationError, match="target 'y' is also listed as a feature"):
        FeatureSchema(
            name="s",
            target=Target(name="y", positive=1, negative=0),
            features=(feature(name="a"), feature(name="y")),
        )


def test_feature_lists_keep_schema_order() -> None:
    assert TINY.feature_names == ["amount", "rate", "late_payments", "grade", "tenure"]
    assert TINY.numeric_features == ["amount", "rate", "late_payments"]
    assert TINY.categorical_features == ["grade", "tenure"]
    assert TINY.feature("rate").maximum == 30
    with pytest.raises(KeyError):
        TINY.feature("defaulted")


# --- pandas dtypes and to_frame ---------------------------------------------------------------


def test_pandas_dtypes_carry_nullable_ints_as_float() -> None:
    assert TINY.pandas_dtypes() == {
        "amount": "int64",
        "rate": "float64",
        "late_payments": "float64",
        "grade": "object",
        "tenure": "object",
    }


def test_to_frame_orders_and_casts_to_the_schema_and_drops_other_columns() -> None:
    raw = tiny_frame(20)
    shuffled = raw[["tenure", "defaulted", "rate", "grade", "amount", "late_payments"]].assign(
        amount=raw["amount"].astype(np.float64), extra="ignored"
    )
    features = TINY.to_frame(shuffled)
    assert list(features.columns) == TINY.feature_names
    assert features.dtypes.astype(str).to_dict() == TINY.pandas_dtypes()
    np.testing.assert_array_equal(features["amount"].to_numpy(), raw["amount"].to_numpy())
    pd.testing.assert_index_equal(features.index, raw.index)


def test_to_frame_leaves_its_input_untouched() -> None:
    raw = tiny_frame(20).astype({"amount": np.float64})
    before = raw.copy()
    TINY.to_frame(raw)
    pd.testing.assert_frame_equal(raw, before)


def test_to_frame_names_every_missing_column() -> None:
    with pytest.raises(KeyError, match=r"missing feature columns: \['rate', 'tenure'\]"):
        TINY.to_frame(tiny_frame(5).drop(columns=["tenure", "rate"]))


@pytest.mark.parametrize(
    ("column", "value"),
    [("amount", "lots"), ("amount", np.nan), ("rate", "high")],
    ids=["text-in-int", "null-in-non-nullable-int", "text-in-float"],
)
def test_to_frame_raises_value_error_on_an_uncastable_column(column: str, value: Any) -> None:
    raw = tiny_frame(5).astype({column: object})
    raw.loc[0, column] = value
    with pytest.raises(ValueError):
        TINY.to_frame(raw)


def test_to_frame_gives_none_never_nan_for_a_missing_category() -> None:
    raw = tiny_frame(4)
    raw["tenure"] = ["long", np.nan, None, pd.NA]
    tenure = TINY.to_frame(raw)["tenure"]
    assert tenure.tolist() == ["long", None, None, None]
    assert tenure.dtype == object


def test_to_frame_turns_an_all_null_category_column_of_float_dtype_into_none() -> None:
    raw = tiny_frame(3).assign(tenure=np.nan)  # as pandas reads an empty CSV column
    assert TINY.to_frame(raw)["tenure"].tolist() == [None, None, None]


def test_to_frame_keeps_nan_in_nullable_numbers() -> None:
    raw = tiny_frame(3).assign(late_payments=[1, None, 3])
    late = TINY.to_frame(raw)["late_payments"]
    assert late.dtype == np.float64 and late.isna().tolist() == [False, True, False]


# --- labels -----------------------------------------------------------------------------------


def test_labels_mark_the_positive_value_as_one() -> None:
    frame = applicants_frame(*(lending_club_applicant(Class=c) for c in ["good", "bad", "good"]))
    labels = LENDING_CLUB.labels(frame)
    assert labels.dtype == np.int8
    assert labels.tolist() == [0, 1, 0]


def test_labels_with_an_integer_target() -> None:
    frame = tiny_frame(50)
    np.testing.assert_array_equal(TINY.labels(frame), frame["defaulted"].to_numpy())


# --- MLflow signature -------------------------------------------------------------------------


def test_mlflow_signature_types_follow_the_pandas_dtypes() -> None:
    inputs = TINY.mlflow_signature().inputs
    assert inputs.input_names() == TINY.feature_names
    types = [t.name for t in inputs.input_types()]
    assert types == ["long", "double", "double", "string", "string"]


def test_mlflow_signature_marks_only_nullable_features_optional() -> None:
    inputs = TINY.mlflow_signature().inputs
    required = {spec.name: spec.required for spec in inputs.inputs}
    assert required == {
        "amount": True,
        "rate": True,
        "late_payments": False,
        "grade": True,
        "tenure": False,
    }


def test_mlflow_signature_outputs_both_class_probabilities() -> None:
    outputs = TINY.mlflow_signature().outputs.inputs
    assert len(outputs) == 1 and isinstance(outputs[0], TensorSpec)
    assert outputs[0].type == np.dtype("float64") and outputs[0].shape == (-1, 2)


def test_importing_the_schema_and_the_datasets_does_not_import_mlflow() -> None:
    # Serving imports the schema for its request model; MLflow costs seconds and is not needed.
    code = (
        "import sys, loanops.schema, loanops.data, loanops.data.lending_club; "
        "print(sorted(name for name in sys.modules if name.partition('.')[0] == 'mlflow'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


# --- JSON round trip --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [TINY, *(d.schema for d in catalog().values())],
    ids=lambda s: s.name,
)
def test_json_round_trip_gives_an_equal_schema(schema: FeatureSchema) -> None:
    dumped = schema.model_dump(mode="json")
    restored = FeatureSchema.model_validate(dumped)
    assert restored == schema
    assert restored.pandas_dtypes() == schema.pandas_dtypes()
    assert type(restored.target.positive) is type(schema.target.positive)
    assert FeatureSchema.model_validate_json(schema.model_dump_json()) == schema
