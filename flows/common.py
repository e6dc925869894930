"""What every flow shares: settings from the flow's parameters, and retries as data."""

from __future__ import annotations

from typing import Any

import requests
from mlflow.exceptions import MlflowException
from prefect.states import State

from loanops.settings import Settings


def settings_for(**overrides: Any) -> Settings:
    """Settings from the environment, with the flow's non-None parameters on top.

    A group's parameters come as a dict, `training={"seed": seed}`; None in it is left out too.
    """

    def given(values: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in values.items() if value is not None}

    values: dict[str, Any] = {
        key: given(value) if isinstance(value, dict) else value
        for key, value in given(overrides).items()
    }
    return Settings(**values)


def transient_tracking_error(task: Any, task_run: Any, state: State) -> bool:
    """Retry only what a second attempt can fix: a lost connection or a 5xx from MLflow."""
    error = state.data
    if isinstance(error, MlflowException):
        return error.get_http_status_code() >= 500
    return isinstance(error, ConnectionError | TimeoutError | requests.RequestException)


# Calls to the tracking server can fail transiently; computation and bad input are never retried.
TRACKING_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [2, 5, 15],
    "retry_condition_fn": transient_tracking_error,
}
