"""Links into the MLflow UI that land on the page a reader wants.

MLflow 3's UI opens an experiment on its GenAI overview (traces), an empty page for a model
built with scikit-learn; the runs table needs `workflowType=machine_learning` in the route.
"""

from __future__ import annotations

from urllib.parse import quote


def runs_url(ui_base: str, experiment_id: str) -> str:
    """The runs table of an experiment."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def run_url(ui_base: str, experiment_id: str, run_id: str) -> str:
    """One run's page."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def model_url(ui_base: str, model_name: str) -> str:
    """A registered model: its versions and their aliases."""
    return f"{ui_base.rstrip('/')}/#/models/{quote(model_name, safe='')}"


def promotion_log_url(ui_base: str, promotions_experiment_id: str) -> str:
    """The promotion log: the runs of the experiment holding one run per gate decision."""
    return runs_url(ui_base, promotions_experiment_id)
