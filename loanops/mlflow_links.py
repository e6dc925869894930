"""Links into the MLflow 3 UI that land on the page a reader wants.

MLflow 3 opens an experiment on its GenAI overview ("Traces 0, No data available") unless the
link names the classic workflow: ``workflowType=machine_learning`` lands on the runs table. The
routes are the UI's own (``mlflow/server/js``, MLflow 3.17): ``#/experiments/:id/runs``,
``#/experiments/:id/runs/:runUuid``, ``#/models/:modelName`` and
``#/models/:modelName/versions/:version``. The browser test opens each one.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

WORKFLOW_QUERY: Final = "workflowType=machine_learning"
"""Keeps the MLflow 3 UI on the classic runs view instead of its GenAI overview."""


def _base(ui_base: str) -> str:
    return ui_base.rstrip("/")


def _segment(value: str) -> str:
    # Model names may hold spaces or slashes; each is one segment of the UI's hash route.
    return quote(value, safe="")


def runs_url(ui_base: str, experiment_id: str) -> str:
    """The runs table of an experiment.

    Args:
        ui_base: The MLflow UI's address, e.g. ``http://127.0.0.1:5000``.
        experiment_id: The experiment's id (not its name).
    """
    return f"{_base(ui_base)}/#/experiments/{_segment(experiment_id)}/runs?{WORKFLOW_QUERY}"


def run_url(ui_base: str, experiment_id: str, run_id: str) -> str:
    """One run's page (its parameters, metrics and artifacts)."""
    return (
        f"{_base(ui_base)}/#/experiments/{_segment(experiment_id)}/runs/{_segment(run_id)}"
        f"?{WORKFLOW_QUERY}"
    )


def model_url(ui_base: str, model_name: str, version: str | None = None) -> str:
    """A registered model's page (its versions and aliases), or one version's page."""
    url = f"{_base(ui_base)}/#/models/{_segment(model_name)}"
    return url if version is None else f"{url}/versions/{_segment(version)}"


def promotion_log_url(ui_base: str, experiment_id: str) -> str:
    """The promotion log: the runs of the gate's experiment (``loan-default-promotions``).

    Args:
        ui_base: The MLflow UI's address.
        experiment_id: The id of the experiment `loanops.promotion_log` writes to.
    """
    return runs_url(ui_base, experiment_id)
