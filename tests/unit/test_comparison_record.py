"""The compare report as a page, and as the MLflow run the maker-checker's request reads.

Recorded into a real SQLite-backed MLflow store and found again through
`promotion_log.live_comparison`, the reader the approval request uses; the request then shows
the report's headline numbers.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from loanops import promotion_log, registry
from loanops.approval import request_description
from loanops.comparison.record import HTML_ARTIFACT, JSON_ARTIFACT, record_comparison
from loanops.comparison.render import compare_table, render_html
from loanops.comparison.report import ComparisonReport
from loanops.promotion import decide
from loanops.settings import Settings
from tests.factories import gate_policy, gate_scores
from tests.unit.test_comparison import four_cells, labelled_frame, report_of


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_the_page_shows_each_section_and_escapes_values() -> None:
    frame = labelled_frame()
    frame["term"] = np.where(np.arange(len(frame)) % 2, "<b>36</b>", "60")
    page = render_html(report_of(frame, min_labels=100, min_defaults=20))

    for heading in ("Swap set", "Approval rates by segment", "Expected cost", "by vintage"):
        assert heading in page
    assert "&lt;b&gt;36&lt;/b&gt;" in page and "<b>36</b>" not in page
    assert "challenger better" in page and "Reliability" in page


def test_the_table_says_when_no_outcome_has_arrived() -> None:
    rows = compare_table(report_of(four_cells()))
    assert ("outcomes", "none recorded yet", "") in rows
    assert ("approves what the other declines", "3", "2") in rows


def test_the_recorded_comparison_is_what_the_approval_request_shows(settings: Settings) -> None:
    client = registry.connect(settings)
    report = report_of(labelled_frame(), min_labels=100, min_defaults=20).model_copy(
        update={"model_name": settings.model_name}
    )

    run_id = record_comparison(client, settings, report, recorded_by="compare-flow")

    found = promotion_log.live_comparison(client, settings, "2")
    assert found is not None and found.run_id == run_id
    assert dict(found.metrics) == pytest.approx(report.headline_metrics())
    stored = mlflow.artifacts.load_text(f"runs:/{run_id}/{JSON_ARTIFACT}")
    assert ComparisonReport.model_validate_json(stored) == report
    assert "Swap set" in mlflow.artifacts.load_text(f"runs:/{run_id}/{HTML_ARTIFACT}")
    # A live comparison is no gate decision: the promotion history leaves it out.
    assert promotion_log.history(client, settings) == []
    description = request_description(
        settings.model_name,
        decide(gate_scores(version="2"), None, gate_policy()),
        requested_by="alice",
        timeout_seconds=60,
        live=found,
    )
    assert f"| live_auc_change | {report.headline_metrics()['live_auc_change']:.4g} |" in (
        description
    )


def test_a_report_of_another_model_is_refused(settings: Settings) -> None:
    report = report_of(four_cells())  # model "m"
    with pytest.raises(ValueError, match="would never find it"):
        record_comparison(registry.connect(settings), settings, report)
