"""The decision record: one scoring decision as the serving tier made it, checked on creation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

DECISIONS: Final = frozenset({"approve", "decline"})
"""The values `Decision.decision` may take."""
SOURCES: Final = frozenset({"api", "batch"})
"""The values `Decision.source` may take."""


@dataclass(frozen=True, slots=True)
class Decision:
    """One scoring decision, as the serving tier made it.

    Attributes:
        request_id: Unique id of the request (one per scored application); the primary key.
        decided_at: When the decision was made; timezone-aware (stored and read back in UTC).
        model_name: Registered model name.
        model_version: Registered model version that scored.
        threshold: Probability at or above which the application is declined.
        inputs: The validated application, JSON-able (numbers, strings, None).
        probability: The model's default probability.
        decision: ``"approve"`` or ``"decline"``.
        reasons: Adverse-action reasons, ``[{"code": ..., "text": ..., "impact": float}]``; may
            be empty.
        source: ``"api"`` or ``"batch"``.
        job_id: The batch job that made the decision, if any.
    """

    request_id: str
    decided_at: datetime
    model_name: str
    model_version: str
    threshold: float
    inputs: Mapping[str, Any]
    probability: float
    decision: str
    reasons: Sequence[Mapping[str, Any]]
    source: str = "api"
    job_id: str | None = None

    def __post_init__(self) -> None:
        if not self.request_id:
            raise ValueError("request_id must be non-empty")
        if self.decided_at.tzinfo is None or self.decided_at.utcoffset() is None:
            raise ValueError("decided_at must be timezone-aware")
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {sorted(DECISIONS)}, not {self.decision!r}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {sorted(SOURCES)}, not {self.source!r}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must lie in [0, 1], not {self.probability!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], not {self.threshold!r}")
