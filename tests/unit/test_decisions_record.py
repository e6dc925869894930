"""The decision record refuses what it cannot be."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import pytest

import loanops.outcomes  # noqa: F401  (its table is part of Base.metadata and of the migrations)
from tests.factories import make_decision


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"decided_at": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"decision": "maybe"}, "decision must be one of"),
        ({"source": "cron"}, "source must be one of"),
        ({"probability": math.nan}, "probability must lie in"),
        ({"threshold": 1.5}, "threshold must lie in"),
        ({"request_id": ""}, "request_id"),
    ],
)
def test_an_invalid_decision_is_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_decision(1, **overrides)
