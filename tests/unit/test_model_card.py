"""Model cards from known scores: segment numbers, intervals, disparity, rendering and images."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from loanops import registry
from loanops.card import (
    MIN_SEGMENT_DEFAULTS,
    ModelCardReport,
    card_from_scores,
    segments,
    write_card,
)
from loanops.data.lending_club import SCHEMA as LENDING_CLUB

THRESHOLD = 0.3


def loans(rows: int = 4_000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Loans with a sub-grade, a term and an income, labels, and scores that track the labels."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "sub_grade": rng.choice(["A1", "A4", "B2", "C5"], rows),
            "term": rng.choice(["term_36", "term_60"], rows, p=[0.7, 0.3]),
            "annual_inc": rng.choice([25_000.0, 40_000.0, 90_000.0, 250_000.0], rows),
        }
    )
    y = (rng.random(rows) < 0.2).astype(np.int8)
    p = np.clip(0.2 + 0.3 * (y - 0.2) + rng.normal(0, 0.1, rows), 0.01, 0.99)
    return frame, y, p


def make_card(**overrides: object) -> ModelCardReport:
    frame, y, p = loans()
    model_card = registry.ModelCard(
        threshold=THRESHOLD,
        family="logreg",
        params={"C": 0.5},
        dataset="synthetic",
        dataset_sha256="ab" * 32,
        cost_false_approve=5.0,
        cost_false_decline=1.0,
        feature_schema=LENDING_CLUB.model_dump(mode="json"),
    )
    arguments: dict[str, object] = {
        "model_name": "loan-default",
        "version": "7",
        "run_id": "run-7",
        "created_at": "2026-11-26T09:00:00+00:00",
        "data": {"dataset": "synthetic", "source": "<generated> & seeded"},
        "model_card": model_card,
        "promotion": {"outcome": "promoted", "reasons": "AUC 0.80 >= floor 0.65"},
        "test_frame": frame,
        "y": y,
        "p": p,
        "bootstrap_samples": 200,
        "seed": 0,
    }
    return card_from_scores(**(arguments | overrides))  # type: ignore[arg-type]


def test_segments_are_the_schemas_declarations_grade_letter_term_and_income_bands() -> None:
    frame, _, _ = loans(rows=8)
    found = segments(frame, LENDING_CLUB.segments)

    assert list(found) == ["income band", "grade", "term"]
    assert found["grade"].tolist() == frame["sub_grade"].str[0].tolist()
    bands = found["income band"]
    assert bands[frame["annual_inc"] == 40_000.0].eq("40k–75k").all()  # edges belong above
    assert bands[frame["annual_inc"] == 250_000.0].eq("≥ 120k").all()


def test_segment_rows_match_a_groupby_of_the_test_split() -> None:
    frame, y, p = loans()
    card = make_card()

    by_term = {row.value: row for row in card.segments if row.segment == "term"}
    expected = pd.DataFrame({"term": frame["term"], "y": y, "p": p}).groupby("term")
    for term, group in expected:
        row = by_term[str(term)]
        assert row.rows == len(group)
        assert row.defaults == int(group["y"].sum())
        assert row.default_rate == pytest.approx(group["y"].mean())
        assert row.mean_pd == pytest.approx(group["p"].mean())
        assert row.approval_rate == pytest.approx((group["p"] < THRESHOLD).mean())
        assert row.roc_auc is not None and 0.5 < row.roc_auc <= 1
    for name in ("grade", "term", "income band"):
        assert sum(row.rows for row in card.segments if row.segment == name) == len(frame)


def test_every_metric_sits_inside_its_bootstrap_interval() -> None:
    card = make_card()

    assert [m.name for m in card.metrics][:2] == ["ROC AUC", "KS"]
    for metric in card.metrics:
        assert metric.low <= metric.value <= metric.high, metric
        assert metric.low < metric.high, metric


def test_disparity_reports_the_approval_ratio_per_segment() -> None:
    card = make_card()

    term = next(line for line in card.disparity if line.startswith("term:"))
    rates = [row.approval_rate for row in card.segments if row.segment == "term"]
    assert f"approval-rate ratio {min(rates) / max(rates):.2f}" in term
    assert len(card.disparity) == 3


def test_thin_segments_and_synthetic_data_are_named_as_limitations() -> None:
    frame, y, p = loans()
    thin = frame["sub_grade"] == "C5"
    y = np.where(thin, 0, y).astype(np.int8)  # no defaults at all in grade C
    y[np.flatnonzero(thin)[:3]] = 1

    card = make_card(y=y)

    grade_c = next(row for row in card.segments if row.value == "C")
    assert grade_c.defaults == 3 < MIN_SEGMENT_DEFAULTS
    assert grade_c.roc_auc is None
    assert any("grade 'C'" in line for line in card.limitations)
    assert card.limitations[0].startswith("Trained on synthetic data")


def test_the_written_card_holds_every_section_real_images_and_escaped_html(
    tmp_path: Path,
) -> None:
    card = make_card()

    markdown, page = write_card(card, tmp_path)

    text = markdown.read_text()
    for heading in (
        "## Data",
        "## Model",
        "## Test metrics",
        "## Calibration",
        "## Threshold and costs",
        "## Metrics by segment",
        "## Disparity across segments",
        "## Promotion decision",
        "## Known limitations",
    ):
        assert heading in text
    assert "| outcome | promoted |" in text
    assert "Decline when PD ≥ 0.3000." in text
    for image in ("roc.png", "calibration.png", "segments.png"):
        path = tmp_path / image
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(path).shape
        assert height > 100 and width > 100
        assert f'src="{image}"' in page.read_text()
    html = page.read_text()
    assert "&lt;generated&gt; &amp; seeded" in html
    assert "<generated>" not in html
