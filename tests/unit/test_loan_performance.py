"""Performance on delayed labels: metrics against sklearn, label minimums, vintages, a macro shock.

The macro-shock case uses the synthetic generator's paired counterfactuals: the same seed with
and without `Drift.macro_shock` gives the same applicants, and only more of them default. A model
whose PDs were right before the shock (the generator's own `pd_true`) is then far from the
observed default rate, which the calibration z-score must show; no feature moved.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score, roc_curve

from loanops.data import synthetic as syn
from loanops.data.synthetic_drift import Drift
from loanops.decisions.database import create_engine_for, migrate
from loanops.decisions.write import write_decisions
from loanops.outcomes import Outcome, read_labelled, record_outcomes
from loanops.performance import (
    OVERALL,
    PerformanceSummary,
    SliceMetrics,
    classification_report,
    performance_summary,
    vintages,
)
from tests.factories import make_decision

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def computed(value: float | None) -> float:
    """The metric's value, failing the test when it was not computed (None)."""
    assert value is not None, "the metric was not computed"
    return value


def labelled_frame(
    y: np.ndarray, p: np.ndarray, decided_at: pd.Series | None = None, **columns: object
) -> pd.DataFrame:
    """Labelled decisions as `read_labelled` returns them (the columns the metrics read)."""
    if decided_at is None:
        decided_at = pd.Series(pd.Timestamp(T0), index=range(len(y)))
    return pd.DataFrame(
        {
            "request_id": [f"r-{i}" for i in range(len(y))],
            "decided_at": pd.to_datetime(decided_at, utc=True).to_numpy(),
            "model_version": "3",
            "probability": p,
            "decision": np.where(p >= 0.2, "decline", "approve"),
            "defaulted": y.astype(bool),
            **columns,
        }
    )


