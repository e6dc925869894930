"""The drift monitor on synthetic windows with known drift: what it must flag, and what not.

The "model" is the generator's no-drift ground truth (`baseline_pd`), i.e. the ideal model
trained before any drift; so a covariate shift moves its scores and a macro shock does not.
Windows are shaped like `read_decisions` output. Each scenario runs Evidently once (about 4 s),
shared by the tests that read it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loanops.data import synthetic as syn
from loanops.data.synthetic_drift import Drift
from loanops.monitoring.evidently_mapping import data_definition
from loanops.monitoring.quality import check_data_quality
from loanops.monitoring.reference import (
    LABEL_COLUMN,
    PREDICTION_COLUMN,
    Reference,
    build_reference,
    load_reference,
    reference_statistics,
    save_reference,
)
from loanops.monitoring.reports import write_reports
from loanops.monitoring.results import MonitorSummary
from loanops.monitoring.run import run_monitor
from loanops.monitoring.statistics import population_stability_index
from loanops.monitoring.thresholds import MonitorThresholds

SCHEMA = syn.SCHEMA
REFERENCE_ROWS = 10_000
WINDOW_ROWS = 6_000  # above MonitorThresholds.min_rows_for_distance: the distance tests apply
WINDOW_START = datetime(2026, 11, 19, tzinfo=UTC)
# Features a riskier applicant pool (z_shift=-0.5) moves clearly (normed Wasserstein or JS
# well above 0.1), and features it leaves alone.
SHIFTED = {"fico_range_low", "int_rate", "grade", "sub_grade", "revol_util"}
UNMOVED = {
    "addr_state",
    "purpose",
    "verification_status",
    "emp_length",
    "home_ownership",
    "pub_rec",
    "open_acc",
    "total_acc",
    "installment",
    "loan_amnt",
}


def decisions_window(frame: pd.DataFrame, *, model_version: str = "3") -> pd.DataFrame:
    """A generated frame as `read_decisions` returns it: metadata, then the inputs."""
    rows = len(frame)
    probability = syn.baseline_pd(frame)
    meta = pd.DataFrame(
        {
            "request_id": [f"req-{i}" for i in range(rows)],
            "decided_at": pd.date_range(WINDOW_START, periods=rows, freq="min", tz=UTC),
            "model_name": "loan-default",
            "model_version": model_version,
            "threshold": 0.2,
            PREDICTION_COLUMN: probability,
            "decision": np.where(probability >= 0.2, "decline", "approve"),
            "reasons": [[] for _ in range(rows)],
            "source": "api",
            "job_id": None,
        }
    )
    inputs = frame[SCHEMA.feature_names].reset_index(drop=True)
    return pd.concat([meta, inputs], axis=1)


def window(drift: str | None, rows: int = WINDOW_ROWS, seed: int = 2) -> pd.DataFrame:
    """Generated loans, drifted from the first row on when `drift` names a preset."""
    return syn.generate(rows, seed=seed, drift=Drift.preset(drift, start=0.0) if drift else None)


@pytest.fixture(scope="module")
def reference() -> Reference:
    frame = syn.generate(REFERENCE_ROWS, seed=1)
    return build_reference(frame, syn.baseline_pd(frame), frame["default"], SCHEMA, seed=0)


@pytest.fixture(scope="module")
def monitored(reference: Reference) -> Callable[[str | None], tuple[MonitorSummary, object]]:
    """run_monitor on each scenario's window, once per module."""
    runs: dict[str | None, tuple[MonitorSummary, object]] = {}

    def run(drift: str | None) -> tuple[MonitorSummary, object]:
        if drift not in runs:
            runs[drift] = run_monitor(decisions_window(window(drift)), reference, SCHEMA, seed=0)
        return runs[drift]

    return run


# --- the column mapping ----------------------------------------------------------------------


def test_data_definition_follows_the_schema(reference: Reference) -> None:
    from evidently import Dataset

    definition = data_definition(SCHEMA)
    assert definition.numerical_columns == [*SCHEMA.numeric_features, PREDICTION_COLUMN]
    assert definition.categorical_columns == SCHEMA.categorical_features
    assert definition.classification is None

    labelled = data_definition(SCHEMA, target=LABEL_COLUMN)
    assert labelled.categorical_columns == [*SCHEMA.categorical_features, LABEL_COLUMN]
    assert labelled.classification is not None
    assert labelled.classification[0].prediction_probas == PREDICTION_COLUMN
    dataset = Dataset.from_pandas(reference.frame.head(200), data_definition=labelled)
    assert dataset.column(LABEL_COLUMN) is not None

    some = data_definition(SCHEMA, prediction=False, columns=["dti", "term"])
    assert (some.numerical_columns, some.categorical_columns) == (["dti"], ["term"])


