"""The `loanops` command: run the flows and read the registry.

It lives in `flows/` because it is the operator's way into the pipeline: it may import flows and
the domain core, while `loanops/` and `serving/` never import it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import pandas as pd
import requests
import typer
from mlflow.exceptions import MlflowException
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from loanops import registry
from loanops.data import UnknownDatasetError, get_dataset
from loanops.promotion import PromotionError
from loanops.settings import Settings
from loanops.validation import DataValidationError

if TYPE_CHECKING:
    from flows.monitor import MonitorResult

app = typer.Typer(
    name="loanops",
    help="Loan-default models: train, gate, promote and inspect them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(
    help="Read the model registry and the promotion log.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
outcomes_app = typer.Typer(
    help="Delayed labels: whether decided loans defaulted.", no_args_is_help=True
)
app.add_typer(outcomes_app, name="outcomes")

console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")

# The errors `clear_errors` turns into one line; Prefect's logged tracebacks for them are dropped.
# Besides what a user causes, this covers a broken environment (settings, an unreachable tracking
# server, a full disk): a traceback explains none of those better than its message does.
CLEAR_ERRORS: tuple[type[Exception], ...] = (
    DataValidationError,
    UnknownDatasetError,
    PromotionError,
    ValidationError,
    MlflowException,
    ValueError,
    RuntimeError,
    OSError,  # includes FileNotFoundError and ConnectionError
)

DatasetOption = Annotated[
    str | None, typer.Option("--dataset", "-d", help="Dataset name (default: settings).")
]
RowsOption = Annotated[
    int | None, typer.Option(min=1, help="Rows to draw (generated) or subsample (fixed).")
]
SeedOption = Annotated[int | None, typer.Option(help="Seed for split, search and model.")]
TrialsOption = Annotated[int | None, typer.Option(min=1, help="Optuna trial budget.")]
TimeoutOption = Annotated[
    float | None, typer.Option("--timeout", min=1, help="Optuna time budget in seconds.")
]
DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        exists=True,
        dir_okay=False,
        help="Train on this CSV or Parquet file; it must follow the dataset's schema.",
    ),
]


@app.callback()
def main() -> None:
    """Prepare the process for the flows: runs before every command."""
    # Prefect creates its home folder but not that folder's parents; an embedded default such
    # as ./.loanops/prefect would otherwise fail with a timeout that hides the cause.
    prefect_home = os.environ.get("PREFECT_HOME")
    if prefect_home:
        Path(prefect_home).expanduser().mkdir(parents=True, exist_ok=True)


def fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


@contextmanager
def clear_errors() -> Iterator[None]:
    """Turn the errors in `CLEAR_ERRORS` into one line and exit code 1."""
    try:
        yield
    except CLEAR_ERRORS as error:
        raise fail(describe(error)) from None


def describe(error: Exception) -> str:
    """One line saying what went wrong, without a traceback."""
    if isinstance(error, DataValidationError):
        problems = "; ".join(str(p) for p in error.problems)
        return f"dataset {error.dataset!r} failed validation: {problems}"
    if isinstance(error, ValidationError):
        what = "settings" if error.title == Settings.__name__ else error.title
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or what}: {e['msg']}" for e in error.errors()
        )
        return f"invalid {what}: {details}"
    chain = causes(error)
    if any(isinstance(e, ConnectionError | requests.ConnectionError) for e in chain):
        root = chain[-1]
        reason = root.strerror if isinstance(root, OSError) and root.strerror else str(root)
        reason = reason or type(root).__name__
        uri = _configured_tracking_uri()
        if uri and any(isinstance(e, MlflowException | requests.RequestException) for e in chain):
            return f"cannot reach the MLflow tracking server at {uri}: {reason}"
        return f"connection failed: {reason}"
    if isinstance(error, MlflowException):
        return f"MLflow: {error.message}"
    return str(error) or type(error).__name__


def causes(error: BaseException) -> list[BaseException]:
    """`error` and what led to it, outermost first.

    Follows `__context__` as well as `__cause__`: MLflow raises its exception for a refused
    connection while handling the `requests` error, without `from`.
    """
    chain: list[BaseException] = []
    link: BaseException | None = error
    while link is not None and all(link is not seen for seen in chain):
        chain.append(link)
        link = link.__cause__ or link.__context__
    return chain


def _configured_tracking_uri() -> str | None:
    """The tracking URI the flows were given, when one was configured."""
    try:
        return Settings().tracking_uri or None
    except ValidationError:
        return None


def settings() -> Settings:
    with clear_errors():
        return Settings()


class _NoTracebackForClearErrors(logging.Filter):
    """Drop the traceback Prefect logs for the errors `clear_errors` explains in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], CLEAR_ERRORS):
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_prefect_tracebacks() -> None:
    quiet = _NoTracebackForClearErrors()
    loggers = [logging.getLogger(name) for name in logging.root.manager.loggerDict]
    for logger in [logging.getLogger("prefect"), *loggers]:
        if logger.name.startswith("prefect"):
            for handler in logger.handlers:
                if not any(isinstance(f, _NoTracebackForClearErrors) for f in handler.filters):
                    handler.addFilter(quiet)


