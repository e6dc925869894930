"""What the two models decide on the same applicants, before any outcome is known.

- agreement: the share of applicants both approve or both decline;
- PD shift: the challenger's PD less the champion's, applicant by applicant;
- approval rates of both per value of each segment the feature schema declares (the model
  card's segments: a segment whose column the decisions lack is left out);
- expected cost of each model's decisions under the settings' cost matrix. With no outcomes the
  cost is expected under a PD, and each model's PD is an opinion: both models' decisions are
  priced under both PDs, so a reader sees whether the challenger looks cheaper only by its own
  lights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from loanops.card import segments
from loanops.comparison.paired import Pairs
from loanops.comparison.swaps import Distribution, distribution
from loanops.evaluate import CostMatrix
from loanops.schema import Segment

Side = Literal["champion", "challenger"]


class PdShift(BaseModel):
    """The challenger's PD less the champion's over the same applicants."""

    model_config = ConfigDict(frozen=True)

    difference: Distribution
    champion_mean_pd: float
    challenger_mean_pd: float
    correlation: float | None
    """Pearson correlation of the two PDs; None when either is constant."""


class SegmentApproval(BaseModel):
    """Both models' approval rates in one value of one segment."""

    model_config = ConfigDict(frozen=True)

    segment: str
    value: str
    rows: int
    champion_approval_rate: float
    challenger_approval_rate: float


class ExpectedCost(BaseModel):
    """Cost per application of one model's decisions, expected under each model's PD.

    Approving costs ``PD × false_approve``, declining ``(1 − PD) × false_decline``.
    """

    model_config = ConfigDict(frozen=True)

    decisions_of: Side
    under_champion_pd: float
    under_challenger_pd: float


def agreement_rate(pairs: Pairs) -> float:
    """Share of applicants on whom both models decide alike."""
    if pairs.rows == 0:
        return float("nan")
    return float(np.mean(pairs.champion_approves == pairs.challenger_approves))


def pd_shift(pairs: Pairs) -> PdShift:
    """How the challenger's PDs differ from the champion's on the same applicants."""
    champion, challenger = pairs.champion_pd, pairs.challenger_pd
    constant = len(champion) < 2 or champion.std() == 0 or challenger.std() == 0
    return PdShift(
        difference=distribution(challenger - champion),
        champion_mean_pd=float(champion.mean()),
        challenger_mean_pd=float(challenger.mean()),
        correlation=None if constant else float(np.corrcoef(champion, challenger)[0, 1]),
    )


def segment_approvals(pairs: Pairs, declared: Sequence[Segment]) -> list[SegmentApproval]:
    """Both models' approval rates per value of each declared segment the decisions carry.

    Applicants with no value for a segment are reported under ``missing``, as on the model card.
    """
    rows: list[SegmentApproval] = []
    for name, labels in segments(pairs.frame, declared).items():
        values = labels.fillna("missing").astype(str).to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            rows.append(
                SegmentApproval(
                    segment=name,
                    value=value,
                    rows=int(mask.sum()),
                    champion_approval_rate=float(pairs.champion_approves[mask].mean()),
                    challenger_approval_rate=float(pairs.challenger_approves[mask].mean()),
                )
            )
    return rows


def cost_under(approves: np.ndarray, pd: np.ndarray, costs: CostMatrix) -> float:
    """Expected cost per application of `approves` if `pd` were each applicant's true PD."""
    if len(pd) == 0:
        return float("nan")
    cost = np.where(approves, pd * costs.false_approve, (1.0 - pd) * costs.false_decline)
    return float(cost.mean())


def expected_costs(pairs: Pairs, costs: CostMatrix) -> list[ExpectedCost]:
    """Each model's decisions priced under the champion's PD and under the challenger's."""
    decisions: tuple[tuple[Side, np.ndarray], ...] = (
        ("champion", pairs.champion_approves),
        ("challenger", pairs.challenger_approves),
    )
    return [
        ExpectedCost(
            decisions_of=side,
            under_champion_pd=cost_under(approves, pairs.champion_pd, costs),
            under_challenger_pd=cost_under(approves, pairs.challenger_pd, costs),
        )
        for side, approves in decisions
    ]
