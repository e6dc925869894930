"""Errors reach the user as one line and exit code 1, not as a traceback.

MLflow, pydantic's errors and the domain's exceptions are imported when an error is explained,
not when the CLI starts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING

import typer

from cli.console import err_console

if TYPE_CHECKING:
    from loanops.settings import Settings


@cache
def clear_error_types() -> tuple[type[Exception], ...]:
    """The errors `clear_errors` turns into one line; Prefect's logged tracebacks for them are
    dropped.

    Besides what a user causes, this covers a broken environment (settings, an unreachable
    tracking server, a full disk): a traceback explains none of those better than its message.
    """
    from mlflow.exceptions import MlflowException
    from pydantic import ValidationError

    from loanops.data import UnknownDatasetError
    from loanops.promotion import PromotionError
    from loanops.validation import DataValidationError

    return (
        DataValidationError,
        UnknownDatasetError,
        PromotionError,
        ValidationError,
        MlflowException,
        ValueError,
        RuntimeError,
        OSError,  # includes FileNotFoundError and ConnectionError
    )


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
    import requests
    from mlflow.exceptions import MlflowException
    from pydantic import ValidationError

    from loanops.settings import Settings
    from loanops.validation import DataValidationError

    if isinstance(error, DataValidationError):
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
