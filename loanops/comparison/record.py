"""The compare report in MLflow: a `live_comparison` run under the challenger's version.

The run sits in the promotions experiment beside the gate's decisions, tagged as
`loanops.promotion_log.live_comparison` looks for it (record kind, model, challenger version,
and ``loanops.record_complete`` written last, so a run cut short is never read): the
maker-checker's approval request shows the newest one's metrics, which are the report's
headline numbers. The JSON and the HTML page are its artifacts; the challenger's registered
version, when it exists, carries a tag pointing at the page.
"""

from __future__ import annotations

from typing import Final

from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from loanops.comparison.render import render_html
from loanops.comparison.report import ComparisonReport
from loanops.promotion_log import RECORD_KIND_TAG
from loanops.registry import ensure_experiment
from loanops.settings import Settings

RECORD_KIND: Final = "live_comparison"
ARTIFACT_FOLDER: Final = "live_comparison"
JSON_ARTIFACT: Final = f"{ARTIFACT_FOLDER}/report.json"
HTML_ARTIFACT: Final = f"{ARTIFACT_FOLDER}/report.html"
VERSION_TAG: Final = "live_comparison"
"""Tag on the challenger's model version: the URI of its latest compare page."""


def record_comparison(
    client: MlflowClient, settings: Settings, report: ComparisonReport, *, recorded_by: str = ""
) -> str:
    """Log the report as a complete `live_comparison` run; return the run's id.

    Raises:
        ValueError: The report is of another model than the settings'.
    """
    if report.model_name != settings.model_name:
        raise ValueError(
            f"the report compares {report.model_name!r} but the settings name "
            f"{settings.model_name!r}; the approval request would never find it"
        )
    experiment_id = ensure_experiment(client, settings.gate.experiment_name, settings)
    champions = ",".join(report.champion_versions)
    run = client.create_run(
        experiment_id,
        run_name=f"v{report.challenger_version} live comparison vs v{champions}",
        tags={
            RECORD_KIND_TAG: RECORD_KIND,
            "loanops.model_name": report.model_name,
            "loanops.challenger_version": report.challenger_version,
            "loanops.champion_version": champions,
            "loanops.decided_by": recorded_by,
            "loanops.window_start": _stamp(report.window_start),
            "loanops.window_end": _stamp(report.window_end),
        },
    )
    run_id = run.info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric(name, value, 0, 0) for name, value in report.headline_metrics().items()],
    )
    client.log_text(run_id, report.model_dump_json(indent=2), JSON_ARTIFACT)
    client.log_text(run_id, render_html(report), HTML_ARTIFACT)
    client.set_tag(run_id, "loanops.record_complete", "true")
    client.set_terminated(run_id)
    _tag_version(client, report, f"runs:/{run_id}/{HTML_ARTIFACT}")
    return str(run_id)


def _stamp(value: object) -> str:
    return "" if value is None else str(value)


def _tag_version(client: MlflowClient, report: ComparisonReport, uri: str) -> None:
    """Point the challenger's version at its page; a version not in this registry is skipped."""
    try:
        client.set_model_version_tag(report.model_name, report.challenger_version, VERSION_TAG, uri)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