def scored_sample(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from the PDs themselves: a calibrated, informative model."""
    rng = np.random.default_rng(seed)
    p = rng.beta(1.2, 9.0, n)
    y = (rng.random(n) < p).astype(int)
    return y, p


def hand_ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    order = np.argsort(p, kind="stable")
    return float(
        sum(len(c) * abs(p[c].mean() - y[c].mean()) for c in np.array_split(order, bins)) / len(p)
    )


# --- the numbers -----------------------------------------------------------------------------


def test_a_tiny_case_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])

    overall = performance_summary(labelled_frame(y, p), min_labels=4, min_defaults=2).overall

    assert overall.auc == pytest.approx(0.75)  # 3 of the 4 (default, repaid) pairs in order
    assert overall.ks == pytest.approx(0.5)
    assert overall.mean_pd == pytest.approx(0.4125)
    assert overall.default_rate == pytest.approx(0.5)
    assert overall.calibration_gap == pytest.approx(-0.0875)
    assert overall.observed_to_expected == pytest.approx(2 / 1.65)
    spread = np.sqrt(np.mean(p * (1 - p)) / 4)
    assert overall.calibration_z == pytest.approx(-0.0875 / spread)
    assert overall.note is None


def test_the_metrics_match_sklearn_on_a_constructed_sample() -> None:
    y, p = scored_sample(5_000)

    summary = performance_summary(labelled_frame(y, p))

    overall = summary.overall
    assert (overall.labelled, overall.defaults) == (5_000, int(y.sum()))
    assert overall.auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, p)
    assert overall.ks == pytest.approx(float(np.max(tpr - fpr)), abs=1e-12)
    assert overall.ece == pytest.approx(hand_ece(y, p), abs=1e-12)
    assert overall.mean_pd == pytest.approx(p.mean())
    assert overall.default_rate == pytest.approx(y.mean())
    assert overall.observed_to_expected == pytest.approx(y.sum() / p.sum())
    # Labels drawn from the PDs: calibrated, so the gap is within noise.
    assert abs(computed(overall.calibration_z)) < 3
    assert summary.model_versions == ("3",)
    assert summary.overall.name == OVERALL


def test_a_slice_with_too_few_labels_gets_counts_and_a_reason_only() -> None:
    y, p = scored_sample(150)

    overall = performance_summary(labelled_frame(y, p), min_labels=200).overall

    assert overall == SliceMetrics(
        OVERALL,
        150,
        int(y.sum()),
        note="150 labelled decisions; every metric needs at least 200",
    )


def test_too_few_defaults_leave_ranking_out_but_calibration_in() -> None:
    y = np.zeros(300, dtype=int)
    y[:5] = 1
    p = np.full(300, 0.05)

    overall = performance_summary(labelled_frame(y, p), min_defaults=20).overall

    assert (overall.auc, overall.ks, overall.ece) == (None, None, None)
    assert overall.default_rate == pytest.approx(5 / 300)
    assert overall.calibration_z is not None
    assert overall.note == "5 defaults and 295 repaid; AUC, KS and ECE need at least 20 of each"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda f: f.drop(columns="probability"), r"lack the columns \['probability'\]"),
        (lambda f: f.assign(defaulted=[None] * len(f)), "missing values"),
        (lambda f: f.assign(defaulted=2), "true/false"),
        (lambda f: f.assign(probability=1.5), r"\[0, 1\]"),
        (lambda f: f.assign(probability=np.nan), r"\[0, 1\]"),
    ],
)
def test_bad_frames_are_refused(change: object, words: str) -> None:
    y, p = scored_sample(10)
    frame = change(labelled_frame(y, p))  # type: ignore[operator]
    with pytest.raises(ValueError, match=words):
        performance_summary(frame)


def test_an_empty_frame_gives_an_empty_summary() -> None:
    summary = performance_summary(labelled_frame(np.array([], dtype=int), np.array([])))

    assert summary.overall.labelled == 0
    assert summary.vintages == ()
    assert summary.first_decided_at is None
    assert summary.as_metrics() == {"perf_labelled": 0.0, "perf_defaults": 0.0}


# --- vintages --------------------------------------------------------------------------------


def test_vintages_are_decision_months_without_an_issue_date() -> None:
    y, p = scored_sample(900, seed=1)
    decided = pd.Series(
        [T0 + timedelta(days=int(d)) for d in np.linspace(0, 88, 900)]  # Jan, Feb, Mar 2025
    )

    summary = performance_summary(labelled_frame(y, p, decided), min_labels=250, min_defaults=10)

    assert summary.vintage_basis == "decided_at"
    assert [v.name for v in summary.vintages] == ["2025-01", "2025-02", "2025-03"]
    assert sum(v.labelled for v in summary.vintages) == 900
    for vintage in summary.vintages:
        assert vintage.auc is not None, vintage.note
    assert summary.first_decided_at == T0
    assert summary.last_decided_at == T0 + timedelta(days=88)


def test_the_issue_date_decides_the_vintage_where_a_row_has_one() -> None:
    y, p = scored_sample(6, seed=2)
    frame = labelled_frame(y, p, issue_d=["2024-11", "2024-12", None, "2024-12", "", "junk"])

    months, basis = vintages(frame)

    assert basis == "issue_d, else decided_at"
    assert list(months) == ["2024-11", "2024-12", "2025-01", "2024-12", "2025-01", "2025-01"]

    frame["issue_d"] = pd.Categorical(["2024-11"] * 3 + ["2024-12"] * 3)
    assert vintages(frame)[1] == "issue_d"
    assert list(vintages(frame)[0]) == ["2024-11"] * 3 + ["2024-12"] * 3
    frame["issue_d"] = pd.to_datetime(["2024-11-15"] * 6)
    assert list(vintages(frame)[0]) == ["2024-11"] * 6
    frame["issue_d"] = None
    assert vintages(frame)[1] == "decided_at"


def test_decision_months_are_utc_months() -> None:
    frame = labelled_frame(
        np.array([0]), np.array([0.1]), pd.Series([pd.Timestamp("2025-01-31T23:30:00-05:00")])
    )
    assert list(vintages(frame)[0]) == ["2025-02"]


# --- a macro shock ---------------------------------------------------------------------------


def test_a_macro_shock_shows_as_a_calibration_gap_far_beyond_three_standard_errors() -> None:
    rows = 12_000
    before = syn.generate(rows, seed=11)
    shocked = syn.generate(rows, seed=11, drift=Drift.macro_shock(start=0.0))
    features = list(syn.SCHEMA.feature_names)
    pd.testing.assert_frame_equal(before[features], shocked[features])  # no feature moved
    assert shocked["default"].mean() > 1.7 * before["default"].mean()

    # The model's PDs were right before the shock: the generator's own ground truth.
    p = before["pd_true"].to_numpy()
    decided = pd.Series(pd.Timestamp(T0), index=before.index)
    calm = performance_summary(
        labelled_frame(before["default"].to_numpy(), p, decided, issue_d=before["issue_d"])
    )
    shock = performance_summary(
        labelled_frame(shocked["default"].to_numpy(), p, decided, issue_d=shocked["issue_d"])
    )

    assert abs(computed(calm.overall.calibration_z)) < 3
    assert computed(shock.overall.calibration_z) < -10
    assert computed(shock.overall.observed_to_expected) > 1.7
    assert computed(shock.overall.calibration_gap) < -0.05
    # Ranking barely suffers: every logit moved by the same amount.
    assert abs(computed(shock.overall.auc) - computed(calm.overall.auc)) < 0.03
    # Vintages come from the loan book's issue months, and every one of them shows the shock.
    assert shock.vintage_basis == "issue_d"
    assert len(shock.vintages) == 36
    assert all(computed(v.calibration_z) < 0 for v in shock.vintages)
    assert shock.as_metrics()["perf_calibration_z"] == shock.overall.calibration_z


# --- outputs ---------------------------------------------------------------------------------


def test_the_summary_logs_as_metrics_and_prints_as_a_table() -> None:
    y, p = scored_sample(1_000, seed=3)
    decided = pd.Series([T0] * 500 + [T0 + timedelta(days=40)] * 500)

    summary = performance_summary(labelled_frame(y, p, decided), min_labels=600)

    assert set(summary.as_metrics()) == {
        "perf_labelled",
        "perf_defaults",
        "perf_auc",
        "perf_ks",
        "perf_ece",
        "perf_mean_pd",
        "perf_default_rate",
        "perf_calibration_gap",
        "perf_observed_to_expected",
        "perf_calibration_z",
    }
    table = summary.table()
    assert list(table.index) == [OVERALL, "2025-01", "2025-02"]
    assert table.loc["2025-01", "labelled"] == 500
    assert pd.isna(table.loc["2025-01", "auc"])
    assert "at least 600" in table.loc["2025-01", "note"]
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["overall"]["labelled"] == 1_000
    assert data["first_decided_at"] == T0.isoformat()
    assert isinstance(summary, PerformanceSummary)


def test_from_the_decision_log_to_the_summary(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'decisions.db'}"
    migrate(url)
    engine = create_engine_for(url)
    try:
        y, p = scored_sample(400, seed=4)
        write_decisions(
            engine,
            [
                make_decision(
                    i,
                    start=T0,
                    step=timedelta(hours=1),
                    request_id=f"r-{i}",
                    probability=float(p[i]),
                    decision="decline" if p[i] >= 0.2 else "approve",
                )
                for i in range(400)
            ],
        )
        labelled = [Outcome(request_id=f"r-{i}", defaulted=bool(y[i])) for i in range(0, 400, 2)]
        record_outcomes(engine, labelled)

        summary = performance_summary(read_labelled(engine), min_labels=50, min_defaults=5)

        assert summary.overall.labelled == 200
        half = np.arange(0, 400, 2)
        assert summary.overall.auc == pytest.approx(roc_auc_score(y[half], p[half]))
        assert [v.name for v in summary.vintages] == ["2025-01"]
    finally:
        engine.dispose()


# --- the Evidently report --------------------------------------------------------------------


def evidently_values(snapshot: object) -> dict[str, object]:
    """Each metric's value by the metric's type name (``RocAuc``, ``Precision``, ...)."""
    metrics = snapshot.dict()["metrics"]  # type: ignore[attr-defined]
    return {m["metric_name"].split("(")[0]: m["value"] for m in metrics}


def test_the_classification_report_agrees_with_sklearn_at_the_decline_threshold(
    tmp_path: Path,
) -> None:
    y, p = scored_sample(3_000, seed=5)
    frame = labelled_frame(y, p, threshold=0.2)

    snapshot = classification_report(frame)

    assert snapshot is not None
    values = evidently_values(snapshot)
    assert values["RocAuc"] == pytest.approx(roc_auc_score(y, p))
    declined = p >= 0.2  # the API declines at or above its threshold
    assert values["Precision"] == pytest.approx(precision_score(y, declined))
    assert values["Recall"] == pytest.approx(recall_score(y, declined))
    snapshot.save_html(str(tmp_path / "report.html"))
    assert (tmp_path / "report.html").stat().st_size > 10_000
    assert json.loads(snapshot.json())["metrics"]


def test_no_classification_report_without_enough_labels() -> None:
    y = np.zeros(500, dtype=int)
    y[:10] = 1
    p = np.full(500, 0.05)

    assert classification_report(labelled_frame(y, p, threshold=0.2)) is None
    few_y, few_p = scored_sample(100)
    assert classification_report(labelled_frame(few_y, few_p, threshold=0.2)) is None


def test_the_report_needs_one_threshold_and_samples_large_frames() -> None:
    y, p = scored_sample(1_000, seed=6)
    mixed = labelled_frame(y, p, threshold=np.where(np.arange(1_000) < 500, 0.2, 0.3))

    with pytest.raises(ValueError, match="2 thresholds"):
        classification_report(mixed)
    snapshot = classification_report(mixed, threshold=0.3, max_rows=400)
    assert snapshot is not None
    matrix_rows = snapshot.dict()["metrics"][0]  # Accuracy over the 400 sampled rows
    assert 0 <= matrix_rows["value"] <= 1
