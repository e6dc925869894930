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
ARMS: Final = frozenset({"champion", "challenger"})
"""The values `Decision.arm` may take: whose decision the applicant received."""


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
        arm: Whose decision the applicant received: ``"champion"`` (the model above, always the
            one the ``production`` alias served) or ``"challenger"``.
        challenger_version: The challenger's version, when a challenger scored the application
            too; the challenger fields are all set or all None.
        challenger_threshold: The challenger's threshold.
        challenger_probability: The challenger's default probability.
        challenger_decision: The challenger's ``"approve"`` or ``"decline"``.
        challenger_reasons: The challenger's reasons, shaped as `reasons`.
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
    arm: str = "champion"
    challenger_version: str | None = None
    challenger_threshold: float | None = None
    challenger_probability: float | None = None
    challenger_decision: str | None = None
    challenger_reasons: Sequence[Mapping[str, Any]] | None = None

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
        if self.arm not in ARMS:
            raise ValueError(f"arm must be one of {sorted(ARMS)}, not {self.arm!r}")
        if self.challenger_version is not None or self.arm == "challenger":
            self._check_challenger()
        elif any(
            value is not None
            for value in (
                self.challenger_threshold,
                self.challenger_probability,
                self.challenger_decision,
                self.challenger_reasons,
            )
        ):
            raise ValueError("challenger fields need the challenger_version that made them")

    def _check_challenger(self) -> None:
        # The applicant's decision must be recoverable: an arm without its scores is no record.
        if not self.challenger_version:
            raise ValueError("a challenger's decision needs its challenger_version")
        if self.challenger_decision not in DECISIONS:
            raise ValueError(
                f"challenger_decision must be one of {sorted(DECISIONS)}, "
                f"not {self.challenger_decision!r}"
            )
        for name in ("challenger_probability", "challenger_threshold"):
            value = getattr(self, name)
            if value is None or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], not {value!r}")
        if self.challenger_reasons is None:
            raise ValueError("challenger_reasons must be given (a list, may be empty)")