# --- the scenarios ---------------------------------------------------------------------------


def test_no_drift_flags_nothing(monitored: Callable[..., tuple[MonitorSummary, object]]) -> None:
    summary, _ = monitored(None)

    assert summary.drift.family == "distance"
    assert summary.drift.share_drifted <= 0.1
    assert not summary.drift.dataset_drift
    assert summary.prediction is not None
    assert summary.prediction.psi < 0.02
    assert not summary.prediction.drifted
    assert not summary.quality.flagged
    assert not summary.drifted
    # What the run was about comes from the window itself.
    assert (summary.model_name, summary.model_version) == ("loan-default", "3")
    assert summary.window_start == WINDOW_START
    assert summary.rows == summary.sample_rows == WINDOW_ROWS
    assert summary.reference_rows == REFERENCE_ROWS


def test_covariate_shift_drifts_the_shifted_features(
    monitored: Callable[..., tuple[MonitorSummary, object]],
) -> None:
    summary, snapshot = monitored("covariate_shift")
    drifted = set(summary.drift.drifted_features)

    assert drifted >= SHIFTED
    assert not drifted & UNMOVED
    assert summary.drift.dataset_drift
    for name in SHIFTED:
        result = summary.drift.feature(name)
        assert result.score >= result.threshold == 0.1
    # The riskier pool moves the ideal model's scores too.
    assert summary.prediction is not None
    assert summary.prediction.drifted
    assert summary.prediction.current_mean > summary.prediction.reference_mean + 0.015
    assert summary.drifted
    # The share agrees with Evidently's own DriftedColumnsCount in the same report.
    counts = [
        metric["value"]
        for metric in snapshot.dict()["metrics"]  # type: ignore[attr-defined]
        if metric["metric_name"].startswith("DriftedColumnsCount")
    ]
    assert counts == [{"count": len(drifted), "share": pytest.approx(summary.drift.share_drifted)}]


def test_macro_shock_shows_no_feature_drift(
    monitored: Callable[..., tuple[MonitorSummary, object]], reference: Reference
) -> None:
    # The recession is real: defaults rise well above the reference's rate...
    shocked = window("macro_shock")
    assert reference.statistics.default_rate is not None
    assert shocked["default"].mean() > reference.statistics.default_rate + 0.04

    # ...but neither the applicants nor the scores move: only delayed labels can catch it.
    summary, _ = monitored("macro_shock")
    assert summary.drift.drifted_features == ()
    assert not summary.drift.dataset_drift
    assert summary.prediction is not None
    assert not summary.prediction.drifted
    assert not summary.drifted


def test_missingness_spike_is_flagged_in_data_quality(
    monitored: Callable[..., tuple[MonitorSummary, object]],
) -> None:
    summary, _ = monitored("missingness_spike")
    emp_length = summary.quality.feature("emp_length")

    assert summary.quality.missingness_spikes == ("emp_length",)
    assert summary.quality.flagged
    assert emp_length.null_rate == pytest.approx(0.40, abs=0.02)
    assert emp_length.reference_null_rate == pytest.approx(0.08, abs=0.01)
    assert emp_length.null_rate_change > 0.25
    # The stated lengths keep their mix: drift tests compare non-null values only.
    assert not summary.drift.feature("emp_length").drifted
    assert not summary.drift.dataset_drift
    assert summary.metrics()["null_rate.emp_length"] == emp_length.null_rate


def test_small_windows_use_p_value_tests(reference: Reference) -> None:
    small = decisions_window(window(None, rows=300, seed=3))

    summary, _ = run_monitor(small, reference, SCHEMA)
    assert summary.drift.family == "p_value"
    assert {r.method for r in summary.drift.features} == {"ks", "chisquare"}
    assert summary.drift.share_drifted <= 0.15
    assert not summary.drift.dataset_drift

    # Distances on 300 rows are biased upward: 51 states look drifted when nothing moved.
    forced, _ = run_monitor(
        small, reference, SCHEMA, thresholds=MonitorThresholds(min_rows_for_distance=1)
    )
    assert forced.drift.family == "distance"
    assert "addr_state" in forced.drift.drifted_features


