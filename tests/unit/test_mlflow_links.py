"""Links into the MLflow 3 UI (the browser test opens each one on a real server)."""

from __future__ import annotations

from loanops.mlflow_links import model_url, promotion_log_url, run_url, runs_url

UI = "http://127.0.0.1:5000/"


def test_experiment_links_ask_for_the_runs_view_not_the_genai_overview() -> None:
    assert runs_url(UI, "3") == (
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    )
    assert promotion_log_url(UI, "7") == runs_url(UI, "7")
    assert run_url(UI, "3", "abc123") == (
        "http://127.0.0.1:5000/#/experiments/3/runs/abc123?workflowType=machine_learning"
    )


def test_model_links_quote_the_name() -> None:
    assert model_url(UI, "loan-default") == "http://127.0.0.1:5000/#/models/loan-default"
    assert model_url(UI, "team/loan default", "4") == (
        "http://127.0.0.1:5000/#/models/team%2Floan%20default/versions/4"
    )
