"""`python -m cli`: the `loanops` command without its entry-point script."""

from cli.app import app

app()
