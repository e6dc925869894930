"""The monitor's HTML page: a title naming the model, its version and the window, and
distributions that show a small window beside a large reference (as shares, not counts)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from loanops.data import synthetic as syn
from loanops.monitoring.reference import build_reference
from loanops.monitoring.reports import report_title, write_reports
from loanops.monitoring.results import MonitorSummary
from loanops.monitoring.run import run_monitor
from tests.unit.test_monitoring import decisions_window

# The shape the issue saw: 201 decisions beside 7,823 reference rows (smaller here, same ratio).
WINDOW_ROWS, REFERENCE_ROWS = 201, 4000
_DATA_LINE = re.compile(r"^\s*var (?:additional_graphs_)?metric_\w+ = (.*);$", re.MULTILINE)


@pytest.fixture(scope="module")
def monitored() -> tuple[MonitorSummary, Any]:
    frame = syn.generate(REFERENCE_ROWS, seed=1)
    reference = build_reference(frame, syn.baseline_pd(frame), frame["default"], syn.SCHEMA)
    window = decisions_window(syn.generate(WINDOW_ROWS, seed=2), model_version="3")
    return run_monitor(window, reference, syn.SCHEMA, seed=0)


def figures(node: Any) -> list[dict[str, Any]]:
    """Every Plotly figure with Evidently's abs/perc buttons in a JSON tree."""
    found = []
    if isinstance(node, dict):
        menus = node.get("layout", {}).get("updatemenus") if "data" in node else None
        labels = [[b.get("label") for b in m.get("buttons", [])] for m in menus or []]
        if ["abs", "perc"] in labels:
            found.append(node)
        for value in node.values():
            found += figures(value)
    elif isinstance(node, list):
        for item in node:
            found += figures(item)
    return found


def test_the_page_is_titled_with_the_model_version_and_window(
    monitored: tuple[MonitorSummary, Any], tmp_path: Path
) -> None:
    summary, snapshot = monitored
    html, _ = write_reports(snapshot, tmp_path, summary=summary)
    page = html.read_text(encoding="utf-8")

    title = "Monitor report: loan-default v3, 2026-11-19 00:00 UTC – 2026-11-19 03:20 UTC"
    assert f"<title>{title}</title>" in page
    dashboard = json.loads(_DATA_LINE.findall(page)[0])
    # Evidently draws the report's widgets as one group: the heading and the note open it.
    heading, rows = dashboard["widgets"][0]["widgets"][:2]
    assert [counter["label"] for counter in heading["params"]["counters"]] == [title]
    note = rows["params"]["text"]
    assert f"**{WINDOW_ROWS:,}** decisions in the window against **{REFERENCE_ROWS:,}**" in note


def test_distributions_open_on_shares_and_the_snapshot_keeps_counts(
    monitored: tuple[MonitorSummary, Any], tmp_path: Path
) -> None:
    summary, snapshot = monitored
    html, _ = write_reports(snapshot, tmp_path, summary=summary)
    shown = figures([json.loads(line) for line in _DATA_LINE.findall(html.read_text())])

    assert len(shown) >= len(syn.SCHEMA.features), "a distribution per feature at least"
    for figure in shown:
        perc = figure["layout"]["updatemenus"][0]["buttons"][1]["args"][0]["visible"]
        assert [trace["visible"] for trace in figure["data"]] == perc
        assert figure["layout"]["updatemenus"][0]["active"] == 1
        assert figure["layout"]["yaxis"]["title"]["text"] == "Percent"
    # The page is drawn from a copy: the snapshot (and its JSON) still opens on counts.
    original = figures(json.loads(snapshot.dumps()))
    assert original and all(figure["data"][0]["visible"] is True for figure in original)


def test_a_title_without_labels_says_what_is_unknown() -> None:
    assert report_title({}) == "Monitor report: model unknown, window unknown"
    start = datetime(2026, 12, 1, 23, 30, tzinfo=UTC).isoformat()
    end = "2026-12-02T01:30:00+02:00"
    assert report_title({"model_name": "m", "window_start": start, "window_end": end}) == (
        "Monitor report: m, 2026-12-01 23:30 UTC – 2026-12-01 23:30 UTC"
    )
