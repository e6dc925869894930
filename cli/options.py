"""Command-line options that several commands share, with the settings' defaults in their help.

An option left out falls back to its setting (`LOANOPS_<NAME>`), and that to the settings'
default; the help shows both, read from the settings models themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel

from loanops.settings import TrainingSettings

# The datasets `loanops.data` defines, named here so that `--help` need not import pandas to
# list them; tests/unit/test_cli_help.py checks them against the catalogue.
KNOWN_DATASETS = ("lending_club", "synthetic")


def setting_default(
    field: str, unset: str = "none", group: type[BaseModel] = TrainingSettings
) -> str:
    """`$LOANOPS_<FIELD>, else <default>` for a setting, as the help shows it.

    Args:
        field: the settings field the option falls back to.
        unset: what a default of None means, in words.
        group: the settings group holding `field`.
    """
    info = group.model_fields[field]
    default = unset if info.default is None else str(info.default)
    return f"${info.validation_alias}, else {default}"


DatasetOption = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        "-d",
        help=f"Dataset to train on: {' or '.join(KNOWN_DATASETS)}, or the path of a "
        "declaration file (.yaml).",
        show_default=setting_default("dataset"),
    ),
]
RowsOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Rows to draw (a generated dataset) or to subsample (a fixed one).",
        show_default=setting_default("dataset_rows", unset="the dataset's own size"),
    ),
]
SeedOption = Annotated[
    int | None,
    typer.Option(
        help="Seed for the split, the search and the model.", show_default=setting_default("seed")
    ),
]
TrialsOption = Annotated[
    int | None,
    typer.Option(min=1, help="Optuna trial budget.", show_default=setting_default("tune_trials")),
]
TimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        min=1,
        help="Optuna time budget in seconds; tuning stops at whichever budget runs out first.",
        show_default=setting_default("tune_timeout_seconds", unset="no time limit"),
    ),
]
TrainingDataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        exists=True,
        dir_okay=False,
        help="Train on this CSV or Parquet file instead of the dataset's own rows; it must "
        "follow the dataset's schema.",
        show_default="the dataset's own rows",
    ),
]
