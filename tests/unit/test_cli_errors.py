"""CLI errors: one line each, and Prefect's logged traceback dropped for exactly the same set."""

from __future__ import annotations

import logging
import sys

import pytest
import typer
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ValidationError

from cli.errors import NoTracebackForClearErrors, clear_error_types, clear_errors, describe
from loanops.promotion import PromotionError
from loanops.settings import Settings
from tests.services import free_port

pytestmark = pytest.mark.usefixtures("no_loanops_environment")


def refused_by_a_tracking_server(monkeypatch: pytest.MonkeyPatch) -> tuple[str, MlflowException]:
    """What MLflow raises when nothing listens at the tracking URI."""
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(MlflowException) as raised:
        MlflowClient(tracking_uri=uri).search_experiments()
    return uri, raised.value


def test_refused_connection_names_the_configured_tracking_uri(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri, error = refused_by_a_tracking_server(monkeypatch)
    monkeypatch.setenv("LOANOPS_TRACKING_URI", uri)

    assert (
        describe(error) == f"cannot reach the MLflow tracking server at {uri}: Connection refused"
    )


def test_refused_connection_behind_another_error_still_names_the_tracking_uri(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri, error = refused_by_a_tracking_server(monkeypatch)
    monkeypatch.setenv("LOANOPS_TRACKING_URI", uri)
    try:
        raise PromotionError("loan-default v3 does not exist") from error
    except PromotionError as wrapped:
        message = describe(wrapped)

    assert message == f"cannot reach the MLflow tracking server at {uri}: Connection refused"


def test_a_bare_connection_error_is_one_line_without_a_tracking_uri() -> None:
    assert describe(ConnectionRefusedError(111, "Connection refused")) == (
        "connection failed: Connection refused"
    )


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (RuntimeError("tuning finished without a single complete trial; raise the budget"),
         "tuning finished without a single complete trial; raise the budget"),
        (PermissionError(13, "Permission denied", "/srv/models"),
         "[Errno 13] Permission denied: '/srv/models'"),
        (MlflowException("Registered Model with name=x not found"),
         "MLflow: Registered Model with name=x not found"),
        (RuntimeError(), "RuntimeError"),
    ],
)  # fmt: skip
def test_environment_failures_are_described_by_their_message(
    error: Exception, message: str
) -> None:
    assert describe(error) == message


def test_a_validation_error_outside_settings_is_named_for_its_model() -> None:
    class Card(BaseModel):
        threshold: float

    with pytest.raises(ValidationError) as raised:
        Card.model_validate({"threshold": "high"})

    assert describe(raised.value).startswith("invalid Card: threshold: Input should be a valid")


def test_invalid_settings_keep_their_wording(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOANOPS_SEED", "-1")
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None)  # type: ignore[call-arg]

    assert describe(raised.value).startswith("invalid settings: seed: Input should be greater")


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("x"),
        ConnectionRefusedError("x"),
        OSError("x"),
        MlflowException("x"),
        ValueError("x"),
        PromotionError("x"),
        FileNotFoundError("x"),
    ],
)
def test_clear_errors_exits_1_and_the_log_filter_drops_the_traceback(error: Exception) -> None:
    with pytest.raises(typer.Exit) as exited, clear_errors():
        raise error
    assert exited.value.exit_code == 1

    try:
        raise error
    except Exception:
        record = logging.LogRecord("prefect", logging.ERROR, __file__, 1, "x", (), sys.exc_info())
    assert NoTracebackForClearErrors().filter(record)
    assert record.exc_info is None and record.exc_text is None


def test_a_bug_outside_the_set_keeps_its_traceback() -> None:
    assert not issubclass(KeyError, clear_error_types())
    try:
        raise KeyError("a bug")
    except KeyError:
        record = logging.LogRecord("prefect", logging.ERROR, __file__, 1, "x", (), sys.exc_info())
    assert NoTracebackForClearErrors().filter(record)
    assert record.exc_info is not None
