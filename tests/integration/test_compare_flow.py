"""The compare flow end to end: paired decisions and their outcomes in a real decision log on
PostgreSQL, the flow run on a real Prefect server, and its report in a real `mlflow server`.

The two models' PDs are the synthetic generator's ground truths, so which one is better is known:
after a concept shift (dti weighs four times as much), the champion scores with the truth from
before the shift (`baseline_pd`, the ideal model fitted before it) and the better challenger
with the truth after it (`pd_true`). A clone scores exactly as the champion does. Outcomes exist
only for the loans the champion approved, as in shadow mode.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from flows.compare import compare_flow
from loanops import promotion_log, registry
from loanops.comparison.paired import NoPairedDecisionsError
from loanops.data import synthetic as syn
from loanops.data.synthetic_drift import Drift
from loanops.decisions.database import create_engine_for, migrate
from loanops.decisions.record import Decision
from loanops.decisions.write import write_decisions
from loanops.outcomes import Outcome, record_outcomes
from loanops.settings import Settings
from tests.integration.conftest import LoanopsEnvironment
from tests.services import fresh_database

pytestmark = pytest.mark.integration

ROWS = 6_000
THRESHOLD = 1 / 6  # the cost matrix's Bayes threshold, for both models
NOW = datetime.now(UTC).replace(microsecond=0)
BIN = Path(sys.executable).parent
SUFFIX = uuid.uuid4().hex[:8]
MODEL_NAME = f"loan-default-compare-{SUFFIX}"


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime


# Three months each, apart, so each test's flow reads only its own scenario.
BETTER = Window(NOW - timedelta(days=300), NOW - timedelta(days=210))
CLONE = Window(NOW - timedelta(days=200), NOW - timedelta(days=110))
UNPAIRED = Window(NOW - timedelta(days=100), NOW - timedelta(days=90))


def paired(
    loans: pd.DataFrame,
    champion: np.ndarray,
    challenger: np.ndarray | None,
    version: str | None,
    window: Window,
    prefix: str,
) -> pd.DataFrame:
    """One paired decision per loan, spread evenly over `window` (the decision log's columns),
    the segments' inputs, and ``defaulted`` for the loans the champion approved."""
    n = len(loans)
    approved = champion < THRESHOLD
    step = (window.end - window.start - timedelta(hours=1)) / n
    frame = pd.DataFrame(
        {
            "request_id": [f"{prefix}-{i:05d}" for i in range(n)],
            "decided_at": [window.start + i * step for i in range(n)],
            "model_name": MODEL_NAME,
            "model_version": "1",
            "threshold": THRESHOLD,
            "probability": champion,
            "decision": np.where(approved, "approve", "decline"),
            "arm": "champion",
            "challenger_version": version,
            "challenger_threshold": None if challenger is None else THRESHOLD,
            "challenger_probability": challenger,
            "challenger_decision": None
            if challenger is None
            else np.where(challenger < THRESHOLD, "approve", "decline"),
            **{name: loans[name].to_numpy() for name in ("annual_inc", "grade", "term")},
            "defaulted": pd.Series(loans["default"].to_numpy().astype(bool)).where(approved),
        }
    )
    frame["decided_at"] = pd.to_datetime(frame["decided_at"], utc=True)
    return frame


def log(engine: Engine, frame: pd.DataFrame, loans: pd.DataFrame) -> None:
    """Write `frame`'s paired decisions through the decision log's write API (the loans' inputs
    beside them), and record its outcomes."""
    inputs = syn.SCHEMA.to_frame(loans).astype(object).to_dict(orient="records")
    decisions = []
    for row, applicant in zip(frame.itertuples(index=False), inputs, strict=True):
        challenger: dict[str, Any] = {}
        if row.challenger_version is not None:
            challenger = {
                "challenger_version": row.challenger_version,
                "challenger_threshold": row.challenger_threshold,
                "challenger_probability": row.challenger_probability,
                "challenger_decision": row.challenger_decision,
                "challenger_reasons": [],
            }
        decisions.append(
            Decision(
                request_id=row.request_id,
                decided_at=row.decided_at.to_pydatetime(),
                model_name=row.model_name,
                model_version=row.model_version,
                threshold=row.threshold,
                inputs={k: None if _missing(v) else v for k, v in applicant.items()},
                probability=row.probability,
                decision=row.decision,
                reasons=[],
                arm=row.arm,
                **challenger,
            )
        )
    write_decisions(engine, decisions)
    known = frame[frame["defaulted"].notna()]
    record_outcomes(
        engine,
        [
            Outcome(request_id=request_id, defaulted=bool(defaulted))
            for request_id, defaulted in zip(known["request_id"], known["defaulted"], strict=True)
        ],
    )


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@pytest.fixture(scope="module")
def decision_database(postgres_server: str) -> Iterator[str]:
    """The decision log and outcomes on a PostgreSQL database of this module's own."""
    with fresh_database(postgres_server) as url:
        migrate(url)
        yield url


@pytest.fixture(scope="module")
def scenarios(
    decision_database: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, pd.DataFrame]:
    """Both scenarios and a window no challenger scored, written to the decision log; the
    better one also as a file of paired decisions."""
    shifted = syn.generate(ROWS, seed=21, drift=Drift.coefficient_change(start=0.0))
    before, after = syn.baseline_pd(shifted), shifted["pd_true"].to_numpy()
    frames = {
        "better": paired(shifted, before, after, "2", BETTER, "better"),
        "clone": paired(shifted, before, before.copy(), "3", CLONE, "clone"),
        "unpaired": paired(shifted.iloc[:200], before[:200], None, None, UNPAIRED, "unpaired"),
    }
    engine = create_engine_for(decision_database)
    try:
        for frame in frames.values():
            log(engine, frame, shifted.iloc[: len(frame)])
    finally:
        engine.dispose()
    return frames


@pytest.fixture
def settings(
    tmp_path: Path,
    loanops_env: LoanopsEnvironment,
    prefect_server: tuple[str, dict[str, str]],
    mlflow_server_url: str,
    decision_database: str,
) -> Settings:
    _, prefect_env = prefect_server
    return loanops_env(
        {
            **prefect_env,
            "LOANOPS_HOME": str(tmp_path / "home"),
            "LOANOPS_TRACKING_URI": mlflow_server_url,
            # The session's `mlflow server` is shared: names of this module's own.
            "LOANOPS_MODEL_NAME": MODEL_NAME,
            "LOANOPS_PROMOTION_EXPERIMENT_NAME": f"promotion-compare-{SUFFIX}",
            "LOANOPS_DATABASE_URL": decision_database,
            "LOANOPS_DATASET": "synthetic",
            "LOANOPS_BOOTSTRAP_SAMPLES": "500",
        }
    )


def test_a_challenger_trained_after_the_shift_is_found_better(
    settings: Settings, scenarios: dict[str, pd.DataFrame]
) -> None:
    result = compare_flow(since=BETTER.start, end=BETTER.end)

    report = result.report
    assert (report.challenger_version, report.champion_versions) == ("2", ("1",))
    assert report.paired == ROWS and report.unpaired == 0
    overall = report.overall_outcomes
    assert overall is not None and overall.auc_difference is not None
    assert overall.labelled < ROWS  # outcomes only for the loans made
    assert overall.auc_difference.low > 0, overall.auc_difference
    assert overall.auc_difference.verdict == "challenger better"
    assert len(report.outcomes) >= 1 + 3  # overall, then the three or four months
    assert all(s.auc_difference is not None for s in report.outcomes)
    assert report.swap_set.swap_in + report.swap_set.swap_out > 0
    assert {row.segment for row in report.segments} == {"income band", "grade", "term"}
    # The run the approval request reads, with the report's headline numbers.
    client = registry.connect(settings)
    found = promotion_log.live_comparison(client, settings, "2")
    assert found is not None and found.run_id == result.run_id
    assert found.metrics["live_auc_change_low"] == overall.auc_difference.low
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "live_comparison")}
    assert artifacts == {"live_comparison/report.json", "live_comparison/report.html"}
    assert (result.report_dir / "report.html").read_text().count("<table") >= 5


