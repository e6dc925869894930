"""The `loanops` Typer app: every command group, gathered in one place."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from cli import demo, models, monitoring, serving, training
from cli.stack import commands as stack

app = typer.Typer(
    name="loanops",
    help="Loan-default models: train, gate, promote and inspect them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """Prepare the process for the flows: runs before every command."""
    # Prefect creates its home folder but not that folder's parents; an embedded default such
    # as ./.loanops/prefect would otherwise fail with a timeout that hides the cause.
    prefect_home = os.environ.get("PREFECT_HOME")
    if prefect_home:
        Path(prefect_home).expanduser().mkdir(parents=True, exist_ok=True)


app.add_typer(models.models_app, name="models")
app.add_typer(monitoring.outcomes_app, name="outcomes")
app.add_typer(stack.app, name="stack")
app.command()(training.train)
app.command()(training.promote)
app.command()(training.retrain)
app.command()(training.deploy)
app.command()(demo.demo)
app.command()(serving.serve)
app.command()(serving.worker)
app.command()(monitoring.monitor)
app.command()(monitoring.performance)