def run_with_status(message: str, run: Callable[[], T]) -> T:
    _quiet_prefect_tracebacks()
    with clear_errors(), console.status(message, spinner="dots"):
        return run()


def check_dataset(name: str | None) -> None:
    if name is not None:
        with clear_errors():
            get_dataset(name)


def training_table(result: Any) -> Table:
    table = Table(title=f"{result.model_name} v{result.version}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    evaluation = result.evaluation
    rows = {
        "dataset": f"{result.dataset} ({result.rows:,} rows, sha256 {result.dataset_sha256[:12]})",
        "model": f"{result.family} {result.params}",
        "cv_roc_auc": f"{result.cv_roc_auc:.4f}",
        "test_roc_auc": (
            f"{evaluation.roc_auc:.4f} "
            f"(95 % CI {evaluation.roc_auc_lo:.4f} to {evaluation.roc_auc_hi:.4f})"
        ),
        "test KS / Brier / ECE": (
            f"{evaluation.ks:.3f} / {evaluation.brier:.4f} / {evaluation.ece:.4f}"
        ),
        "threshold": (
            f"{evaluation.threshold:.4f} (approves {evaluation.approval_rate:.1%}, "
            f"cost {evaluation.cost_per_loan:.3f} per loan)"
        ),
        "MLflow run": result.run_id,
    }
    for key, value in rows.items():
        table.add_row(key, value)
    return table


def promotion_table(result: Any) -> Table:
    table = Table(title=f"promotion: {result.outcome}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("challenger", f"v{result.challenger_version}")
    table.add_row("champion", f"v{result.champion_version}" if result.champion_version else "-")
    production = result.production_version
    table.add_row("production now", f"v{production}" if production else "-")
    table.add_row("reasons", "\n".join(result.reasons))
    return table


def training_parameters(
    dataset: str | None,
    rows: int | None,
    seed: int | None,
    trials: int | None,
    timeout: float | None,
    data: Path | None,
) -> dict[str, Any]:
    """The train and retrain flows' parameters from the shared command-line options."""
    check_dataset(dataset)
    return {
        "dataset": dataset,
        "rows": rows,
        "seed": seed,
        "trials": trials,
        "timeout_seconds": timeout,
        "data_path": str(data) if data else None,
    }


@app.command()
def train(
    dataset: DatasetOption = None,
    rows: RowsOption = None,
    seed: SeedOption = None,
    trials: TrialsOption = None,
    timeout: TimeoutOption = None,
    data: DataOption = None,
) -> None:
    """Tune, train, evaluate and register a candidate model version."""
    parameters = training_parameters(dataset, rows, seed, trials, timeout, data)
    from flows.train import train_flow

    result = run_with_status("training…", lambda: train_flow(**parameters))
    console.print(training_table(result))


@app.command()
def promote(
    version: Annotated[
        str | None, typer.Option(help="Challenger version (default: the newest).")
    ] = None,
) -> None:
    """Gate a version against the production champion and move the aliases if it passes."""
    from flows.promote import promote_flow

    result = run_with_status("gating…", lambda: promote_flow(version=version))
    console.print(promotion_table(result))


@app.command()
def retrain(
    dataset: DatasetOption = None,
    rows: RowsOption = None,
    seed: SeedOption = None,
    trials: TrialsOption = None,
    timeout: TimeoutOption = None,
    data: DataOption = None,
) -> None:
    """Train a candidate, gate it against the champion, and deploy it when a cluster is set."""
    parameters = training_parameters(dataset, rows, seed, trials, timeout, data)
    from flows.retrain import retrain_flow

    result = run_with_status("retraining…", lambda: retrain_flow(**parameters))
    console.print(training_table(result.training))
    console.print(promotion_table(result.promotion))
    if result.deployment is not None:
        console.print(deploy_table(result.deployment))
        if result.deployment.outcome == "rolled_back":
            raise typer.Exit(code=1)


def deploy_table(result: Any) -> Table:
    table = Table(title=f"deploy: {result.outcome.replace('_', ' ')}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("model", result.model_ref)
    table.add_row("namespace", result.namespace)
    for name, message in result.rollouts.items():
        table.add_row(name, message)
    production = result.production_version
    table.add_row("production now", f"v{production}" if production else "-")
    table.add_row("reasons", "\n".join(result.reasons))
    return table


@app.command()
def deploy(
    version: Annotated[
        str | None,
        typer.Option(
            help="The version to pin; it must hold the production alias (default: the one that "
            "does)."
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the JSON patches it would send, and send none."),
    ] = False,
) -> None:
    """Pin the production version on the serving Deployments; roll back if the rollout fails."""
    config = settings()
    if version is not None and not version.isdigit():
        raise fail(f"--version takes a version number such as 3, not {version!r}")
    if config.deploy_target != "kubernetes":
        raise fail(
            "no cluster is configured: set LOANOPS_DEPLOY_TARGET=kubernetes (and, outside the "
            "cluster, LOANOPS_KUBE_CONFIG to a kubeconfig file)"
        )
    from flows.deploy import JSON_PATCH, deploy_flow

    result = run_with_status(
        "reading the Deployments…" if dry_run else "deploying…",
        lambda: deploy_flow(version=version, dry_run=dry_run),
    )
    if dry_run:
        err_console.print(
            f"{result.model_ref}: the {JSON_PATCH} patch per Deployment in namespace "
            f"{result.namespace} (an empty one: already pinned); nothing was sent",
            highlight=False,
            soft_wrap=True,
        )
        # Plain JSON on stdout, for a pipe or a file.
        typer.echo(json.dumps(result.patches, indent=2))
        return
    console.print(deploy_table(result))
    if result.outcome == "rolled_back":
        raise typer.Exit(code=1)


@app.command()
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
        f"retraining on {config.dataset}…", lambda: retrain_flow(trials=trials)
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

    from flows.local_stack import redis, serving_stack, tour
    from loanops.data import load_dataset

    schema = get_dataset(config.dataset).schema
    applications = load_dataset(config.dataset, rows=200, seed=config.seed).frame
    amount = next(f for f in schema.features if f.minimum is not None and f.kind != "category")
    assert amount.minimum is not None
    refused_amount = amount.minimum - 1
    api_key = secrets.token_urlsafe(24)
    logs = config.home.resolve() / "logs"
    with (
        tempfile.TemporaryDirectory(prefix="loanops-demo-") as tmp,
        redis(config.redis_url, logs) as redis_url,
    ):
        env = {
            **os.environ,
            "LOANOPS_REDIS_URL": redis_url,
            "LOANOPS_API_KEYS": api_key,
            "LOANOPS_HOME": str(config.home.resolve()),
        }
        with contextlib.ExitStack() as services:
            with console.status("starting the API and a batch worker…"):
                url = services.enter_context(serving_stack(env, logs))
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


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the scoring API under uvicorn, with the model from LOANOPS_MODEL_REF."""
    settings()  # refuse bad settings in one line before uvicorn starts
    import uvicorn

    _serving_environment()
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        # Clients behind the ingress keep connections open; this bounds a slow drain on shutdown.
        timeout_graceful_shutdown=30,
    )


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    log_level: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run a Celery worker that scores batch-job chunks from the Redis at LOANOPS_REDIS_URL."""
    config = settings()
    if not config.redis_url:
        raise fail("LOANOPS_REDIS_URL is not set; the worker needs the job queue's Redis")
    _serving_environment()
    from serving.worker import run_worker

    run_worker(config, concurrency=concurrency, loglevel=log_level.upper())


@app.command()
def monitor(
    days: Annotated[float | None, typer.Option(min=0.01, help="Window length in days.")] = None,
    data: DataOption = None,
) -> None:
    """Drift of the production model's recent decisions (or a file) against its reference."""
    settings()
    from flows.monitor import monitor_flow

    data_path = str(data) if data else None
    result = run_with_status(
        "comparing decisions with the reference…",
        lambda: monitor_flow(days=days, data_path=data_path),
    )
    print_monitor(result)


def print_monitor(result: MonitorResult) -> None:
    """The headline table of a monitor run and where its report is."""
    summary = result.summary
    table = Table(title=f"monitor: {summary.model_name} v{summary.model_version}")
    table.add_column("what")
    table.add_column("value")
    table.add_row("rows (sampled for tests)", f"{summary.rows:,} ({summary.sample_rows:,})")
    table.add_row(
        "drifted features",
        f"{summary.drift.share_drifted:.0%}: {', '.join(summary.drift.drifted_features) or '-'}",
    )
    if summary.prediction is not None:
        table.add_row("score PSI", f"{summary.prediction.psi:.4f}")
    table.add_row(
        "data quality",
        "flagged" if summary.quality.flagged else "ok",
    )
    table.add_row("triggered", "; ".join(result.reasons) or "nothing")
    console.print(table)
    console.print(f"Report: {result.report_dir / 'report.html'} (MLflow run {result.run_id})")


@app.command()
def performance(
    days: Annotated[float | None, typer.Option(min=1, help="How far back, in days.")] = None,
) -> None:
    """AUC, KS, calibration and default rate of the production model on recorded outcomes."""
    settings()
    from flows.performance import performance_flow

    result = run_with_status("joining outcomes to decisions…", lambda: performance_flow(days=days))
    frame = result.summary.table()
    table = Table(title="performance by vintage")
    for column in frame.columns:
        table.add_column(str(column))
    for row in frame.itertuples(index=False):
        table.add_row(
            *("-" if pd.isna(v) else f"{v:.4f}" if isinstance(v, float) else str(v) for v in row)
        )
    console.print(table)
    console.print(
        f"Triggered: {'; '.join(result.reasons) or 'nothing'} (MLflow run {result.run_id})"
    )


@outcomes_app.command("load")
def load_outcomes(
    path: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="CSV or Parquet with request_id (or job_id and row), defaulted, [observed_at].",
        ),
    ],
    skip_unknown: Annotated[
        bool, typer.Option(help="Record the known ids and list the unknown ones, not refuse all.")
    ] = False,
) -> None:
    """Record which decided loans defaulted; the whole file or nothing, unless told otherwise."""
    config = settings()
    from loanops.decisions.database import create_engine_for, migrate
    from loanops.outcomes import load_outcomes_file, record_outcomes

    with clear_errors():
        outcomes = load_outcomes_file(path)
        migrate(config.decision_db_url)
        engine = create_engine_for(config.decision_db_url)
        try:
            report = record_outcomes(engine, outcomes, source="file", skip_unknown=skip_unknown)
        finally:
            engine.dispose()
    if report.refused:
        raise fail(report.summary)
    console.print(report.summary, highlight=False, soft_wrap=True)


def _serving_environment() -> None:
    # One OpenMP thread per process: two stalled single-row predictions now and then.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # A long-running service's log is no place for download progress bars.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def where_to_look(config: Settings) -> str:
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


@models_app.command("list")
def list_models() -> None:
    """Every registered version, its aliases and headline metrics."""
    config = settings()
    with clear_errors():
        client = registry.connect(config)
        versions = client.search_model_versions(f"name = '{config.model_name}'")
        # Search results leave out aliases; the registered model has them all.
        aliases: dict[str, list[str]] = {}
        if versions:
            model = client.get_registered_model(config.model_name)
            for alias, number in sorted(model.aliases.items()):
                aliases.setdefault(str(number), []).append(alias)
        table = Table(title=config.model_name)
        for column in ("version", "aliases", "created", "dataset", "cv AUC", "test AUC", "gate"):
            table.add_column(column)
        for version in sorted(versions, key=lambda v: int(v.version)):
            metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
            table.add_row(
                str(version.version),
                ", ".join(aliases.get(str(version.version), [])),
                _timestamp(version.creation_timestamp),
                version.tags.get("loanops.dataset", "-"),
                _metric(metrics, "cv_roc_auc"),
                _metric(metrics, "test_roc_auc"),
                version.tags.get("gate.outcome", "-"),
            )
    console.print(table)


@models_app.command()
def history() -> None:
    """The promotion log, oldest first: every gate decision, then every deploy outcome."""
    config = settings()
    with clear_errors():
        client = registry.connect(config)
        records = registry.history(client, config)
        deploys = registry.deploy_history(client, config)
    table = Table(title=f"{config.model_name}: promotion history")
    for column in ("when", "outcome", "challenger", "champion", "AUC (chal / champ)", "reasons"):
        table.add_column(column)
    for record in records:
        champion_auc = (record.champion_metrics or {}).get("roc_auc")
        table.add_row(
            record.decided_at,
            record.outcome,
            f"v{record.challenger_version}",
            f"v{record.champion_version}" if record.champion_version else "-",
            f"{record.challenger_metrics['roc_auc']:.4f} / "
            + (f"{champion_auc:.4f}" if champion_auc is not None else "-"),
            "\n".join(record.reasons),
        )
    console.print(table)
    if not records:
        console.print("no gate decisions yet")
    if deploys:
        rollouts = Table(title=f"{config.model_name}: deploy history")
        for column in ("when", "outcome", "version", "production after", "reasons"):
            rollouts.add_column(column)
        for deployed in deploys:
            after = deployed.production_version
            rollouts.add_row(
                deployed.deployed_at,
                deployed.outcome.replace("_", " "),
                f"v{deployed.version}",
                f"v{after}" if after else "-",
                "\n".join(deployed.reasons),
            )
        console.print(rollouts)


@models_app.command()
def show(version: Annotated[str, typer.Argument(help="Version number.")]) -> None:
    """One version: lineage tags, card, and metrics."""
    config = settings()
    with clear_errors():
        client = registry.connect(config)
        model_version = client.get_model_version(config.model_name, version)
        card = registry.model_card(client, model_version)
        metrics = client.get_run(model_version.run_id).data.metrics if model_version.run_id else {}
    table = Table(title=f"{config.model_name} v{version}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("aliases", ", ".join(model_version.aliases) or "-")
    table.add_row("run", model_version.run_id or "-")
    for key, value in sorted(model_version.tags.items()):
        table.add_row(key, value)
    table.add_row("family", f"{card.family} {card.params}")
    table.add_row("threshold", f"{card.threshold:.4f}")
    table.add_row(
        "cost matrix",
        f"false approve {card.cost_false_approve}, false decline {card.cost_false_decline}",
    )
    for name in sorted(metrics):
        if name.startswith(("cv_", "test_")):
            table.add_row(name, f"{metrics[name]:.4f}")
    console.print(table)


@models_app.command("card")
def model_card(
    version: Annotated[str, typer.Argument(help="Version number.")],
    out: Annotated[
        Path | None, typer.Option(help="Folder to write into (default: ./model-card-v<VERSION>).")
    ] = None,
) -> None:
    """Write a version's model card (Markdown, HTML and PNG plots) to a local folder."""
    config = settings()
    from loanops import card

    folder = out or Path(f"model-card-v{version}")
    with clear_errors():
        client = registry.connect(config)
        model_version = client.get_model_version(config.model_name, version)
        built = run_with_status(
            f"building the card of v{version}…",
            lambda: card.build_card(
                client,
                model_version,
                bootstrap_samples=config.bootstrap_samples,
                seed=config.seed,
            ),
        )
        markdown, page = card.write_card(built, folder)
    console.print(f"Model card of {config.model_name} v{version}: {page} ({markdown.name} beside)")


def _metric(metrics: dict[str, float], name: str) -> str:
    return f"{metrics[name]:.4f}" if name in metrics else "-"


def _timestamp(millis: int | None) -> str:
    if millis is None:
        return "-"
    return datetime.fromtimestamp(millis / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