def test_a_clone_is_found_no_different(
    settings: Settings, scenarios: dict[str, pd.DataFrame]
) -> None:
    result = compare_flow(since=CLONE.start, end=CLONE.end, challenger_version="3")

    report = result.report
    assert report.agreement_rate == 1.0 and report.swap_set.swap_in == 0
    overall = report.overall_outcomes
    assert overall is not None and overall.auc_difference is not None
    assert overall.auc_difference.low <= 0 <= overall.auc_difference.high
    assert overall.auc_difference.verdict == "no difference"


def test_a_window_with_no_paired_decision_fails_the_run_saying_why(
    settings: Settings, scenarios: dict[str, pd.DataFrame]
) -> None:
    state = compare_flow(since=UNPAIRED.start, end=UNPAIRED.end, return_state=True)

    assert state.is_failed()
    with pytest.raises(NoPairedDecisionsError, match="nothing to compare between .* challenger"):
        state.result()


def test_loanops_compare_prints_the_compare_table(
    settings: Settings, scenarios: dict[str, pd.DataFrame]
) -> None:
    env = {**os.environ, "COLUMNS": "200"}  # the settings fixture's variables are set
    done = subprocess.run(
        [
            str(BIN / "loanops"),
            "compare",
            f"--since={BETTER.start:%Y-%m-%dT%H:%M:%S%z}",
            "--challenger=2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    assert "AUC difference, challenger − champion" in done.stdout
    assert "challenger better" in done.stdout
    assert "Report:" in done.stdout


def test_a_file_of_the_same_pairs_gives_the_same_report(
    settings: Settings, scenarios: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    path = tmp_path / "better.parquet"
    scenarios["better"].to_parquet(path, index=False)

    from_file = compare_flow(since=BETTER.start, end=BETTER.end, data_path=str(path))
    from_log = compare_flow(since=BETTER.start, end=BETTER.end)

    assert from_file.report.headline_metrics() == from_log.report.headline_metrics()
    assert from_file.report.segments == from_log.report.segments
