"""`loanops train`, `promote`, `retrain` and `deploy`: the training side of the pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.console import console, err_console
from cli.errors import check_dataset, fail, run_with_status, settings
from cli.options import (
    DataOption,
    DatasetOption,
    RowsOption,
    SeedOption,
    TimeoutOption,
    TrialsOption,
)


def training_table(result: Any) -> Table:
    """A trained version: its data, model, cross-validated and test metrics, threshold."""
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
    """The gate's decision: challenger, champion, where production is now, and why."""
    table = Table(title=f"promotion: {result.outcome}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("challenger", f"v{result.challenger_version}")
    table.add_row("champion", f"v{result.champion_version}" if result.champion_version else "-")
    production = result.production_version
    table.add_row("production now", f"v{production}" if production else "-")
    table.add_row("reasons", "\n".join(result.reasons))
    return table


def deploy_table(result: Any) -> Table:
    """A deploy's outcome: the model, each rollout's last word, where production is now."""
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


def promote(
    version: Annotated[
        str | None, typer.Option(help="Challenger version (default: the newest).")
    ] = None,
) -> None:
    """Gate a version against the production champion and move the aliases if it passes."""
    from flows.promote import promote_flow

    result = run_with_status("gating…", lambda: promote_flow(version=version))
    console.print(promotion_table(result))


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
