"""The `loanops` Typer app: every command group, gathered in one place.

Each command module imports its heavy dependencies (MLflow, Prefect, pandas) inside its
commands, so that `--help` and the registry reads start quickly.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli import batch, comparison, demo, models, monitoring, serving, training
from cli.environment import prepare
from cli.stack import commands as stack

app = typer.Typer(
    name="loanops",
    help="Loan-default models: train, gate, promote, serve and monitor them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


# Long-running services log to the terminal (a pod's log), never to a file of the CLI's.
SERVICE_COMMANDS = frozenset({"serve", "worker", "stack"})


@app.callback()
def main(
    context: typer.Context,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show the libraries' log lines (Prefect, MLflow) on the terminal; by "
            "default they go only to <home>/logs/loanops.log.",
        ),
    ] = False,
) -> None:
    """Prepare the process for the flows: runs before every command."""
    prepare(quiet=not verbose and context.invoked_subcommand not in SERVICE_COMMANDS)


app.add_typer(models.models_app, name="models")
app.add_typer(batch.batch_app, name="batch")
app.add_typer(monitoring.outcomes_app, name="outcomes")
app.add_typer(stack.app, name="stack")
app.command()(training.train)
app.command()(training.promote)
app.command(name="tune-worker")(training.tune_worker)
app.command()(training.retrain)
app.command()(training.deploy)
app.command()(demo.demo)
app.command()(serving.serve)
app.command()(serving.worker)
app.command()(monitoring.monitor)
app.command()(monitoring.performance)
app.command()(comparison.compare)
