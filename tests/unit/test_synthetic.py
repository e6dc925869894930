"""The synthetic generator: determinism, chunking, drift knobs, Parquet output, and the test
corruptors (`tests/corruptors.py`) built on it.

Drifted frames are paired counterfactuals of the undrifted frame with the same seed (each variable
has its own random stream), so most effects are checked row for row rather than in distribution.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loanops.data import get_dataset, load_dataset
from loanops.data import synthetic as syn
from loanops.data.synthetic_drift import EMP_NULL_RATE, PRESETS, Drift
from loanops.data.synthetic_schema import COLUMNS
from loanops.data.synthetic_truth import INTERCEPT
from tests import corruptors
from tests.factories import drop_column

ROWS = 100_000
SEED = 11
HALF = ROWS // 2


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    return syn.generate(ROWS, seed=SEED)


def drifted(drift: Drift) -> pd.DataFrame:
    return syn.generate(ROWS, seed=SEED, drift=drift)


def features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[syn.SCHEMA.feature_names]


def month_number(months: pd.Series) -> pd.Series:
    return months.str[:4].astype(int) * 12 + months.str[5:].astype(int)


# --- determinism and layout -------------------------------------------------------------------


def test_same_seed_and_chunk_rows_give_the_same_frame() -> None:
    first = syn.generate(30_000, seed=3, chunk_rows=7_000)
    again = syn.generate(30_000, seed=3, chunk_rows=7_000)
    pd.testing.assert_frame_equal(first, again)


def test_seed_and_chunk_rows_change_the_draw() -> None:
    reference = syn.generate(30_000, seed=3, chunk_rows=7_000)
    other_seed = syn.generate(30_000, seed=4, chunk_rows=7_000)
    other_chunks = syn.generate(30_000, seed=3, chunk_rows=10_000)
    assert not reference["annual_inc"].equals(other_seed["annual_inc"])
    assert not reference["annual_inc"].equals(other_chunks["annual_inc"])
    # A chunk boundary only changes the draw after it.
    pd.testing.assert_frame_equal(reference.iloc[:7_000], other_chunks.iloc[:7_000])


def test_rows_are_sorted_by_issue_date_with_ids_in_order() -> None:
    frame = syn.generate(36_000, seed=5, chunk_rows=5_000)
    assert frame["id"].tolist() == list(range(36_000))
    assert frame["issue_d"].is_monotonic_increasing
    counts = frame["issue_d"].value_counts()
    assert len(counts) == 36
    assert counts.index.min() == "2016-01" and counts.index.max() == "2018-12"
    assert counts.between(900, 1_100).all()


def test_label_becomes_available_twelve_months_after_issue() -> None:
    frame = syn.generate(5_000, seed=5, months=14, start_month="2019-11")
    delay = month_number(frame["label_available_d"]) - month_number(frame["issue_d"])
    assert (delay == syn.LABEL_DELAY_MONTHS).all()
    assert frame["issue_d"].iloc[0] == "2019-11" and frame["issue_d"].iloc[-1] == "2020-12"


def test_zero_rows_give_an_empty_frame_with_every_column() -> None:
    frame = syn.generate(0)
    assert frame.empty
    assert tuple(frame.columns) == COLUMNS


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": -1}, "rows"),
        ({"rows": 10, "chunk_rows": 0}, "chunk_rows"),
        ({"rows": 10, "months": 0}, "months"),
        ({"rows": 10, "start_month": "2016-13"}, "start_month"),
        ({"rows": 10, "start_month": "Jan 2016"}, "start_month"),
    ],
)
def test_generate_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        syn.generate(**kwargs)  # type: ignore[arg-type]


def test_grade_cutoffs_are_fixed_and_ordered() -> None:
    cutoffs = syn._sub_grade_cutoffs()
    assert cutoffs is syn._sub_grade_cutoffs()
    assert len(cutoffs) == len(syn.SUB_GRADES) - 1
    assert np.all(np.diff(cutoffs) > 0)


def test_hard_coded_intercept_gives_the_base_rate() -> None:
    solved = syn._solve_intercept(syn.BASE_DEFAULT_RATE, rows=200_000, seed=1)
    assert solved == pytest.approx(INTERCEPT, abs=0.03)


def test_pd_true_is_the_probability_given_the_observed_features(base: pd.DataFrame) -> None:
    np.testing.assert_allclose(syn.baseline_pd(base), base["pd_true"], rtol=1e-12)


# --- the Drift knobs --------------------------------------------------------------------------


def test_default_drift_is_no_drift(base: pd.DataFrame) -> None:
    assert not Drift().is_active
    pd.testing.assert_frame_equal(drifted(Drift()), base)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"emp_null_drift": 1.2}, "emp_null_drift"),
        ({"emp_null_drift": -0.1}, "emp_null_drift"),
        ({"start": 1.5}, "start"),
        ({"start": -0.1}, "start"),
        ({"ramp": "exponential"}, "ramp"),
        ({"income_mult": 0.0}, "income_mult"),
        ({"dti_coef_mult": -1.0}, "dti_coef_mult"),
        ({"small_biz_mult": -2.0}, "small_biz_mult"),
        ({"z_shift": float("nan")}, "z_shift"),
        ({"macro_logit": "high"}, "macro_logit"),
    ],
)
def test_drift_rejects_bad_knobs(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Drift(**kwargs)  # type: ignore[arg-type]


def test_every_preset_drifts_and_passes_its_ramp_through() -> None:
    # What each preset moves is tested by its effect on generated data, below.
    assert all(Drift.preset(name).is_active for name in PRESETS)
    for name in PRESETS:
        ramped = Drift.preset(name, ramp="linear", start=0.2)
        assert (ramped.ramp, ramped.start) == ("linear", 0.2)
    with pytest.raises(ValueError, match="unknown drift preset"):
        Drift.preset("recession")


def test_ramp_weights() -> None:
    t = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(Drift(start=0.4).weight(t), [0, 0, 1, 1, 1, 1])
    np.testing.assert_allclose(
        Drift(ramp="linear", start=0.6).weight(t), [0, 0, 0, 0, 0.5, 1.0], atol=1e-12
    )
    np.testing.assert_allclose(Drift(ramp="linear", start=1.0).weight(t), np.zeros(6))


@pytest.mark.parametrize("name", PRESETS)
def test_drift_leaves_rows_before_its_start_untouched(name: str, base: pd.DataFrame) -> None:
    frame = drifted(Drift.preset(name, start=0.5))
    pd.testing.assert_frame_equal(frame.iloc[:HALF], base.iloc[:HALF])
    assert not frame.iloc[HALF:].equals(base.iloc[HALF:])


def test_covariate_shift_moves_features_and_risk_but_not_p_y_given_x(base: pd.DataFrame) -> None:
    after = drifted(Drift.covariate_shift()).iloc[HALF:]
    before = base.iloc[HALF:]
    fico_drop = before["fico_range_low"].mean() - after["fico_range_low"].mean()
    assert 10 < fico_drop < 18  # design target: 703 -> 689
    assert after["dti"].mean() > before["dti"].mean()
    assert after["annual_inc"].median() < before["annual_inc"].median()
    assert 0.095 < after["default"].mean() < 0.115  # design target: 8.1 -> 10.4 %
    # P(y | X) is unchanged: the pre-drift ground truth is still right, and calibrated.
    np.testing.assert_allclose(syn.baseline_pd(after), after["pd_true"], rtol=1e-12)
    assert abs(after["pd_true"].mean() - after["default"].mean()) < 0.004
    riskier = after["grade"].isin(list("CDEFG")).mean() - before["grade"].isin(list("CDEFG")).mean()
    assert riskier > 0.1


def test_score_inflation_raises_reported_fico_but_not_risk(base: pd.DataFrame) -> None:
    after = drifted(Drift.score_inflation()).iloc[HALF:]
    before = base.iloc[HALF:]
    assert 25 < after["fico_range_low"].mean() - before["fico_range_low"].mean() <= 30
    np.testing.assert_array_equal(after["pd_true"], before["pd_true"])
    np.testing.assert_array_equal(after["default"], before["default"])
    # A model fitted before the drift under-predicts once labels arrive (design target: +0.027).
    gap = after["default"].mean() - syn.baseline_pd(after).mean()
    assert 0.02 < gap < 0.04
    assert after["grade"].isin(["A", "B"]).mean() > before["grade"].isin(["A", "B"]).mean() + 0.1


def test_macro_shock_raises_defaults_with_features_unchanged(base: pd.DataFrame) -> None:
    after = drifted(Drift.macro_shock()).iloc[HALF:]
    before = base.iloc[HALF:]
    pd.testing.assert_frame_equal(features(after), features(before))
    assert 0.145 < after["default"].mean() < 0.167  # design target: 8.1 -> 15.6 %
    gap = after["default"].mean() - syn.baseline_pd(after).mean()
    assert 0.06 < gap < 0.09  # design target: +0.074


def test_coefficient_change_raises_defaults_with_features_unchanged(base: pd.DataFrame) -> None:
    after = drifted(Drift.coefficient_change()).iloc[HALF:]
    before = base.iloc[HALF:]
    pd.testing.assert_frame_equal(features(after), features(before))
    assert 0.094 < after["default"].mean() < 0.113  # design target: 8.1 -> 10.4 %
    gap = after["default"].mean() - syn.baseline_pd(after).mean()
    assert 0.012 < gap < 0.032  # design target: +0.022
    # The loans with high dti carry the extra risk.
    high_dti = after["dti"] > 30
    assert (after["pd_true"] - before["pd_true"])[high_dti].mean() > 0.05


def test_missingness_spike_only_blanks_emp_length(base: pd.DataFrame) -> None:
    frame = drifted(Drift.missingness_spike())
    before, after = frame.iloc[:HALF], frame.iloc[HALF:]
    assert before["emp_length"].isna().mean() == pytest.approx(EMP_NULL_RATE, abs=0.005)
    assert after["emp_length"].isna().mean() == pytest.approx(0.40, abs=0.01)
    others = [c for c in COLUMNS if c != "emp_length"]
    pd.testing.assert_frame_equal(after[others], base.iloc[HALF:][others])
    stated = after["emp_length"].dropna().value_counts(normalize=True)
    assert stated["10+ years"] == pytest.approx(0.3502 / 0.9346, abs=0.01)


def test_other_knobs_drift_one_thing(base: pd.DataFrame) -> None:
    before = base.iloc[HALF:]
    richer = drifted(Drift(income_mult=1.2)).iloc[HALF:]
    np.testing.assert_allclose(richer["annual_inc"], before["annual_inc"] * 1.2)
    np.testing.assert_array_equal(richer["pd_true"], before["pd_true"])

    indebted = drifted(Drift(dti_shift=5.0)).iloc[HALF:]
    assert indebted["dti"].mean() - before["dti"].mean() == pytest.approx(5.0, abs=0.3)
    assert indebted["pd_true"].mean() > before["pd_true"].mean()

    business = drifted(Drift(small_biz_mult=3.0)).iloc[HALF:]
    share = (business["purpose"] == "small_business").mean()
    assert share == pytest.approx(3 * 0.015 / (1 + 2 * 0.015), abs=0.004)


def test_step_and_linear_ramps(base: pd.DataFrame) -> None:
    step = drifted(Drift.macro_shock(ramp="step", start=0.25))
    linear = drifted(Drift.macro_shock(ramp="linear", start=0.25))
    octant = np.arange(ROWS) * 8 // ROWS
    step_pd = step["pd_true"].groupby(octant).mean()
    linear_pd = linear["pd_true"].groupby(octant).mean()
    base_pd = base["pd_true"].groupby(octant).mean()
    np.testing.assert_allclose(step_pd[:2], base_pd[:2])
    np.testing.assert_allclose(linear_pd[:2], base_pd[:2])
    # Step: the full shock from t0 on; linear: rising to the full shock at the end.
    assert (step_pd[2:] > base_pd[2:] + 0.06).all()
    assert linear_pd[2:].is_monotonic_increasing
    assert linear_pd[2] < base_pd[2] + 0.02
    assert linear_pd[7] == pytest.approx(step_pd[7], abs=0.01)


# --- Parquet ----------------------------------------------------------------------------------


def test_write_parquet_round_trips_partitioned_by_issue_month(tmp_path: Path) -> None:
    drift = Drift.macro_shock()
    root = syn.write_parquet(tmp_path / "book", 30_000, seed=2, drift=drift, chunk_rows=8_000)
    partitions = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert len(partitions) == 36 and partitions[0] == "issue_d=2016-01"
    manifest = json.loads((root / "_generator.json").read_text())
    assert manifest["generator_version"] == syn.GENERATOR_VERSION
    assert manifest["drift"]["macro_logit"] == 0.8

    read = pd.read_parquet(root).sort_values("id").reset_index(drop=True)
    read["issue_d"] = read["issue_d"].astype(str)
    expected = syn.generate(30_000, seed=2, drift=drift, chunk_rows=8_000)
    pd.testing.assert_frame_equal(read[list(COLUMNS)], expected)


def test_write_parquet_checks_arguments_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="start_month"):
        syn.write_parquet(tmp_path / "book", 10, start_month="2016-13")
    assert not (tmp_path / "book").exists()


def test_write_parquet_refuses_a_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(FileExistsError):
        syn.write_parquet(tmp_path, 10, seed=0)


# --- corruptors -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return syn.generate(2_000, seed=9)


def test_income_as_monthly(small: pd.DataFrame) -> None:
    original = small.copy()
    corrupted = corruptors.income_as_monthly(small, share=0.1, seed=1)
    pd.testing.assert_frame_equal(small, original)
    changed = corrupted["annual_inc"] != small["annual_inc"]
    assert changed.sum() == 200
    np.testing.assert_allclose(
        corrupted.loc[changed, "annual_inc"], small.loc[changed, "annual_inc"] / 12, atol=0.01
    )
    with pytest.raises(ValueError, match="share"):
        corruptors.income_as_monthly(small, share=1.5, seed=1)


def test_revol_util_as_fraction(small: pd.DataFrame) -> None:
    corrupted = corruptors.revol_util_as_fraction(small)
    np.testing.assert_allclose(corrupted["revol_util"] * 100, small["revol_util"])
    assert corrupted["revol_util"].max() <= 1.5


def test_int_rate_as_string(small: pd.DataFrame) -> None:
    corrupted = corruptors.int_rate_as_string(small)
    assert corrupted["int_rate"].dtype == object
    assert corrupted["int_rate"].str.endswith("%").all()
    np.testing.assert_allclose(
        corrupted["int_rate"].str.rstrip("%").astype(float), small["int_rate"]
    )
    with pytest.raises(ValueError):
        syn.SCHEMA.to_frame(corrupted)


def test_unseen_category(small: pd.DataFrame) -> None:
    corrupted = corruptors.unseen_category(small, "purpose", "crypto", share=0.05, seed=2)
    assert (corrupted["purpose"] == "crypto").sum() == 100
    unchanged = corrupted["purpose"] != "crypto"
    pd.testing.assert_series_equal(corrupted["purpose"][unchanged], small["purpose"][unchanged])
    state = corruptors.unseen_category(small, "addr_state", "PR", share=0.01, seed=2)
    assert (state["addr_state"] == "PR").sum() == 20
    with pytest.raises(ValueError, match="already"):
        corruptors.unseen_category(small, "purpose", "car", share=0.05, seed=2)
    with pytest.raises(ValueError, match="not a categorical"):
        corruptors.unseen_category(small, "dti", "high", share=0.05, seed=2)
    with pytest.raises(KeyError):
        corruptors.unseen_category(small, "colour", "red", share=0.05, seed=2)


def test_drop_column(small: pd.DataFrame) -> None:
    corrupted = drop_column(small, "dti")
    assert "dti" not in corrupted.columns and "dti" in small.columns
    with pytest.raises(KeyError, match="dti"):
        syn.SCHEMA.to_frame(corrupted)
    with pytest.raises(KeyError):
        drop_column(small, "colour")


# --- catalog ----------------------------------------------------------------------------------


def test_registered_as_a_generated_dataset() -> None:
    dataset = get_dataset("synthetic")
    assert dataset is syn.DATASET
    assert dataset.generated
    assert dataset.provenance["generator_version"] == syn.GENERATOR_VERSION
    loaded = load_dataset("synthetic", rows=1_000, seed=4)
    pd.testing.assert_frame_equal(loaded.frame, syn.generate(1_000, seed=4))
