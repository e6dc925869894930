"""Command-line options that several commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
