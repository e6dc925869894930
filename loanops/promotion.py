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

from loanops.directions import DirectionEffect
from loanops.fairness import AdverseImpact, Unchecked

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
    direction_tolerance: float = 1e-4
    """How far the mean PD may fall when a feature moves toward its declared risk."""
    min_adverse_impact_ratio: float = 0.8
    """Floor on each fair-lending segment's ratio of approval rates, least over most favoured."""
    adverse_impact_tolerance: float = 0.05
    """How far a segment's ratio may fall below the champion's on the same loans."""


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
    directions: tuple[DirectionEffect, ...] = ()
    """The mean-PD change of moving each feature with a declared risk toward it, on these rows."""
    adverse_impact: tuple[AdverseImpact, ...] = ()
    """Each fair-lending segment's adverse impact ratio at the version's threshold."""
    unchecked: tuple[Unchecked, ...] = ()
    """Fair-lending segments these rows cannot judge, and why."""

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
    floor, the calibration-error ceiling and the calibration-in-the-large bound, its mean PD
    falls by no more than `direction_tolerance` when any feature moves toward its declared risk,
    each fair-lending segment's adverse impact ratio clears `min_adverse_impact_ratio` (a
    segment whose column the gate data lacks fails; one with too few loans per group is noted),
    and, when there is a champion, its AUC is no more than `auc_tolerance` below the champion's,
    and each adverse impact ratio no more than `adverse_impact_tolerance` below the champion's,
    on every test set they were both scored on.

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
    contradicted = _direction_failures(challenger.directions, policy)
    failed.extend(contradicted)
    if challenger.directions and not contradicted:
        passed.append(_directions_hold(challenger.directions, policy))
    for impact in challenger.adverse_impact:
        fair = impact.ratio >= policy.min_adverse_impact_ratio - _FLOAT_SLACK
        check(
            fair,
            f"adverse impact: {_impact(impact)} "
            f"{'>=' if fair else '<'} floor {policy.min_adverse_impact_ratio:.2f}",
        )
    for unchecked in challenger.unchecked:
        check(not unchecked.blocking, f"adverse impact: {unchecked.segment} {unchecked.why}")
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
        champion_impact = {i.segment: i for i in comparison.champion.adverse_impact}
        for impact in comparison.challenger.adverse_impact:
            if impact.segment not in champion_impact:
                continue
            shift = impact.ratio - champion_impact[impact.segment].ratio
            kept = shift >= -policy.adverse_impact_tolerance - _FLOAT_SLACK
            check(
                kept,
                f"adverse impact: {impact.segment} ratio change {shift:+.3f} vs champion "
                f"v{comparison.champion.version}{where} {'within' if kept else 'beyond'} "
                f"tolerance -{policy.adverse_impact_tolerance:.2f}",
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


def _direction_failures(effects: Sequence[DirectionEffect], policy: GatePolicy) -> list[str]:
    return [
        f"direction: PD falls as {e.feature} {e.moved} by {_amount(e.step)} "
        f"(mean {e.mean_change:+.4f} over {e.rows:,} gate loans); risk is declared {e.risk}"
        for e in effects
        if e.mean_change < -policy.direction_tolerance
    ]


def _directions_hold(effects: Sequence[DirectionEffect], policy: GatePolicy) -> str:
    weakest = min(effects, key=lambda e: e.mean_change)
    if len(effects) == 1:
        which, change = f"{weakest.feature}, the one declared feature,", "change"
    else:
        which, change = f"each of the {len(effects)} declared features", "smallest change"
    return (
        f"directions: mean PD holds within tolerance -{policy.direction_tolerance:.4f} as "
        f"{which} moves toward risk on {weakest.rows:,} gate loans "
        f"({change} {weakest.mean_change:+.4f}, {weakest.feature})"
    )


def _impact(impact: AdverseImpact) -> str:
    text = (
        f"{impact.segment} approval ratio {impact.ratio:.2f} ({impact.least_favoured!r} vs "
        f"{impact.most_favoured!r}; 95 % interval {impact.low:.2f} to {impact.high:.2f})"
    )
    if impact.left_out:
        text += f", leaving out thin groups {', '.join(map(repr, impact.left_out))}"
    return text


def _amount(step: float) -> str:
    return f"{step:,.0f}" if abs(step) >= 100 else f"{step:.3g}"


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