# --- data quality on every row ---------------------------------------------------------------


def test_out_of_range_invalid_values_and_new_categories_are_counted(
    reference: Reference,
) -> None:
    frame = decisions_window(window(None, rows=2_000, seed=4))
    frame.loc[:6, "annual_inc"] = -1.0  # 7 rows below the schema's minimum of 0
    frame.loc[7:9, "fico_range_low"] = 900  # 3 rows above its maximum of 845
    frame["int_rate"] = frame["int_rate"].astype(object)
    frame.loc[10:14, "int_rate"] = "13.5%"  # 5 values of the wrong type
    frame.loc[20:49, "purpose"] = "crypto"  # 30 values unknown to the schema

    quality = check_data_quality(frame, reference, SCHEMA)

    assert quality.rows == 2_000
    assert quality.feature("annual_inc").out_of_range == 7
    assert quality.feature("fico_range_low").out_of_range == 3
    assert quality.feature("int_rate").invalid == 5
    assert quality.feature("int_rate").null_rate == 0.0  # a wrong type is not a null
    assert quality.feature("purpose").unknown_categories == {"crypto": 30}
    assert quality.out_of_range == ("annual_inc", "fico_range_low")
    assert quality.invalid_values == ("int_rate",)
    assert quality.new_categories == ("purpose",)
    assert quality.missingness_spikes == ()
    assert quality.flagged


def test_a_category_the_reference_never_saw_is_reported(reference: Reference) -> None:
    source = syn.generate(5_000, seed=1)
    source.loc[source["addr_state"] == "NY", "addr_state"] = "CA"
    no_new_york = build_reference(source, syn.baseline_pd(source), None, SCHEMA)
    current = decisions_window(window(None, rows=2_000, seed=5))

    quality = check_data_quality(current, no_new_york, SCHEMA)

    unseen = quality.feature("addr_state").unseen_categories
    assert unseen == {"NY": int((current["addr_state"] == "NY").sum())}
    assert unseen["NY"] / 2_000 > 0.05  # New York is 7.8 % of loans
    assert quality.new_categories == ("addr_state",)
    assert quality.feature("addr_state").unknown_categories == {}


def test_a_messy_window_is_monitored_not_refused(reference: Reference) -> None:
    # A file of applications with no scores, a column dropped, one column all null.
    frame = window(None, rows=1_500, seed=6).drop(columns=["installment", "pd_true"])
    frame["emp_length"] = None
    frame.loc[:99, "purpose"] = "crypto"

    summary, _ = run_monitor(frame, reference, SCHEMA)

    assert summary.prediction is None
    assert set(summary.drift.untested) == {"installment", "emp_length"}
    assert len(summary.drift.features) == len(SCHEMA.features) - 2
    assert summary.quality.missing_columns == ("installment",)
    assert summary.quality.missingness_spikes == ("installment", "emp_length")
    assert summary.quality.feature("purpose").unknown_categories == {"crypto": 100}
    assert (summary.model_version, summary.window_start) == (None, None)


def test_an_empty_window_or_another_schema_is_refused(reference: Reference) -> None:
    with pytest.raises(ValueError, match="no rows"):
        run_monitor(decisions_window(window(None)).head(0), reference, SCHEMA)
    from tests.factories import LENDING_CLUB

    with pytest.raises(ValueError, match="does not match"):
        check_data_quality(decisions_window(window(None, rows=10)), reference, LENDING_CLUB)


# --- the reference ---------------------------------------------------------------------------


def test_reference_statistics_are_cached_and_round_trip(
    reference: Reference, tmp_path: Path
) -> None:
    folder = save_reference(reference, tmp_path / "reference")
    loaded = load_reference(folder)

    assert sorted(p.name for p in folder.iterdir()) == [
        "reference.parquet",
        "schema.json",
        "statistics.json",
    ]
    assert loaded.statistics == reference.statistics
    assert loaded.schema == reference.schema
    pd.testing.assert_frame_equal(loaded.frame, reference.frame)
    # The cache holds exactly what recomputing would give.
    recomputed = reference_statistics(loaded.frame, loaded.schema, source_rows=REFERENCE_ROWS)
    assert recomputed == loaded.statistics
    assert json.loads((folder / "statistics.json").read_text())["rows"] == REFERENCE_ROWS


