"""Errors reach the user as one line and exit code 1, not as a traceback.

MLflow, pydantic's errors and the domain's exceptions are imported when an error is explained,
not when the CLI starts.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

from cli.console import err_console

if TYPE_CHECKING:
    from loanops.settings import Settings


# The domain's and the libraries' errors that `clear_errors` explains, by module and name. Each
# is looked up only once its module is loaded: an error of a class never imported cannot have
# been raised, and importing MLflow (seconds) to explain a bad setting would cost more than the
# command itself.
EXPLAINED_ERRORS = (
    ("loanops.validation", "DataValidationError"),
    ("loanops.data", "UnknownDatasetError"),
    ("loanops.promotion", "PromotionError"),
    ("loanops.tune_workers", "WorkerDataError"),
    ("pydantic", "ValidationError"),
    ("mlflow.exceptions", "MlflowException"),
)


def loaded_error(module: str, name: str) -> type[Exception] | None:
    """The exception class `module.name` when that module is loaded, else None."""
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) and issubclass(found, Exception) else None


def clear_error_types() -> tuple[type[Exception], ...]:
    """The errors `clear_errors` turns into one line; Prefect's logged tracebacks for them are
    dropped.

    Besides what a user causes, this covers a broken environment (settings, an unreachable
    tracking server, a full disk): a traceback explains none of those better than its message.
    """
    loaded = (loaded_error(module, name) for module, name in EXPLAINED_ERRORS)
    # OSError includes FileNotFoundError and ConnectionError (requests' too).
    return (*(error for error in loaded if error is not None), ValueError, RuntimeError, OSError)


def fail(message: str) -> typer.Exit:
    """Print `message` as an error line; the `Exit` to raise, with code 1."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


@contextmanager
def clear_errors() -> Iterator[None]:
    """Turn the errors in `clear_error_types()` into one line and exit code 1."""
    try:
        yield
    except Exception as error:
        # typer's Exit is a RuntimeError: a command's own exit passes through as it is.
        if isinstance(error, clear_error_types()) and not isinstance(error, typer.Exit):
            raise fail(describe(error)) from None
        raise


def describe(error: Exception) -> str:
    """One line saying what went wrong, without a traceback."""
    from pydantic import ValidationError

    from loanops.settings import Settings

    data_error = loaded_error("loanops.validation", "DataValidationError")
    mlflow_error = loaded_error("mlflow.exceptions", "MlflowException")
    request_error = loaded_error("requests", "RequestException")
    connection_errors = tuple(
        e for e in (ConnectionError, loaded_error("requests", "ConnectionError")) if e is not None
    )
    if data_error is not None and isinstance(error, data_error):
        from loanops.validation import DataValidationError  # loaded already: costs nothing

        assert isinstance(error, DataValidationError)
        problems = "; ".join(str(p) for p in error.problems)
        return f"dataset {error.dataset!r} failed validation: {problems}"
    if isinstance(error, ValidationError):
        what = "settings" if error.title == Settings.__name__ else error.title
        # A grouped setting fails under its variable (training.LOANOPS_SEED): say `seed`, as
        # the flat settings did, the name the user set without its prefix.
        variables = Settings.environment_variables() if what == "settings" else {}

        def where(loc: tuple[int | str, ...]) -> str:
            known = variables.get(str(loc[-1])) if loc else None
            return known.flat_name if known else ".".join(str(p) for p in loc) or what

        details = "; ".join(f"{where(e['loc'])}: {e['msg']}" for e in error.errors())
        return f"invalid {what}: {details}"
    chain = causes(error)
    if any(isinstance(e, connection_errors) for e in chain):
        root = chain[-1]
        reason = root.strerror if isinstance(root, OSError) and root.strerror else str(root)
        reason = reason or type(root).__name__
        uri = _configured_tracking_uri()
        remote = tuple(e for e in (mlflow_error, request_error) if e is not None)
        if uri and any(isinstance(e, remote) for e in chain):
            return f"cannot reach the MLflow tracking server at {uri}: {reason}"
        return f"connection failed: {reason}"
    if mlflow_error is not None and isinstance(error, mlflow_error):
        return f"MLflow: {getattr(error, 'message', error)}"
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
    from pydantic import ValidationError

    from loanops.settings import Settings

    try:
        return Settings().tracking_uri or None
    except ValidationError:
        return None


def settings() -> Settings:
    """The settings from the environment; invalid ones end the command in one line."""
    from loanops.settings import Settings

    with clear_errors():
        return Settings()


def check_dataset(name: str) -> None:
    """Refuse an unknown dataset name in one line, before any flow or server starts."""
    from loanops.data import get_dataset

    with clear_errors():
        get_dataset(name)


class NoTracebackForClearErrors(logging.Filter):
    """Drop the traceback Prefect logs for the errors `clear_errors` explains in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], clear_error_types()):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_prefect_tracebacks() -> None:
    """Add `NoTracebackForClearErrors` to every handler of the Prefect loggers set up so far."""
    quiet = NoTracebackForClearErrors()
    loggers = [logging.getLogger(name) for name in logging.root.manager.loggerDict]
    for logger in [logging.getLogger("prefect"), *loggers]:
        if logger.name.startswith("prefect"):
            for handler in logger.handlers:
                if not any(isinstance(f, NoTracebackForClearErrors) for f in handler.filters):
                    handler.addFilter(quiet)
