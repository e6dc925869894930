"""Tracking and Kubernetes tasks retry what a second attempt can fix, and nothing else."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INTERNAL_ERROR,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)
from prefect import flow, task
from prefect.states import Failed, State

from flows import promote
from flows.common import TRACKING_RETRIES, tracking_retry_delays, transient_tracking_error
from flows.deploy.kube import KUBE_RETRIES, DeployError, KubeApiError
from loanops.promotion import PromotionError
from loanops.validation import DataValidationError, Problem


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ConnectionRefusedError("tracking server down"), True),
        (TimeoutError("read timed out"), True),
        (requests.ConnectionError("reset by peer"), True),
        (MlflowException("overloaded", error_code=TEMPORARILY_UNAVAILABLE), True),
        (MlflowException("boom", error_code=INTERNAL_ERROR), True),
        (MlflowException("no such version", error_code=RESOURCE_DOES_NOT_EXIST), False),
        (PromotionError("no versions to promote"), False),
        (DataValidationError("lending_club", [Problem("x", "null values", 3)]), False),
        (ValueError("a bug"), False),
    ],
)
def test_only_transient_errors_are_retried(error: Exception, retried: bool) -> None:
    assert transient_tracking_error(None, None, Failed(data=error)) is retried


@pytest.mark.parametrize(
    ("policy", "error", "attempts"),
    [
        (TRACKING_RETRIES, ConnectionRefusedError("tracking server down"), 4),
        (TRACKING_RETRIES, PromotionError("no versions to promote"), 1),
        (KUBE_RETRIES, KubeApiError("overloaded", 503), 4),
        (KUBE_RETRIES, DeployError("no cluster is configured"), 1),
    ],
)
def test_prefect_retries_a_transient_error_and_stops_on_a_refusal(
    policy: dict[str, Any], error: Exception, attempts: int
) -> None:
    """The policy as Prefect applies it to a task: the condition's signature included."""
    calls: list[int] = []

    @task(**{**policy, "retry_delay_seconds": 0})
    def call_that_fails() -> None:
        calls.append(1)
        raise error

    @flow
    def pipeline() -> State:
        return call_that_fails(return_state=True)

    final = pipeline(return_state=True)

    assert final.is_failed()
    assert len(calls) == attempts


@pytest.mark.usefixtures("no_loanops_environment")
def test_tracking_retry_delays_are_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert tracking_retry_delays(3) == [2.0, 5.0, 15.0]
    monkeypatch.setenv("LOANOPS_TRACKING_RETRY_DELAY_SECONDS", "[0]")
    assert tracking_retry_delays(3) == [0.0]
    # A bad setting leaves the defaults, for the flow to report when it reads its settings.
    monkeypatch.setenv("LOANOPS_TRACKING_RETRY_DELAY_SECONDS", "[-1]")
    assert tracking_retry_delays(3) == [2.0, 5.0, 15.0]


def test_a_flows_tasks_wait_as_the_setting_said_when_they_were_defined() -> None:
    """The test session's environment sets no delays: the tasks keep the defaults."""
    assert promote.resolve_versions.retries == 3
    assert promote.resolve_versions.retry_delay_seconds == [2.0, 5.0, 15.0]
