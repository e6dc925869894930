"""What every flow shares: settings from the flow's parameters, and retries as data."""

from __future__ import annotations

from typing import Any

import requests
from mlflow.exceptions import MlflowException
from prefect.states import State
from pydantic import ValidationError

from loanops.settings import TRACKING_RETRY_COUNT, Settings


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


def tracking_retry_delays(retries: int) -> list[float]:
    """The waits before each retry of a tracking call: `LOANOPS_TRACKING_RETRY_DELAY_SECONDS`.

    Prefect calls this once per task, when a flow module defines it, so the delays are those of
    the environment the process started with.

    Args:
        retries: the task's number of retries (Prefect passes it; the setting has its own).

    Returns:
        The waits in seconds; Prefect repeats the last one for any retry past them.
    """
    try:
        return list(Settings().tracking_retry_delay_seconds)
    except ValidationError:
        # Importing a flow must not fail on a bad setting: the flow reports it, in one line,
        # as soon as it builds its settings (settings_for), before any task can retry.
        default = Settings.model_fields["tracking_retry_delay_seconds"].default
        return list(default)


# Calls to the tracking server can fail transiently; computation and bad input are never retried.
TRACKING_RETRIES: dict[str, Any] = {
    "retries": TRACKING_RETRY_COUNT,
    "retry_delay_seconds": tracking_retry_delays,
    "retry_condition_fn": transient_tracking_error,
}
