"""Where a monitor run's reports go: Evidently's HTML and JSON, and the typed summary."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from loanops.monitoring.results import MonitorSummary

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

REPORT_HTML_FILE: Final = "report.html"
REPORT_JSON_FILE: Final = "report.json"
SUMMARY_FILE: Final = "summary.json"


def write_reports(
    result: Snapshot, folder: str | Path, *, summary: MonitorSummary | None = None
) -> tuple[Path, Path]:
    """Save Evidently's HTML and JSON reports (and the summary, if given) into a folder.

    Args:
        result: The snapshot `run_monitor` returned.
        folder: Folder to write into; created if missing, files in it replaced.
        summary: Also write it as `summary.json`.

    Returns:
        The paths of `report.html` and `report.json`.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    html_path, json_path = root / REPORT_HTML_FILE, root / REPORT_JSON_FILE
    result.save_html(str(html_path))
    json_path.write_text(result.json())
    if summary is not None:
        (root / SUMMARY_FILE).write_text(summary.model_dump_json(indent=2) + "\n")
    return html_path, json_path
