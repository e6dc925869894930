"""The pages the browser test opens from files: a version's model card, a monitor report and a
compare report.

Each is written the way the product writes it (the promote flow's `build_card` and
`log_card`, the monitor flow's `run_monitor` and `write_reports`, the compare flow's
`compare_pairs` and `render_html`) into a folder that is kept beside the screenshots, so a
reader can open the page itself.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from loanops import registry
from loanops.card import CARD_ARTIFACT, build_card, log_card
from loanops.comparison.render import render_html
from loanops.comparison.report import compare_pairs
from loanops.data import synthetic as syn
from loanops.data.synthetic_drift import Drift
from loanops.evaluate import CostMatrix
from loanops.monitoring.reference import PREDICTION_COLUMN, build_reference
from loanops.monitoring.reports import report_title, write_reports
from loanops.monitoring.run import run_monitor
from loanops.settings import Settings
from tests.figures import problems

CARD_BOOTSTRAP_SAMPLES = 200
"""Enough for the card's intervals to be drawn; the page, not their width, is under test."""
# The shape of the report: a small window beside a reference some forty times larger.
WINDOW_ROWS, REFERENCE_ROWS = 201, 7823
WINDOW_START = datetime(2026, 12, 1, 9, tzinfo=UTC)
COMPARE_ROWS = 6_000


@dataclass(frozen=True)
class WrittenPage:
    """An HTML page on disk, and what it should show."""

    page: Path
    title: str
    figures: tuple[str, ...] = ()


def model_card_folder(settings: Settings, version: str, folder: Path) -> WrittenPage:
    """Build and log `version`'s card as the promote flow does, then download what was logged.

    Every plot must pass `tests.figures.problems` as it is generated.
    """
    client = registry.connect(settings)
    model_version = client.get_model_version(settings.model_name, version)
    _log_gate_data(client, model_version)
    card = build_card(client, model_version, bootstrap_samples=CARD_BOOTSTRAP_SAMPLES, seed=0)
    unreadable = {name: found for name, f in card.figures.items() if (found := problems(f))}
    assert not unreadable, f"card plots that do not read: {unreadable}"
    log_card(client, model_version, card)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    assert model_version.run_id is not None
    logged = Path(client.download_artifacts(model_version.run_id, CARD_ARTIFACT, str(folder)))
    return WrittenPage(
        page=logged / "model_card.html",
        title=f"Model card: {settings.model_name} v{version}",
        figures=tuple(card.figures),
    )


def _log_gate_data(client: MlflowClient, version: ModelVersion) -> None:
    # The shared fixture registers versions without the frozen test split the training flow
    # logs; held-out synthetic loans stand in for it, so `build_card` runs unchanged.
    assert version.run_id is not None
    artifact = Path(registry.GATE_DATA_ARTIFACT)
    with tempfile.TemporaryDirectory(prefix="loanops-gate-") as tmp:
        path = Path(tmp) / artifact.name
        syn.generate(1500, seed=11).to_parquet(path)
        client.log_artifact(version.run_id, str(path), str(artifact.parent))


def monitor_report_folder(model_name: str, version: str, folder: Path) -> WrittenPage:
    """A monitor report of a small window of decisions against a large reference."""
    reference_frame = syn.generate(REFERENCE_ROWS, seed=1)
    reference = build_reference(
        reference_frame,
        syn.baseline_pd(reference_frame),
        reference_frame["default"],
        syn.SCHEMA,
        seed=0,
    )
    window = syn.generate(WINDOW_ROWS, seed=2)
    window[PREDICTION_COLUMN] = syn.baseline_pd(window)
    summary, snapshot = run_monitor(
        window,
        reference,
        syn.SCHEMA,
        model_name=model_name,
        model_version=version,
        window=(WINDOW_START, WINDOW_START + timedelta(hours=6)),
        seed=0,
    )
    page, _ = write_reports(snapshot, folder, summary=summary)
    return WrittenPage(page=page, title=report_title(snapshot.to_snapshot_model().metadata))


def compare_report_folder(model_name: str, folder: Path) -> WrittenPage:
    """A compare report of a challenger that knows of a concept shift the champion missed.

    The champion scores with the synthetic generator's truth before the shift (dti weighs four
    times as much after it), the challenger with the truth after it; outcomes exist for the
    loans the champion approved, over three months.
    """
    import numpy as np
    import pandas as pd

    loans = syn.generate(COMPARE_ROWS, seed=21, drift=Drift.coefficient_change(start=0.0))
    champion, challenger = syn.baseline_pd(loans), loans["pd_true"].to_numpy()
    threshold = 1 / 6
    decided = pd.Timestamp(WINDOW_START) + pd.to_timedelta(np.linspace(0, 89, len(loans)), unit="D")
    approved = champion < threshold
    frame = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(len(loans))],
            "decided_at": decided,
            "model_version": "3",
            "probability": champion,
            "decision": np.where(approved, "approve", "decline"),
            "arm": "champion",
            "challenger_version": "4",
            "challenger_probability": challenger,
            "challenger_decision": np.where(challenger < threshold, "approve", "decline"),
            "annual_inc": loans["annual_inc"].to_numpy(),
            "grade": loans["grade"].to_numpy(),
            "term": loans["term"].to_numpy(),
            "defaulted": pd.Series(loans["default"].astype(bool)).where(approved),
        }
    )
    report = compare_pairs(
        frame,
        model_name=model_name,
        segments=syn.SCHEMA.segments,
        costs=CostMatrix(false_approve=5.0, false_decline=1.0),
        window=(WINDOW_START, WINDOW_START + timedelta(days=90)),
        bootstrap_samples=500,
    )
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    title = f"Live comparison: {model_name} v4 against v3"
    return WrittenPage(page=page, title=title)
