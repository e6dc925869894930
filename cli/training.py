"""`loanops train`, `promote`, `retrain` and `deploy`: the training side of the pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.console import console, err_console, summary_table
from cli.errors import check_dataset, fail, settings
from cli.options import (
    DatasetOption,
    RowsOption,
    SeedOption,
    TimeoutOption,
    TrainingDataOption,
    TrialsOption,
)
from cli.progress import run_with_status


def describe_params(params: dict[str, Any]) -> str:
    """Hyperparameters as `name=value`, floats to four significant digits."""
    return ", ".join(
        f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
        for name, value in params.items()
    )


def training_table(result: Any) -> Table:
    """A trained version: its data, model, cross-validated and test metrics, threshold."""
    table = summary_table(f"trained: {result.model_name} v{result.version}")
    evaluation = result.evaluation
    rows = {
        "dataset": f"{result.dataset} ({result.rows:,} rows, sha256 {result.dataset_sha256[:12]})",
        "model": f"{result.family} ({describe_params(result.params)})",
        "cv / test ROC AUC": (
            f"{result.cv_roc_auc:.4f} / {evaluation.roc_auc:.4f} "
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
    """The gate's decision: challenger, champion, where production is now, and why."""
    champion = f"v{result.champion_version}" if result.champion_version else "none"
    production = f"v{result.production_version}" if result.production_version else "none"
    table = summary_table(
        f"promotion: {result.outcome} (challenger v{result.challenger_version}, champion "
        f"{champion}; production is {production})"
    )
    for number, reason in enumerate(result.reasons, start=1):
        table.add_row("reasons" if number == 1 else "", reason)
    return table


def deploy_table(result: Any) -> Table:
    """A deploy's outcome: the model, each rollout's last word, where production is now."""
    table = summary_table(f"deploy: {result.outcome.replace('_', ' ')}")
    table.add_row("model", result.model_ref)
    table.add_row("namespace", result.namespace)
    for name, message in result.rollouts.items():
        table.add_row(name, message)
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
    """The train and retrain flows' parameters from the shared command-line options.

    The settings and the dataset are checked here, before a flow starts a Prefect server, so a
    mistake in either ends the command in one line within about a second.
    """
    config = settings()
    check_dataset(dataset or config.training.dataset)
    return {
        "dataset": dataset,
        "rows": rows,
        "seed": seed,
        "trials": trials,
        "timeout_seconds": timeout,
        "data_path": str(data) if data else None,
    }


def train(
    dataset: DatasetOption = None,
    rows: RowsOption = None,
    seed: SeedOption = None,
    trials: TrialsOption = None,
    timeout: TimeoutOption = None,
    data: TrainingDataOption = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="RUN_ID",
            help="Resume this unfinished training run: its shared study (LOANOPS_TUNE_STORAGE_URL) "
            "goes on to the budget with the trials it has.",
        ),
    ] = None,
) -> None:
    """Tune, train, evaluate and register a candidate model version.

    Example: loanops train --dataset synthetic --rows 20000 --trials 10
    """
    parameters = {
        **training_parameters(dataset, rows, seed, trials, timeout, data),
        "resume_run_id": resume,
    }
    from flows.train import train_flow

    result = run_with_status("training…", lambda: train_flow(**parameters))
    console.print(training_table(result))


def tune_worker(
    run_id: Annotated[str, typer.Argument(help="The training run whose shared study to join.")],
    worker: Annotated[
        int, typer.Option(min=0, help="This worker's index; it offsets the sampler's seed.")
    ] = 0,
    data: TrainingDataOption = None,
) -> None:
    """Pull trials from a training run's shared Optuna study until its budget is met.

    The train flow starts them (LOANOPS_TUNE_WORKERS); start one to add a machine to a search.

    Example: loanops tune-worker 6ffe7ece2e414562b06a6cea09bfd428 --worker 2
    """
    config = settings()
    from loanops.tune_workers import run_worker

    run_worker(config, run_id, worker, str(data) if data else None)


RequestedByOption = Annotated[
    str | None,
    typer.Option(
        "--requested-by",
        help="Who asks for the promotion; with maker-checker on they cannot approve it "
        "(default: your OS user).",
    ),
]


def promote(
    version: Annotated[
        str | None, typer.Option(help="Challenger version (default: the newest).")
    ] = None,
    requested_by: RequestedByOption = None,
) -> None:
    """Gate a version against the production champion and move the aliases if it passes.

    With LOANOPS_PROMOTION_MAKER_CHECKER=true a passed gate waits for someone else's
    `loanops models approve VERSION` (or the Prefect UI) before the aliases move.

    Example: loanops promote --version 3
    """
    config = settings()
    from flows.promote import promote_flow

    status = "gating (a pass waits for approval)…" if config.gate.maker_checker else "gating…"
    result = run_with_status(
        status, lambda: promote_flow(version=version, requested_by=requested_by)
    )
    console.print(promotion_table(result))


def retrain(
    dataset: DatasetOption = None,
    rows: RowsOption = None,
    seed: SeedOption = None,
    trials: TrialsOption = None,
    timeout: TimeoutOption = None,
    data: TrainingDataOption = None,
    requested_by: RequestedByOption = None,
) -> None:
    """Train a candidate, gate it against the champion, and deploy it when a cluster is set.

    Example: loanops retrain --trials 20
    """
    parameters = {
        **training_parameters(dataset, rows, seed, trials, timeout, data),
        "requested_by": requested_by,
    }
    from flows.retrain import retrain_flow

    result = run_with_status("retraining…", lambda: retrain_flow(**parameters))
    console.print(training_table(result.training))
    console.print(promotion_table(result.promotion))
    if result.deployment is not None:
        console.print(deploy_table(result.deployment))
        if result.deployment.outcome == "rolled_back":
            raise typer.Exit(code=1)


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
    """Pin the production version on the serving Deployments; roll back if the rollout fails.

    Example: loanops deploy --dry-run
    """
    config = settings()
    if version is not None and not version.isdigit():
        raise fail(f"--version takes a version number such as 3, not {version!r}")
    if config.kube.deploy_target != "kubernetes":
        raise fail(
            "no cluster is configured: set LOANOPS_DEPLOY_TARGET=kubernetes (and, outside the "
            "cluster, LOANOPS_KUBE_CONFIG to a kubeconfig file)"
        )
    from flows.deploy.flow import deploy_flow
    from flows.deploy.kube import JSON_PATCH

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
