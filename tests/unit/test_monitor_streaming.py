"""The monitor's one pass over a window in batches gives what the whole window at once gives.

Every statistic is checked against its in-memory form on the same rows: PSI and KS against
the array functions, data quality against pandas on the whole frame, and the whole result
against the same window given as one batch, from a frame, a Parquet file and the decision log.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from loanops.data import synthetic as syn
from loanops.decisions.read import read_decisions
from loanops.decisions.record import Decision
from loanops.decisions.stream import ColumnBatch, stream_decisions
from loanops.decisions.write import write_decisions
from loanops.monitoring.quality import data_quality
from loanops.monitoring.reference import (
    PREDICTION_COLUMN,
    PredictionStatistics,
    Reference,
    build_reference,
)
from loanops.monitoring.run import EmptyWindowError, logged_inputs, monitor_window, run_monitor
from loanops.monitoring.statistics import (
    ScoreCounts,
    ks_drift_statistic,
    population_stability_index,
    score_bins,
)
from loanops.monitoring.streaming import WindowStatistics
from loanops.monitoring.thresholds import MonitorThresholds
from loanops.monitoring.window import frame_batches, parquet_batches

SCHEMA = syn.SCHEMA
START = datetime(2026, 11, 19, tzinfo=UTC)
SAMPLE_ROWS = 500  # smaller than the windows, so the sample is a real choice


@pytest.fixture(scope="module")
def reference() -> Reference:
    frame = syn.generate(4_000, seed=1)
    return build_reference(frame, syn.baseline_pd(frame), frame["default"], SCHEMA, seed=0)


def scored(rows: int, seed: int) -> pd.DataFrame:
    """Generated loans with their scores and decision times, one a minute from START."""
    frame = syn.generate(rows, seed=seed)
    window = frame[SCHEMA.feature_names].reset_index(drop=True)
    window[PREDICTION_COLUMN] = syn.baseline_pd(frame)
    window["decided_at"] = pd.date_range(START, periods=rows, freq="min", tz=UTC)
    return window


def messy(rows: int = 3_000, seed: int = 4) -> pd.DataFrame:
    """A window with every kind of data-quality finding, and a few rows without a score."""
    frame = scored(rows, seed)
    frame.loc[:6, "annual_inc"] = -1.0  # below the schema's minimum
    frame.loc[100:399, "revol_util"] = np.nan  # a null-rate rise
    frame["int_rate"] = frame["int_rate"].astype(object)
    frame.loc[10:14, "int_rate"] = "13.5%"  # the wrong type
    frame.loc[1_500:1_529, "purpose"] = "crypto"  # unknown to the schema
    frame.loc[2_000:2_049, "emp_length"] = None
    frame.loc[2_990:, PREDICTION_COLUMN] = np.nan
    return frame


def sliced(frame: pd.DataFrame, rows: int) -> Iterator[ColumnBatch]:
    """The frame as consecutive batches of `rows` rows."""
    for first in range(0, len(frame), rows):
        yield from frame_batches(frame.iloc[first : first + rows])


def counted(batches: Any, reference: Reference, *, seed: int = 0) -> WindowStatistics:
    statistics = WindowStatistics(reference, SCHEMA, sample_rows=SAMPLE_ROWS, seed=seed)
    return statistics.add_all(batches)


def assert_same_statistics(
    ours: WindowStatistics, whole: WindowStatistics, reference: Reference
) -> None:
    thresholds = MonitorThresholds()
    assert ours.rows == whole.rows
    assert data_quality(ours.quality, reference.statistics, SCHEMA, thresholds) == data_quality(
        whole.quality, reference.statistics, SCHEMA, thresholds
    )
    assert (ours.scores.rows, ours.scores.psi) == (whole.scores.rows, whole.scores.psi)
    assert ours.scores.ks_drift_statistic == whole.scores.ks_drift_statistic
    assert ours.scores.mean == pytest.approx(whole.scores.mean, rel=1e-12)
    assert ours.time_span == whole.time_span
    assert (ours.model_names, ours.model_versions) == (whole.model_names, whole.model_versions)
    pd.testing.assert_frame_equal(ours.sample_frame(), whole.sample_frame())


# --- PSI and KS from counts -------------------------------------------------------------------


def test_score_counts_give_the_psi_and_ks_of_every_score_to_the_bit() -> None:
    generator = np.random.default_rng(0)
    for case in range(300):
        # Rounded scores make ties within and across the two sides; some fall outside [0, 1).
        reference_scores = np.round(generator.random(generator.integers(1, 80)), case % 3 + 1)
        current = generator.random(generator.integers(1, 120)) * 1.2 - 0.1
        if case % 2:
            current = np.round(current, 1)
        edges, shares = score_bins(reference_scores)
        prediction = PredictionStatistics(
            rows=len(reference_scores), mean=0.0, std=0.0, bin_edges=tuple(edges),
            bin_shares=tuple(shares),
        )  # fmt: skip
        counts = ScoreCounts(reference_scores, prediction)
        for part in np.array_split(current, generator.integers(1, 6)):
            counts.add(part)

        assert counts.ks_drift_statistic == ks_drift_statistic(reference_scores, current)
        assert counts.psi == population_stability_index(current, prediction)
        assert counts.mean == pytest.approx(current.mean(), rel=1e-12)


def test_score_counts_refuse_a_ks_of_no_scores(reference: Reference) -> None:
    scores = reference.frame[PREDICTION_COLUMN].to_numpy()
    with pytest.raises(ValueError, match="no scores"):
        _ = ScoreCounts(scores, reference.statistics.prediction).ks_drift_statistic


# --- the whole window against its batches ----------------------------------------------------


@pytest.mark.parametrize("batch_rows", [1_024, 337])
def test_a_window_in_batches_counts_as_the_whole_window_does(
    reference: Reference, batch_rows: int
) -> None:
    frame = messy()
    whole = counted(frame_batches(frame), reference)

    assert_same_statistics(counted(sliced(frame, batch_rows), reference), whole, reference)

    # And the counts are what pandas says of the whole frame.
    quality = data_quality(whole.quality, reference.statistics, SCHEMA, MonitorThresholds())
    assert quality.feature("revol_util").null_rate == frame["revol_util"].isna().mean()
    assert quality.feature("emp_length").null_rate == frame["emp_length"].isna().mean()
    assert quality.feature("int_rate").invalid == 5
    assert quality.feature("annual_inc").out_of_range == int((frame["annual_inc"] < 0).sum())
    known = frame["purpose"][frame["purpose"] != "crypto"].value_counts()
    assert dict(whole.quality.categories["purpose"]) == {"crypto": 30, **known.to_dict()}
    scores = frame[PREDICTION_COLUMN].dropna().to_numpy()
    reference_scores = reference.frame[PREDICTION_COLUMN].to_numpy()
    assert whole.scores.psi == population_stability_index(scores, reference.statistics.prediction)
    assert whole.scores.ks_drift_statistic == ks_drift_statistic(reference_scores, scores)
    assert whole.scores.rows == len(scores)
    assert whole.time_span == (START, START + timedelta(minutes=len(frame) - 1))


def test_the_sample_is_seeded_and_in_window_order(reference: Reference) -> None:
    frame = scored(3_000, seed=5)
    frame["annual_inc"] = np.arange(len(frame), dtype=np.float64)  # each row's position

    sample = counted(frame_batches(frame), reference).sample_frame()
    other_seed = counted(frame_batches(frame), reference, seed=1).sample_frame()

    positions = sample["annual_inc"].astype(int).to_numpy()
    assert len(sample) == SAMPLE_ROWS
    assert (np.diff(positions) > 0).all()  # distinct rows, in window order
    expected = frame.iloc[positions].reset_index(drop=True)
    pd.testing.assert_series_equal(sample["grade"], expected["grade"].astype(object))
    pd.testing.assert_series_equal(sample[PREDICTION_COLUMN], expected[PREDICTION_COLUMN])
    assert positions.tolist() != other_seed["annual_inc"].astype(int).tolist()
    assert positions.mean() == pytest.approx(len(frame) / 2, rel=0.1)  # spread over the window
    # A window no larger than the sample is given whole, in order.
    small = counted(frame_batches(frame.head(100)), reference).sample_frame()
    assert small["annual_inc"].tolist() == list(range(100))


def test_a_parquet_file_read_by_row_groups_counts_as_the_frame(
    reference: Reference, tmp_path: Path
) -> None:
    frame = messy()
    frame["int_rate"] = pd.to_numeric(frame["int_rate"], errors="coerce")  # Parquet: one type
    path = tmp_path / "window.parquet"
    frame.to_parquet(path, row_group_size=700)

    batches = list(parquet_batches(path, SCHEMA, batch_rows=400))

    assert len(batches) > 1
    assert_same_statistics(
        counted(batches, reference), counted(frame_batches(frame), reference), reference
    )


# --- from the decision log --------------------------------------------------------------------


def decisions(frame: pd.DataFrame, *, model_version: str = "3", first: int = 0) -> list[Decision]:
    """The rows of a scored window as logged decisions, request ids from `first` on."""
    records = frame[SCHEMA.feature_names].astype(object).to_dict("records")
    return [
        Decision(
            request_id=f"req-{first + i:06d}",
            decided_at=moment.to_pydatetime(),
            model_name="loan-default",
            model_version=model_version,
            threshold=0.2,
            inputs={
                k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()
            },
            probability=float(probability),
            decision="decline" if probability >= 0.2 else "approve",
            reasons=[],
            source="batch",
            job_id="job-1",
        )
        for i, (row, moment, probability) in enumerate(
            zip(records, frame["decided_at"], frame[PREDICTION_COLUMN], strict=True)
        )
    ]


def log_in_segments(engine: Engine, frame: pd.DataFrame, rows: int, **fields: Any) -> None:
    """Write the window in order, one `write_decisions` (one segment) per `rows` rows."""
    for first in range(0, len(frame), rows):
        write_decisions(engine, decisions(frame.iloc[first : first + rows], first=first, **fields))


def test_a_window_streamed_from_the_log_monitors_as_read_decisions_does(
    engine: Engine, reference: Reference
) -> None:
    frame = messy(1_200, seed=6).dropna(subset=[PREDICTION_COLUMN])  # a decision has a score
    log_in_segments(engine, frame, rows=100)
    start, end = START, START + timedelta(days=1)
    inputs = logged_inputs(SCHEMA)

    batches = list(stream_decisions(engine, start, end, inputs=inputs, batch_rows=250))
    whole = read_decisions(engine, start, end, inputs=inputs, reasons=False)

    # Segments of one schema are joined: the first holds "13.5%", the next three no
    # revol_util.
    assert [batch.rows for batch in batches] == [100, 300, 300, 300, 200]
    assert not any(isinstance(batch.columns["annual_inc"], pd.Series) for batch in batches)
    assert isinstance(batches[0].columns["int_rate"], pd.Series)  # "13.5%" mixes types there
    assert_same_statistics(
        counted(batches, reference), counted(frame_batches(whole), reference), reference
    )

    streamed, _ = monitor_window(iter(batches), reference, SCHEMA, sample_rows=SAMPLE_ROWS)
    in_memory, _ = run_monitor(whole, reference, SCHEMA, sample_rows=SAMPLE_ROWS)
    skip: dict[str, Any] = {"seconds": True, "prediction": {"current_mean"}}
    assert streamed.model_dump(exclude=skip) == in_memory.model_dump(exclude=skip)
    assert streamed.prediction is not None and in_memory.prediction is not None
    assert streamed.prediction.current_mean == pytest.approx(in_memory.prediction.current_mean)
    assert streamed.quality.invalid_values == ("int_rate",)
    assert streamed.rows == len(frame)
    assert (streamed.model_name, streamed.model_version) == ("loan-default", "3")


def test_an_empty_window_yields_no_batch_and_is_refused(
    engine: Engine, reference: Reference
) -> None:
    log_in_segments(engine, scored(50, seed=7), rows=50)
    later = START + timedelta(days=30)

    assert list(stream_decisions(engine, later, inputs=logged_inputs(SCHEMA))) == []
    assert counted([], reference).rows == 0
    with pytest.raises(EmptyWindowError, match="no rows"):
        monitor_window(stream_decisions(engine, later, inputs={}), reference, SCHEMA)


def test_segments_of_two_model_versions_are_never_joined(
    engine: Engine, reference: Reference
) -> None:
    frame = scored(600, seed=8)
    for first, version in [(0, "3"), (200, "4"), (400, "3")]:
        part = frame.iloc[first : first + 200]
        write_decisions(engine, decisions(part, model_version=version, first=first))
    inputs = logged_inputs(SCHEMA)

    batches = list(stream_decisions(engine, inputs=inputs, batch_rows=10_000))
    fourth = list(stream_decisions(engine, inputs=inputs, model_version="4"))

    assert [(b.model_version, b.rows) for b in batches] == [("3", 200), ("4", 200), ("3", 200)]
    both = counted(batches, reference)
    assert_same_statistics(
        both, counted(frame_batches(read_decisions(engine, inputs=inputs)), reference), reference
    )
    assert both.model_versions == {"3", "4"}
    assert [(b.model_version, b.rows) for b in fourth] == [("4", 200)]
    summary, _ = monitor_window(iter(batches), reference, SCHEMA, sample_rows=SAMPLE_ROWS)
    assert (summary.model_name, summary.model_version) == ("loan-default", None)


def test_stream_decisions_refuses_what_it_cannot_read(engine: Engine) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        list(stream_decisions(engine, datetime(2026, 11, 19), inputs={}))
    with pytest.raises(ValueError, match="not columns of a segment"):
        list(stream_decisions(engine, inputs={}, columns=["model_name"]))
    with pytest.raises(ValueError, match="positive"):
        list(stream_decisions(engine, inputs={}, batch_rows=0))
