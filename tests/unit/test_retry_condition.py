"""Tracking tasks retry what a second attempt can fix, and nothing else."""

from __future__ import annotations

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INTERNAL_ERROR,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)
from prefect.states import Failed

from flows.common import TRACKING_RETRIES, transient_tracking_error
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


def test_retry_policy_is_data() -> None:
    assert TRACKING_RETRIES["retries"] == len(TRACKING_RETRIES["retry_delay_seconds"])
    assert TRACKING_RETRIES["retry_condition_fn"] is transient_tracking_error