def test_stale_statistics_are_refused(reference: Reference, tmp_path: Path) -> None:
    folder = save_reference(reference, tmp_path / "reference")
    reference.frame.head(100).to_parquet(folder / "reference.parquet", index=False)

    with pytest.raises(ValueError, match="do not describe this reference sample"):
        load_reference(folder)
    assert load_reference(folder, verify=False).rows == 100


def test_reference_statistics_describe_the_sample(reference: Reference) -> None:
    stats = reference.statistics

    assert stats.features["fico_range_low"].drift_method == "wasserstein"
    assert stats.features["pub_rec"].drift_method == "jensenshannon"  # at most 5 values
    assert stats.features["addr_state"].drift_method == "jensenshannon"
    assert math.isclose(sum((stats.features["grade"].category_shares or {}).values()), 1.0)
    assert len(stats.prediction.bin_edges) == 9
    assert math.isclose(sum(stats.prediction.bin_shares), 1.0)
    assert stats.labelled_rows == REFERENCE_ROWS
    assert stats.default_rate == pytest.approx(0.082, abs=0.01)


def test_build_reference_samples_and_checks_its_inputs() -> None:
    frame = syn.generate(3_000, seed=7)
    scores = syn.baseline_pd(frame)

    sampled = build_reference(frame, scores, None, SCHEMA, max_rows=1_000, seed=1)
    assert sampled.rows == sampled.statistics.rows == 1_000
    assert sampled.statistics.source_rows == 3_000
    assert list(sampled.frame.columns) == [*SCHEMA.feature_names, PREDICTION_COLUMN, LABEL_COLUMN]
    assert sampled.labels.isna().all()
    assert sampled.statistics.labelled_rows == 0
    again = build_reference(frame, scores, None, SCHEMA, max_rows=1_000, seed=1)
    pd.testing.assert_frame_equal(sampled.frame, again.frame)

    with pytest.raises(ValueError, match="probabilities"):
        build_reference(frame, scores * 2, None, SCHEMA)
    with pytest.raises(ValueError, match="probabilities for"):
        build_reference(frame, scores[:10], None, SCHEMA)
    with pytest.raises(ValueError, match="labels must be"):
        build_reference(frame, scores, np.full(len(frame), 2), SCHEMA)


def test_psi_is_zero_on_the_reference_and_grows_with_a_shift(reference: Reference) -> None:
    scores = reference.frame[PREDICTION_COLUMN].to_numpy()
    prediction = reference.statistics.prediction

    assert population_stability_index(scores, prediction) == pytest.approx(0, abs=1e-9)
    shifted = population_stability_index(np.minimum(scores * 1.5, 1.0), prediction)
    assert shifted > 0.1


# --- outputs ---------------------------------------------------------------------------------


def test_reports_and_summary_are_written(
    monitored: Callable[..., tuple[MonitorSummary, object]], tmp_path: Path
) -> None:
    summary, snapshot = monitored(None)

    html, report = write_reports(snapshot, tmp_path / "run", summary=summary)

    assert (html.name, report.name) == ("report.html", "report.json")
    page = html.read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert "fico_range_low" in page
    data = json.loads(report.read_text())
    assert {"metrics", "tests"} <= set(data)
    assert any(t["name"] == "Value Drift for column fico_range_low" for t in data["tests"])
    assert all(t["status"] == "SUCCESS" for t in data["tests"])
    stored = MonitorSummary.model_validate_json((tmp_path / "run" / "summary.json").read_text())
    assert stored == summary


def test_metrics_are_flat_finite_floats(
    monitored: Callable[..., tuple[MonitorSummary, object]],
) -> None:
    summary, _ = monitored("covariate_shift")
    metrics = summary.metrics()

    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert all(re.fullmatch(r"[\w\-. /:]+", name) for name in metrics)  # MLflow's metric names
    assert metrics["share_drifted_features"] == summary.drift.share_drifted
    assert metrics["dataset_drift"] == 1.0
    assert summary.prediction is not None
    assert metrics["prediction_psi"] == summary.prediction.psi
    assert metrics["drift_score.fico_range_low"] >= 0.1
    assert len([n for n in metrics if n.startswith("null_rate.")]) == len(SCHEMA.features)
    assert summary.seconds > 0
    assert re.fullmatch(r"0\.7\.\d+", summary.evidently_version)
    assert summary.window_start is not None and summary.window_end is not None
    assert timedelta(0) <= summary.window_end - summary.window_start
