"""`loanops demo`: the whole main job on embedded defaults, then where to look."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.console import console
from cli.environment import LOG_FILE_NAME
from cli.errors import check_dataset, clear_errors, settings
from cli.monitoring import print_monitor
from cli.options import TrialsOption
from cli.progress import run_with_status
from cli.training import promotion_table, training_table

if TYPE_CHECKING:
    from cli.stack.tour import ServingTour
    from flows.train import TrainResult
    from loanops.settings import Settings

MLFLOW_UI = "http://127.0.0.1:5000"
PREFECT_UI = "http://127.0.0.1:4200"
STACK_API = "http://127.0.0.1:8000"
EXAMPLE_APPLICATION = Path("examples/application.json")


def demo(
    trials: TrialsOption = None,
    serving: Annotated[
        bool, typer.Option(help="Also start the API and a worker, and score over REST and batch.")
    ] = True,
) -> None:
    """Run the whole main job on embedded defaults and say where to look.

    Retrains (tune, train, register, gate, promote), then starts the API and a batch worker,
    scores one application over REST and a file as a batch job, and runs the monitor over the
    decisions just logged.

    Example: loanops demo --trials 10
    """
    config = settings()
    check_dataset(config.training.dataset)
    budget = trials or config.training.tune_trials
    console.print(
        f"loanops demo: {config.training.dataset}, {budget} trials; the libraries' logs go to "
        f"{shown(log_file(config))}",
        highlight=False,
        soft_wrap=True,
    )
    from flows.retrain import retrain_flow

    result = run_with_status(
        f"retraining on {config.training.dataset}…", lambda: retrain_flow(trials=trials)
    )
    for table in (training_table(result.training), promotion_table(result.promotion)):
        console.print()
        console.print(table)
    report: Path | None = None
    if serving:
        with clear_errors(), shadow_challenger(config, trials) as challenger:
            print_tour(tour_serving(config))
            from cli.comparison import print_compare
            from flows.compare import compare_flow
            from flows.monitor import monitor_flow

            compared = run_with_status(
                f"comparing v{challenger.version} with the champion on the tour's decisions…",
                lambda: compare_flow(days=1 / 24, challenger_version=challenger.version),
            )
            console.print()
            print_compare(compared.report)

            # The tour's decisions are in the log: the last hour holds them.
            monitored = run_with_status(
                "monitoring the decisions just logged against the reference…",
                lambda: monitor_flow(days=1 / 24),
            )
        console.print()
        print_monitor(monitored, with_report=False)
        report = monitored.report_dir / "report.html"
    console.print(where_to_look(config, result.training.version, report), soft_wrap=True)


@contextlib.contextmanager
def shadow_challenger(config: Settings, trials: int | None) -> Iterator[TrainResult]:
    """Train a second candidate on another sample, attach it as the challenger for the block.

    The API follows the challenger alias, so the tour's applications are scored by both models
    (shadow: the applicant gets the champion's decision). The alias is removed afterwards, so
    the home is left with the champion alone.
    """
    from flows.train import train_flow
    from loanops import registry

    seed = config.training.seed + 1
    challenger = run_with_status(
        f"training a second candidate (seed {seed}) to shadow the champion…",
        lambda: train_flow(seed=seed, trials=trials),
    )
    alias = config.serving.challenger_alias
    client = registry.connect(config)
    client.set_registered_model_alias(config.model_name, alias, challenger.version)
    console.print(
        f"\nchallenger: {challenger.model_name} v{challenger.version} ({challenger.family}, "
        f"seed {seed}, test ROC AUC {challenger.evaluation.roc_auc:.4f}) attached as "
        f"@{alias}, in shadow",
        highlight=False,
        soft_wrap=True,
    )
    try:
        yield challenger
    finally:
        client.delete_registered_model_alias(config.model_name, alias)


def tour_serving(config: Settings) -> ServingTour:
    """Start the API and a worker, score one application and one batch file, stop them."""
    import secrets
    import tempfile

    from cli.stack.tour import serving_stack, tour
    from loanops.data import get_dataset, load_dataset

    schema = get_dataset(config.training.dataset).schema
    applications = load_dataset(config.training.dataset, rows=200, seed=config.training.seed).frame
    amount = next(f for f in schema.features if f.minimum is not None and f.kind != "category")
    assert amount.minimum is not None
    refused_amount = amount.minimum - 1
    api_key = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "LOANOPS_API_KEYS": api_key,
        "LOANOPS_HOME": str(config.home.resolve()),
    }
    logs = config.home.resolve() / "logs"
    with (
        tempfile.TemporaryDirectory(prefix="loanops-demo-") as tmp,
        contextlib.ExitStack() as services,
    ):
        url = run_with_status(
            "starting the API and a batch worker…",
            lambda: services.enter_context(serving_stack(env, logs, config.batch.redis_url)),
        )
        return run_with_status(
            f"scoring over REST and as a batch job at {url}…",
            lambda: tour(
                url,
                applications[schema.feature_names],
                api_key,
                Path(tmp),
                (amount.name, refused_amount),
            ),
        )


def print_tour(seen: ServingTour) -> None:
    """What the API answered, in a few lines: the decision, its reasons, the batch job."""
    prediction: dict[str, Any] = seen.prediction
    codes = ", ".join(reason["code"] for reason in prediction.get("reasons", [])) or "-"
    job = seen.job
    console.print("\n[bold]served[/] by the API and a batch worker (started for the tour, stopped)")
    console.print(
        f"  POST /v1/predict, each of {seen.result_rows - 1} applications; the first → "
        f"{prediction['decision']}, PD "
        f"{prediction['probability_of_default']:.4f} (threshold {prediction['threshold']:.4f}); "
        f"reasons: {codes}",
        highlight=False,
        soft_wrap=True,
    )
    shadow = f", shadowed by v{job['challenger_version']}" if job.get("challenger_version") else ""
    console.print(
        f"  batch job {job['job_id']}: {job['status']}, {job['rows_valid']} rows scored, "
        f"{job['rows_rejected']} rejected{shadow}; the last rows of its result:",
        highlight=False,
        soft_wrap=True,
    )
    console.print(seen.result_preview, highlight=False)


def log_file(config: Settings) -> Path:
    return config.home.resolve() / "logs" / LOG_FILE_NAME


def shown(path: Path) -> str:
    """`path` relative to the working folder when it is inside it: shorter to read and copy."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def where_to_look(config: Settings, version: str, report: Path | None) -> str:
    """Where the demo's results are: the UIs with links that land, the card, the API, the logs."""
    from loanops import registry
    from loanops.mlflow_links import model_url, promotion_log_url, runs_url

    client = registry.connect(config)
    training = client.get_experiment_by_name(config.experiment_name)
    promotions = client.get_experiment_by_name(config.gate.experiment_name)
    uri = config.tracking_uri or ""
    remote = uri if uri.startswith(("http://", "https://")) else None
    ui = remote or MLFLOW_UI
    venv = shown(Path(sys.executable).parent)
    lines = ["", "[bold]Where to look[/]"]
    if remote is None:
        store = shlex.quote(config.mlflow_uri)
        artifacts = shlex.quote(config.artifact_location)
        lines.append(
            f"  MLflow UI      {venv}/mlflow ui --backend-store-uri {store} "
            f"--default-artifact-root {artifacts}"
        )
    if training is not None:
        lines.append(f"    runs         {runs_url(ui, training.experiment_id)}")
    lines.append(f"    model        {model_url(ui, config.model_name)}")
    if promotions is not None:
        lines.append(f"    gate log     {promotion_log_url(ui, promotions.experiment_id)}")
    prefect_home = shlex.quote(os.environ["PREFECT_HOME"])
    lines += [
        f"  Prefect UI     PREFECT_HOME={prefect_home} {venv}/prefect server start → {PREFECT_UI}",
        f"  All of them    make stack (MLflow {MLFLOW_UI}, Prefect {PREFECT_UI}, API "
        f"{STACK_API}/docs); make stack-down",
        f"  Registry       {venv}/loanops models list | history | card {version} (the model "
        f"card, into model-card-v{version}/model_card.html)",
    ]
    if report is not None:
        lines.append(f"  Drift report   {shown(report)}")
    lines += [
        f"  Score one      curl -s -H 'X-API-Key: dev' -H 'Content-Type: application/json' "
        f"-d @{EXAMPLE_APPLICATION} {STACK_API}/v1/predict   (after make stack)",
        f"  Logs           {shown(log_file(config))}",
    ]
    return "\n".join(lines)
