"""`loanops demo`: the whole main job on embedded defaults, then where to look."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from pathlib import Path
from typing import Annotated

import typer

from cli.console import console
from cli.errors import clear_errors, run_with_status, settings
from cli.monitoring import print_monitor
from cli.options import TrialsOption
from cli.training import promotion_table, training_table
from loanops.data import get_dataset
from loanops.settings import Settings


def demo(
    trials: TrialsOption = None,
    serving: Annotated[
        bool, typer.Option(help="Also start the API and a worker, and score over REST and batch.")
    ] = True,
) -> None:
    """Run the whole main job on embedded defaults and say where to look."""
    config = settings()
    from flows.retrain import retrain_flow

    result = run_with_status(
        f"retraining on {config.training.dataset}…", lambda: retrain_flow(trials=trials)
    )
    console.print(training_table(result.training))
    console.print(promotion_table(result.promotion))
    if serving:
        with clear_errors():
            tour_serving(config)
            from flows.monitor import monitor_flow

            # The tour's decisions are in the log: the last hour holds them.
            monitored = run_with_status(
                "monitoring the decisions just logged against the reference…",
                lambda: monitor_flow(days=1 / 24),
            )
    console.print(where_to_look(config), soft_wrap=True)
    if serving:
        print_monitor(monitored)


def tour_serving(config: Settings) -> None:
    """Start the API and a worker, score one application and one batch file, stop them."""
    import secrets
    import tempfile

    from cli.stack.tour import serving_stack, tour
    from loanops.data import load_dataset

    schema = get_dataset(config.training.dataset).schema
    applications = load_dataset(config.training.dataset, rows=200, seed=config.training.seed).frame
    amount = next(f for f in schema.features if f.minimum is not None and f.kind != "category")
    assert amount.minimum is not None
    refused_amount = amount.minimum - 1
    api_key = secrets.token_urlsafe(24)
    logs = config.home.resolve() / "logs"
    env = {
        **os.environ,
        "LOANOPS_API_KEYS": api_key,
        "LOANOPS_HOME": str(config.home.resolve()),
    }
    with (
        tempfile.TemporaryDirectory(prefix="loanops-demo-") as tmp,
        contextlib.ExitStack() as services,
    ):
        with console.status("starting the API and a batch worker…"):
            url = services.enter_context(serving_stack(env, logs, config.batch.redis_url))
        seen = run_with_status(
            f"scoring over REST and as a batch job at {url}…",
            lambda: tour(
                url,
                applications[schema.feature_names],
                api_key,
                Path(tmp),
                (amount.name, refused_amount),
            ),
        )
        console.print("stopping the API and the worker…")
    console.print(f"[bold]POST /v1/predict[/] → {json.dumps(seen.prediction, indent=2)}")
    job = seen.job
    console.print(
        f"[bold]Batch job {job['id']}[/]: {job['status']}, {job['rows_valid']} rows scored, "
        f"{job['rows_rejected']} rejected, {seen.result_rows} rows in the result\n"
        f"{seen.result_preview}"
    )
    console.print(f"Service logs: {logs}")


def where_to_look(config: Settings) -> str:
    """Commands that open the MLflow and Prefect UIs and read the registry."""
    lines = ["", "[bold]Where to look[/]"]
    if config.tracking_uri:
        lines.append(f"  MLflow: {config.mlflow_uri}")
    else:
        store = shlex.quote(config.mlflow_uri)
        artifacts = shlex.quote(config.artifact_location)
        lines.append(
            f"  MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {store} "
            f"--default-artifact-root {artifacts}   → http://127.0.0.1:5000"
        )
    prefect_home = os.environ.get("PREFECT_HOME")
    prefix = f"PREFECT_HOME={shlex.quote(prefect_home)} " if prefect_home else ""
    lines.append(f"  Prefect UI: {prefix}.venv/bin/prefect server start   → http://127.0.0.1:4200")
    lines.append("  Registry:   .venv/bin/loanops models list; .venv/bin/loanops models history")
    return "\n".join(lines)
