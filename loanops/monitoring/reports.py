"""Where a monitor run's reports go: Evidently's HTML and JSON, and the typed summary.

Evidently's page has no heading of its own, and its distribution plots open on counts, where a
window of a few hundred decisions is a flat line beside thousands of reference rows. The page
written here opens with a title (model, version, time window) and the row counts, and each plot
that has Evidently's abs/perc buttons opens on "perc": each side as a share of its own rows.
Only the view changes: the statistics and tests are Evidently's, on the samples of the run.
"""

from __future__ import annotations

import copy
import html
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from loanops.monitoring.results import MonitorSummary

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

REPORT_HTML_FILE: Final = "report.html"
REPORT_JSON_FILE: Final = "report.json"
SUMMARY_FILE: Final = "summary.json"
_SHARE_BUTTONS: Final = ("abs", "perc")
"""The labels of the count/percent toggle Evidently puts on its distribution plots."""


def write_reports(
    result: Snapshot, folder: str | Path, *, summary: MonitorSummary | None = None
) -> tuple[Path, Path]:
    """Save Evidently's HTML and JSON reports (and the summary, if given) into a folder.

    Args:
        result: The snapshot `run_monitor` returned.
        folder: Folder to write into; created if missing, files in it replaced.
        summary: Also write it as `summary.json`, and give its row counts on the page.

    Returns:
        The paths of `report.html` and `report.json`.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    html_path, json_path = root / REPORT_HTML_FILE, root / REPORT_JSON_FILE
    html_path.write_text(report_html(result, summary), encoding="utf-8")
    json_path.write_text(result.json())
    if summary is not None:
        (root / SUMMARY_FILE).write_text(summary.model_dump_json(indent=2) + "\n")
    return html_path, json_path


def report_title(metadata: Mapping[str, Any]) -> str:
    """The page's title from the labels `run_monitor` gives Evidently (`WindowLabels`).

    >>> report_title({"model_name": "loan-default", "model_version": "3"})
    'Monitor report: loan-default v3, window unknown'
    """
    model = str(metadata.get("model_name") or "model unknown")
    version = metadata.get("model_version")
    start, end = metadata.get("window_start"), metadata.get("window_end")
    window = f"{_when(start)} – {_when(end)}" if start and end else "window unknown"
    return f"Monitor report: {model}{f' v{version}' if version else ''}, {window}"


def report_html(result: Snapshot, summary: MonitorSummary | None = None) -> str:
    """Evidently's page for `result`, with a title and the distributions shown as shares.

    The snapshot itself is left as it was: the page is drawn from a copy of its widgets.
    """
    from evidently.core.report import Snapshot
    from evidently.legacy.renderers.html_widgets import header_text, text_widget

    model = result.to_snapshot_model()
    title = report_title(model.metadata)
    widgets = copy.deepcopy(model.widgets)
    for figure in _figures(widgets):
        _open_on_shares(figure)
    heading = [header_text(label=title)]
    if summary is not None:
        heading.append(text_widget(text=_rows_note(summary)))
    page_model = copy.copy(model)
    page_model.widgets = [*heading, *widgets]
    page_model.name = title
    page = Snapshot.load_model(page_model).get_html_str(as_iframe=False)
    return page.replace("<head>", f"<head>\n    <title>{html.escape(title)}</title>", 1)


def _rows_note(summary: MonitorSummary) -> str:
    drift = summary.drift
    return (
        f"**{summary.rows:,}** decisions in the window against **{summary.reference_rows:,}** "
        f"reference rows; the drift tests compared samples of {drift.current_rows:,} and "
        f"{drift.reference_rows:,} rows. Distributions show each side as a share of its own "
        "rows (perc); the abs button shows counts."
    )


def _when(value: Any) -> str:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC" if moment.tzinfo else "%Y-%m-%d %H:%M")


def _figures(node: Any) -> Iterator[dict[str, Any]]:
    """Every Plotly figure (a dict with `data` and `layout`) inside Evidently's widgets."""
    if isinstance(node, dict):
        if isinstance(node.get("data"), list) and isinstance(node.get("layout"), dict):
            yield node
        for value in node.values():
            yield from _figures(value)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from _figures(item)
    elif hasattr(node, "__fields__"):  # Evidently's widget models (pydantic)
        yield from _figures(vars(node))


def _open_on_shares(figure: dict[str, Any]) -> None:
    """Show the "perc" state of a figure's abs/perc toggle, as its button would."""
    for menu in figure["layout"].get("updatemenus") or []:
        buttons = menu.get("buttons") or []
        if tuple(button.get("label") for button in buttons) != _SHARE_BUTTONS:
            continue
        traces, axes = buttons[1]["args"]
        visible = traces.get("visible", [])
        if len(visible) != len(figure["data"]):
            return  # not the figure the button was made for: leave it as Evidently drew it
        for trace, shown in zip(figure["data"], visible, strict=True):
            trace["visible"] = shown
        for axis, settings in axes.items():
            title = settings.get("title")
            figure["layout"].setdefault(axis, {})["title"] = (
                {"text": title} if isinstance(title, str) else title
            )
        menu["active"] = 1
        return
