"""The process every `loanops` command runs in: the libraries' embedded defaults, and their logs.

Run inside `make` or straight from `.venv/bin/loanops`, a command behaves the same: Prefect keeps
its state under the loanops home (where the stack's Prefect UI reads it), nothing phones home,
and MLflow draws no download bars. A variable the user set always wins.

By default a command that runs flows sends the libraries' log lines (Prefect's task runs,
MLflow's migrations, warnings) to `<home>/logs/loanops.log`, and the terminal shows only what the
command was asked for; `loanops --verbose` leaves them on the terminal as the libraries print
them. The services (`serve`, `worker`, `stack`) always log to the terminal.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

LOG_FILE_NAME = "loanops.log"


def embedded_defaults(home: Path) -> dict[str, str]:
    """The library settings a loanops command uses unless the environment sets them."""
    return {
        "PREFECT_HOME": str(home / "prefect"),
        # The temporary server's first start in a fresh home migrates its database; on 2 busy
        # cores that took longer than Prefect's default 20 s wait.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


def quiet_defaults() -> dict[str, str]:
    """What keeps the libraries off the terminal, so that their records reach the log file."""
    return {
        # MLflow otherwise gives its loggers a stderr handler of their own and stops them
        # propagating to the root logger, past the log file.
        "MLFLOW_CONFIGURE_LOGGING": "false",
        # Prefect's console handler (task-run lines, "Starting temporary server") stays
        # configured but passes nothing below CRITICAL; the records still propagate to root.
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
    }


def loanops_home() -> Path:
    """The home the settings name, or their default when they do not validate.

    Invalid settings are reported by the command itself, in one line; preparing the process
    must not fail first, or `--help` would.
    """
    from pydantic import ValidationError

    from loanops.settings import Settings

    try:
        return Settings().home.resolve()
    except ValidationError:
        return Path(os.environ.get("LOANOPS_HOME", ".loanops")).resolve()


def prepare(*, quiet: bool) -> Path | None:
    """Set the embedded defaults and, when `quiet`, send the libraries' logs to the log file.

    Returns:
        The log file's path when `quiet`, else None (the libraries log as they would).
    """
    home = loanops_home()
    defaults = embedded_defaults(home)
    if quiet:
        defaults |= quiet_defaults()
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    # Prefect creates its home folder but not that folder's parents; a missing parent would
    # surface as a startup timeout that hides the cause.
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    if not quiet:
        return None
    log_file = home / "logs" / LOG_FILE_NAME
    log_to_file(log_file)
    # Python warnings (MLflow's integer-schema hint, say) become records for the file.
    logging.captureWarnings(True)
    return log_file


def log_to_file(path: Path) -> None:
    """Append every INFO-and-above record of this process to `path`.

    Installed on the root logger before Prefect is imported, so Prefect's own setup sees a
    handler of the user's and leaves the root logger to it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
