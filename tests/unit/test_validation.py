"""The training-data contract: every broken rule is reported with its column, rule and rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from loanops.data import load_file
from loanops.validation import DataValidationError, Problem, ValidationReport, pandera_schema
from loanops.validation import validate_training_frame as validate
from tests.factories import (
    LENDING_CLUB,
    TINY,
    cast_column,
    drop_column,
    keep_positives,
    lending_club_sample,
    set_values,
    tiny_frame,
)

ROWS = 2_000
TOLERANCE = 0.001  # the Settings default: 2 rows in 2,000


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    frame = lending_club_sample(ROWS, seed=1)
    assert (frame["Class"] == "bad").sum() >= 60  # enough defaults for the default minimum of 50
    return frame


@pytest.fixture
def frame(sample: pd.DataFrame) -> pd.DataFrame:
    return sample.copy()


def check(
    frame: pd.DataFrame, *, min_positives: int = 50, tolerance: float = TOLERANCE
) -> ValidationReport:
    return validate(
        frame, LENDING_CLUB, min_positives=min_positives, unknown_category_tolerance=tolerance
    )


def rejection(frame: pd.DataFrame, **kwargs: Any) -> DataValidationError:
    with pytest.raises(DataValidationError) as raised:
        check(frame, **kwargs)
    return raised.value


def assert_only_problem(error: DataValidationError, expected: str) -> None:
    """The error lists exactly one problem, `column: rule (n rows)...`, and says so in its text."""
    texts = [str(p) for p in error.problems]
    assert len(texts) == 1 and texts[0].startswith(expected), texts
    assert f"  - {expected}" in str(error)
    assert str(error).startswith("dataset 'lending_club' failed validation:")


# --- passing frames ---------------------------------------------------------------------------


def test_a_clean_frame_passes_with_its_counts(frame: pd.DataFrame) -> None:
    report = check(frame)
    positives = int((frame["Class"] == "bad").sum())
    assert report == ValidationReport(rows=ROWS, positives=positives, warnings=[])
    assert report.default_rate == pytest.approx(positives / ROWS)


def test_extra_columns_are_allowed(frame: pd.DataFrame) -> None:
    assert check(frame.assign(id=np.arange(ROWS), note="x")).rows == ROWS


@pytest.mark.parametrize("dtype", ["category", "string"])
def test_category_columns_may_use_pandas_categorical_or_string_dtypes(
    frame: pd.DataFrame, dtype: str
) -> None:
    assert check(cast_column(frame, "sub_grade", dtype)).rows == ROWS


def test_nulls_are_allowed_in_nullable_features_only() -> None:
    frame = tiny_frame(300)
    assert frame[["late_payments", "tenure"]].isna().any().all()
    report = validate(frame, TINY, min_positives=10, unknown_category_tolerance=0)
    assert report.rows == 300 and report.positives == int(frame["defaulted"].sum())


# --- wrong dtypes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "corrupt", "detail"),
    [
        ("int_rate", lambda c: c.astype(str), "expected numeric, got object"),
        ("delinq_2yrs", lambda c: c.astype(np.float64), "expected integer, got float64"),
        ("delinq_2yrs", lambda c: c > 0, "expected integer, got bool"),
        ("term", lambda c: c.str[-2:].astype(np.int64), "expected string, got int64"),
    ],
    ids=["text-for-float", "float-for-int", "bool-for-int", "int-for-category"],
)
def test_wrong_dtype_is_reported_once_for_every_row(
    frame: pd.DataFrame, column: str, corrupt: Any, detail: str
) -> None:
    frame[column] = corrupt(frame[column])
    error = rejection(frame)
    assert_only_problem(error, f"{column}: wrong dtype ({ROWS} rows): {detail}")
    assert error.problems == [Problem(column, "wrong dtype", ROWS, detail)]


def test_nullable_int_may_arrive_as_float_but_not_as_text() -> None:
    frame = tiny_frame(300)
    assert frame["late_payments"].dtype == np.float64
    validate(frame, TINY, min_positives=10, unknown_category_tolerance=0)
    with pytest.raises(DataValidationError, match=r"late_payments: wrong dtype \(300 rows\)"):
        validate(
            cast_column(frame, "late_payments", str),
            TINY,
            min_positives=10,
            unknown_category_tolerance=0,
        )


# --- out-of-range values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "rows", "expected"),
    [
        ("int_rate", 55.0, 3, "int_rate: out of range (3 rows): allowed [0.0, 40.0]; e.g. 55.0"),
        ("funded_amnt", 100, 2, "funded_amnt: out of range (2 rows): allowed [500.0, 40000.0]"),
        ("revol_util", -0.5, 1, "revol_util: out of range (1 row): allowed [0.0, 300.0]"),
        ("delinq_2yrs", 5_000, 4, "delinq_2yrs: out of range (4 rows): allowed [0.0, 1000.0]"),
    ],
)
def test_out_of_range_values_are_counted_per_row(
    frame: pd.DataFrame, column: str, value: float, rows: int, expected: str
) -> None:
    assert_only_problem(rejection(set_values(frame, column, value, rows)), expected)


def test_range_bounds_are_inclusive(frame: pd.DataFrame) -> None:
    frame = set_values(frame, "int_rate", 40.0, 5)
    frame = set_values(frame, "funded_amnt", 500, 5)
    assert check(frame).rows == ROWS


# --- unexpected categories and the tolerance --------------------------------------------------


def test_unexpected_categories_past_the_tolerance_are_an_error(frame: pd.DataFrame) -> None:
    corrupted = set_values(frame, "addr_state", "ZZ", 5)  # 0.25 % > 0.1 %
    assert_only_problem(rejection(corrupted), "addr_state: unexpected category (5 rows): e.g. 'ZZ'")


def test_unexpected_categories_within_the_tolerance_pass_as_a_warning(frame: pd.DataFrame) -> None:
    corrupted = set_values(frame, "addr_state", "ZZ", 5)
    report = check(corrupted, tolerance=0.005)
    assert report.rows == ROWS
    assert [(p.column, p.rule, p.rows) for p in report.warnings] == [
        ("addr_state", "unexpected category", 5)
    ]
    assert str(report.warnings[0]).startswith("addr_state: unexpected category (5 rows): e.g. 'ZZ'")


def test_tolerance_boundary_is_inclusive(frame: pd.DataFrame) -> None:
    at_tolerance = set_values(frame, "addr_state", "ZZ", 2)  # exactly 0.1 %
    assert [p.rows for p in check(at_tolerance).warnings] == [2]
    past_tolerance = set_values(frame, "addr_state", "ZZ", 3)
    assert_only_problem(rejection(past_tolerance), "addr_state: unexpected category (3 rows)")


def test_zero_tolerance_rejects_a_single_unexpected_category(frame: pd.DataFrame) -> None:
    corrupted = set_values(frame, "emp_length", "emp_11", 1)
    assert_only_problem(
        rejection(corrupted, tolerance=0.0), "emp_length: unexpected category (1 row)"
    )


def test_tolerance_applies_per_column(frame: pd.DataFrame) -> None:
    corrupted = set_values(frame, "addr_state", "ZZ", 2)
    corrupted = set_values(corrupted, "term", "term_48", 2)
    report = check(corrupted)
    assert {(p.column, p.rows) for p in report.warnings} == {("addr_state", 2), ("term", 2)}


def test_examples_of_unexpected_categories_are_listed(frame: pd.DataFrame) -> None:
    frame.loc[:2, "sub_grade"] = ["H1", "H2", "Z9"]
    [problem] = rejection(frame).problems
    assert (problem.column, problem.rule, problem.rows) == ("sub_grade", "unexpected category", 3)
    assert problem.detail.startswith("e.g. 'H1', 'H2', 'Z9'")


# --- nulls in features ------------------------------------------------------------------------


@pytest.mark.parametrize(("column", "value"), [("revol_util", np.nan), ("term", None)])
def test_null_in_a_non_nullable_feature_is_an_error(
    frame: pd.DataFrame, column: str, value: Any
) -> None:
    assert_only_problem(
        rejection(set_values(frame, column, value, 4)),
        f"{column}: null values (4 rows): column is not nullable",
    )


# --- the target -------------------------------------------------------------------------------


def test_missing_target_column(frame: pd.DataFrame) -> None:
    error = rejection(drop_column(frame, "Class"))
    assert_only_problem(error, f"Class: missing column ({ROWS} rows): required by the schema")


def test_null_target(frame: pd.DataFrame) -> None:
    assert_only_problem(
        rejection(set_values(frame, "Class", None, 4)),
        "Class: null values (4 rows): column is not nullable",
    )


def test_unknown_label(frame: pd.DataFrame) -> None:
    assert_only_problem(
        rejection(set_values(frame, "Class", "ugly", 4)),
        "Class: unexpected label (4 rows): labels must be one of ['bad', 'good']; saw 'ugly'",
    )


def test_unknown_labels_are_never_tolerated_like_categories(frame: pd.DataFrame) -> None:
    assert rejection(set_values(frame, "Class", "ugly", 1), tolerance=0.5).problems[0].rows == 1


def test_integer_labels_for_a_text_target_are_unknown_labels(frame: pd.DataFrame) -> None:
    frame["Class"] = (frame["Class"] == "bad").astype(np.int64)
    rules = [(p.column, p.rule, p.rows) for p in rejection(frame).problems]
    assert ("Class", "unexpected label", ROWS) in rules
    assert ("Class", "too few positives", 0) in rules


def test_too_few_positives(frame: pd.DataFrame) -> None:
    assert_only_problem(
        rejection(keep_positives(frame, LENDING_CLUB, 10)),
        "Class: too few positives (10 rows): need at least 50 rows labelled 'bad'",
    )


def test_exactly_the_minimum_of_positives_passes(frame: pd.DataFrame) -> None:
    assert check(keep_positives(frame, LENDING_CLUB, 50)).positives == 50


def test_too_few_positives_with_an_integer_target() -> None:
    frame = tiny_frame(300)
    with pytest.raises(DataValidationError, match=r"defaulted: too few positives \(60 rows\)"):
        validate(frame, TINY, min_positives=61, unknown_category_tolerance=0)


# --- structure --------------------------------------------------------------------------------


def test_missing_feature_column(frame: pd.DataFrame) -> None:
    error = rejection(drop_column(frame, "int_rate"))
    assert_only_problem(error, f"int_rate: missing column ({ROWS} rows): required by the schema")


@pytest.mark.parametrize("columns", ["all", "none"])
def test_empty_frame(frame: pd.DataFrame, columns: str) -> None:
    empty = frame.iloc[:0] if columns == "all" else pd.DataFrame()
    error = rejection(empty)
    assert error.problems == [Problem("<frame>", "empty frame", 0)]
    assert_only_problem(error, "<frame>: empty frame (0 rows)")


def test_every_problem_is_listed_in_one_error(frame: pd.DataFrame) -> None:
    corrupted = drop_column(frame, "emp_length")
    corrupted = cast_column(corrupted, "delinq_2yrs", np.float64)
    corrupted = set_values(corrupted, "int_rate", 99.0, 3)
    corrupted = set_values(corrupted, "addr_state", "ZZ", 20)
    corrupted = keep_positives(corrupted, LENDING_CLUB, 5)
    error = rejection(corrupted)
    found = {(p.column, p.rule, p.rows) for p in error.problems}
    assert found == {
        ("emp_length", "missing column", ROWS),
        ("delinq_2yrs", "wrong dtype", ROWS),
        ("int_rate", "out of range", 3),
        ("addr_state", "unexpected category", 20),
        ("Class", "too few positives", 5),
    }
    assert error.dataset == "lending_club"
    assert len(str(error).splitlines()) == 1 + len(found)


def test_pandera_schema_covers_every_feature_and_the_target() -> None:
    columns = pandera_schema(LENDING_CLUB).columns
    assert set(columns) == {*LENDING_CLUB.feature_names, "Class"}


# --- row counts with a non-unique index -------------------------------------------------------


def test_row_counts_do_not_depend_on_index_labels(frame: pd.DataFrame) -> None:
    batch = set_values(frame, "int_rate", 55.0, 3)
    twice = pd.concat([batch, batch])  # index labels 0..1999 twice
    assert_only_problem(rejection(twice), "int_rate: out of range (6 rows)")


def test_tolerance_is_judged_on_rows_not_index_labels(frame: pd.DataFrame, tmp_path: Path) -> None:
    batch = set_values(frame, "addr_state", "ZZ", 3)
    path = tmp_path / "three_batches.parquet"
    pd.concat([batch, batch, batch]).to_parquet(path)  # 9 of 6,000 rows: 0.15 % > 0.1 %
    loaded = load_file("lending_club", path)
    assert_only_problem(rejection(loaded.frame), "addr_state: unexpected category (9 rows)")
