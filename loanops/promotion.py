"""The promotion gate: a pure decision over the challenger's and the champion's scores.

Both models are scored on the same frozen test data before this is called. The gate is written
so that its reasons read as a sentence in the MLflow UI and in `loanops models history`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_FLOAT_SLACK = 1e-12


class PromotionError(RuntimeError):
    """Raised when the gate cannot run at all, as opposed to running and saying no."""


@dataclass(frozen=True)
class GatePolicy:
    """Absolute floors, and how much AUC a challenger may give up against the champion."""

    min_auc: float
    max_ece: float
    auc_tolerance: float


@dataclass(frozen=True)
class GateScores:
    """One model version's gate metrics on the frozen test data."""

    version: str
    roc_auc: float
    ece: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GateDecision:
    """Whether to promote, and every reason that led there."""

    promote: bool
    reasons: tuple[str, ...]
    challenger: GateScores
    champion: GateScores | None
    policy: GatePolicy

    @property
    def outcome(self) -> str:
        return "promoted" if self.promote else "rejected"

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons)


def decide(challenger: GateScores, champion: GateScores | None, policy: GatePolicy) -> GateDecision:
    """Apply the gate.

    The challenger is promoted only if it clears both absolute floors and, when there is a
    champion, its AUC is no more than `auc_tolerance` below the champion's.
    """
    passed: list[str] = []
    failed: list[str] = []

    def check(ok: bool, text: str) -> None:
        (passed if ok else failed).append(text)

    check(
        challenger.roc_auc >= policy.min_auc,
        f"AUC {challenger.roc_auc:.4f} {'>=' if challenger.roc_auc >= policy.min_auc else '<'} "
        f"floor {policy.min_auc:.4f}",
    )
    calibrated = challenger.ece <= policy.max_ece
    check(
        calibrated,
        f"calibration error {challenger.ece:.4f} {'<=' if calibrated else '>'} "
        f"ceiling {policy.max_ece:.4f}",
    )
    if champion is None:
        passed.append("no champion: the floors alone decide")
    else:
        change = challenger.roc_auc - champion.roc_auc
        # A drop of exactly the tolerance passes, even where float subtraction overshoots it.
        within = change >= -policy.auc_tolerance - _FLOAT_SLACK
        check(
            within,
            f"AUC change {change:+.4f} vs champion v{champion.version} "
            f"{'within' if within else 'beyond'} tolerance -{policy.auc_tolerance:.4f}",
        )
    reasons = tuple(failed) if failed else tuple(passed)
    return GateDecision(
        promote=not failed,
        reasons=reasons,
        challenger=challenger,
        champion=champion,
        policy=policy,
    )
