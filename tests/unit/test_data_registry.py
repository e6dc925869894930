"""The dataset catalog: lookup by name, seeded subsampling, content hashes and file loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loanops.data import (
    Dataset,
    UnknownDatasetError,
    catalog,
    frame_sha256,
    get_dataset,
    load_dataset,
    load_file,
)
from loanops.data import synthetic as syn
from loanops.validation import validate_training_frame
from tests.factories import LENDING_CLUB, lending_club_frame, lending_club_sample

# --- catalog ----------------------------------------------------------------------------------


def test_catalog_finds_both_datasets_under_their_own_names() -> None:
    datasets = catalog()
    assert {"lending_club", "synthetic"} <= set(datasets)
    for name, dataset in datasets.items():
        assert isinstance(dataset, Dataset)
        assert dataset.name == name == dataset.schema.name
    assert not datasets["lending_club"].generated
    assert datasets["synthetic"].generated


def test_get_dataset_returns_the_registered_dataset() -> None:
    assert get_dataset("lending_club") is catalog()["lending_club"]
    assert get_dataset("lending_club").schema is LENDING_CLUB


def test_unknown_dataset_error_lists_the_known_names() -> None:
    with pytest.raises(UnknownDatasetError) as raised:
        get_dataset("lendingclub")
    message = str(raised.value)
    assert message == (
        f"unknown dataset 'lendingclub'; choose one of: {', '.join(sorted(catalog()))}"
    )
    assert "lending_club" in message and "synthetic" in message
    assert isinstance(raised.value, KeyError)


def test_unknown_dataset_is_reported_before_the_file_is_read(tmp_path: Path) -> None:
    with pytest.raises(UnknownDatasetError, match="choose one of"):
        load_file("nope", tmp_path / "missing.csv")


# --- load_dataset -----------------------------------------------------------------------------


def test_load_dataset_without_rows_gives_the_whole_fixed_dataset() -> None:
    loaded = load_dataset("lending_club")
    assert len(loaded.frame) == 9_857
    assert loaded.name == "lending_club" and loaded.schema is LENDING_CLUB
    assert loaded.source == "R package modeldata, dataset lending_club"
    assert loaded.sha256 == frame_sha256(loaded.frame)


def test_subsampling_is_deterministic_for_a_seed() -> None:
    first = load_dataset("lending_club", rows=500, seed=3)
    again = load_dataset("lending_club", rows=500, seed=3)
    pd.testing.assert_frame_equal(first.frame, again.frame)
    assert first.sha256 == again.sha256


def test_subsampling_changes_with_the_seed() -> None:
    first = load_dataset("lending_club", rows=500, seed=3)
    other = load_dataset("lending_club", rows=500, seed=4)
    assert first.sha256 != other.sha256
    assert not first.frame.equals(other.frame)


def test_subsample_is_distinct_rows_of_the_full_frame_in_their_original_order() -> None:
    full = lending_club_frame()
    sample = load_dataset("lending_club", rows=500, seed=3).frame
    assert len(sample) == 500
    assert isinstance(sample.index, pd.RangeIndex) and sample.index.start == 0
    full_hashes = pd.util.hash_pandas_object(full, index=False)
    sample_hashes = pd.util.hash_pandas_object(sample, index=False)
    assert sample_hashes.is_unique
    positions = pd.Index(full_hashes).get_indexer(sample_hashes)
    assert (positions >= 0).all()
    assert np.all(np.diff(positions) > 0)


@pytest.mark.parametrize("rows", [9_857, 20_000])
def test_asking_for_at_least_every_row_gives_the_whole_dataset(rows: int) -> None:
    assert load_dataset("lending_club", rows=rows).sha256 == load_dataset("lending_club").sha256


# --- frame_sha256 -----------------------------------------------------------------------------


def test_frame_sha256_is_stable_across_copies_and_index_labels() -> None:
    frame = lending_club_sample(300, seed=1)
    digest = frame_sha256(frame)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert frame_sha256(frame.copy()) == digest
    assert frame_sha256(frame.set_axis(frame.index + 1000)) == digest


@pytest.mark.parametrize(
    ("column", "value"),
    [("int_rate", 0.01), ("funded_amnt", 25), ("sub_grade", "A1"), ("Class", "bad")],
)
def test_frame_sha256_changes_when_one_value_changes(column: str, value: object) -> None:
    frame = lending_club_sample(300, seed=1)
    changed = frame.copy()
    row = int(np.flatnonzero(changed[column].to_numpy() != value)[0])
    changed.loc[row, column] = value
    assert frame_sha256(changed) != frame_sha256(frame)


def test_frame_sha256_sees_column_order_names_and_dtypes() -> None:
    frame = lending_club_sample(300, seed=1)
    digest = frame_sha256(frame)
    assert frame_sha256(frame[frame.columns[::-1]]) != digest
    assert frame_sha256(frame.rename(columns={"Class": "class"})) != digest
    assert frame_sha256(frame.astype({"funded_amnt": np.float64})) != digest


def test_frame_sha256_sees_row_order() -> None:
    frame = lending_club_sample(300, seed=1)
    assert frame_sha256(frame.iloc[::-1]) != frame_sha256(frame)


# --- load_file --------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", ["loans.csv", "loans.csv.gz", "loans.parquet", "loans.pq"])
def test_load_file_round_trips_lending_club(tmp_path: Path, filename: str) -> None:
    frame = lending_club_sample(400, seed=2)
    path = tmp_path / filename
    if ".csv" in filename:
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    loaded = load_file("lending_club", path)
    pd.testing.assert_frame_equal(loaded.frame, frame)
    assert loaded.sha256 == frame_sha256(frame)
    assert loaded.source == str(path.resolve())
    assert loaded.dataset is get_dataset("lending_club")


def test_load_file_picks_the_reader_by_suffix_case_insensitively(tmp_path: Path) -> None:
    frame = lending_club_sample(50, seed=2)
    path = tmp_path / "LOANS.CSV"
    frame.to_csv(path, index=False)
    pd.testing.assert_frame_equal(load_file("lending_club", path).frame, frame)


@pytest.mark.parametrize("filename", ["loans.json", "loans.xlsx", "loans"])
def test_load_file_refuses_an_unsupported_suffix(tmp_path: Path, filename: str) -> None:
    path = tmp_path / filename
    path.write_text("{}")
    with pytest.raises(ValueError, match=f"unsupported file type '{filename}'"):
        load_file("lending_club", path)


def test_load_file_reports_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.parquet"
    with pytest.raises(FileNotFoundError, match="absent.parquet"):
        load_file("lending_club", path)


def test_synthetic_csv_file_loads_with_schema_dtypes_and_passes_validation(
    tmp_path: Path,
) -> None:
    frame = syn.generate(2_000, seed=5)
    path = tmp_path / "synthetic.csv"
    frame.to_csv(path, index=False)
    loaded = load_file("synthetic", path)
    assert loaded.frame[syn.SCHEMA.feature_names].dtypes.astype(str).to_dict() == (
        syn.SCHEMA.pandas_dtypes()
    )
    validate_training_frame(
        loaded.frame, loaded.schema, min_positives=50, unknown_category_tolerance=0.001
    )
