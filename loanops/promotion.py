"""The promotion gate: a pure decision over the challenger's and the champion's scores.

Both models are scored on the same frozen test data before this is called: the challenger's test
split, and the champion's own when it differs, so a challenger cannot pick the data it is judged
on. The gate is written so that its reasons read as sentences in the MLflow UI and in
`loanops models history`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

# A drop of exactly the tolerance passes, even where float subtraction overshoots it.
_FLOAT_SLACK = 1e-12


class PromotionError(RuntimeError):
    """Raised when the gate cannot run at all, as opposed to running and saying no."""


@dataclass(frozen=True)
class GatePolicy:
    """Absolute floors, and how much AUC a challenger may give up against the champion."""

    min_auc: float
    max_ece: float
    auc_tolerance: float
    max_calibration_z: float = 3.0
    """How many standard errors the mean PD may sit from the observed default rate."""
    min_gate_positives: int = 30
    """Fewest defaults the gate data must hold for the comparison to mean anything."""


@dataclass(frozen=True)
class GateScores:
    """One model version's gate metrics on one frozen test set."""

    version: str
    roc_auc: float
    ece: float
    mean_pd: float
    default_rate: float
    rows: int
    positives: int
    pd_variance: float
    """Mean of p·(1 − p) over the rows: the Bernoulli variance the model itself predicts."""
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def calibration_z(self) -> float:
        """Calibration in the large: mean PD minus the default rate, in standard errors.

        If the PDs were right, the default count would have mean Σp and variance Σp(1 − p), so
        the gap is measured against the spread the model itself predicts (an O/E test).
        """
        spread = math.sqrt(max(self.pd_variance, 1e-12) / self.rows)
        return (self.mean_pd - self.default_rate) / spread


@dataclass(frozen=True)
class Comparison:
    """Challenger and champion scored on the same test set."""

    data: str
    challenger: GateScores
    champion: GateScores


@dataclass(frozen=True)
class GateDecision:
    """Whether to promote, and every reason that led there."""

    promote: bool
    reasons: tuple[str, ...]
    challenger: GateScores
    champion: GateScores | None
    policy: GatePolicy
    champion_version: str | None = None
    comparisons: tuple[Comparison, ...] = ()

    @property
    def outcome(self) -> str:
        return "promoted" if self.promote else "rejected"

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons)


def decide(
    challenger: GateScores,
    champion: GateScores | None,
    policy: GatePolicy,
    *,
    also: Sequence[Comparison] = (),
) -> GateDecision:
    """Apply the gate.

    The challenger is promoted only if its gate data holds enough defaults, it clears the AUC
    floor, the calibration-error ceiling and the calibration-in-the-large bound, and, when there
    is a champion, its AUC is no more than `auc_tolerance` below the champion's on every test
    set they were both scored on.

    Args:
        challenger: the challenger on its own frozen test split.
        champion: the champion on that same split, or None when there is no champion.
        policy: the thresholds.
        also: further comparisons, such as both versions on the champion's test split.

    Returns:
        The decision; on rejection its reasons are the failed checks only.
    """
    passed: list[str] = []
    failed: list[str] = []

    def check(ok: bool, text: str) -> None:
        (passed if ok else failed).append(text)

    enough = challenger.positives >= policy.min_gate_positives
    check(
        enough,
        f"gate data holds {challenger.positives} defaults, "
        f"{'at least' if enough else 'fewer than'} the {policy.min_gate_positives} needed",
    )
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
    z = challenger.calibration_z
    in_line = abs(z) <= policy.max_calibration_z
    check(
        in_line,
        f"mean PD {challenger.mean_pd:.4f} vs default rate {challenger.default_rate:.4f}, "
        f"{z:+.1f} standard errors, {'within' if in_line else 'beyond'} "
        f"±{policy.max_calibration_z:g}",
    )
    comparisons: list[Comparison] = []
    if champion is None:
        passed.append("no champion: the floors alone decide")
    else:
        comparisons.append(Comparison("", challenger, champion))
    comparisons.extend(also)
    for comparison in comparisons:
        change = comparison.challenger.roc_auc - comparison.champion.roc_auc
        within = change >= -policy.auc_tolerance - _FLOAT_SLACK
        where = f" on {comparison.data}" if comparison.data else ""
        check(
            within,
            f"AUC change {change:+.4f} vs champion v{comparison.champion.version}{where} "
            f"{'within' if within else 'beyond'} tolerance -{policy.auc_tolerance:.4f}",
        )
    reasons = tuple(failed) if failed else tuple(passed)
    return GateDecision(
        promote=not failed,
        reasons=reasons,
        challenger=challenger,
        champion=champion,
        policy=policy,
        champion_version=champion.version if champion else None,
        comparisons=tuple(also),
    )


def refuse(
    reason: str,
    challenger: GateScores,
    champion_version: str | None,
    policy: GatePolicy,
) -> GateDecision:
    """A rejection that needs no comparison: the reason alone settles it."""
    return GateDecision(
        promote=False,
        reasons=(reason,),
        challenger=challenger,
        champion=None,
        policy=policy,
        champion_version=champion_version,
    )
