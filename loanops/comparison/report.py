"""The compare report: every finding on one challenger's paired decisions, in one stable schema.

`compare_pairs` builds a `ComparisonReport` from a frame of decisions; its JSON
(`ComparisonReport.model_dump_json`, schema `ComparisonReport.model_json_schema`) is the
artifact other tools read, and `headline_metrics` the numbers logged as MLflow metrics, which
the maker-checker's approval request shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict

from loanops.comparison.decisions import (
    ExpectedCost,
    PdShift,
    SegmentApproval,
    agreement_rate,
    expected_costs,
    pd_shift,
    segment_approvals,
)
from loanops.comparison.paired import pairs_of
from loanops.comparison.ranking import SliceOutcomes, outcomes_by_vintage
from loanops.comparison.swaps import SwapSet, swap_set
from loanops.evaluate import CostMatrix
from loanops.performance import DEFAULT_MIN_DEFAULTS, DEFAULT_MIN_LABELS, OVERALL
from loanops.schema import Segment

SCHEMA_VERSION: Final = 1


class Costs(BaseModel):
    """The cost matrix the decisions were priced with, per loan."""

    model_config = ConfigDict(frozen=True)

    false_approve: float
    false_decline: float


class ComparisonReport(BaseModel):
    """Champion against one challenger on the same live applications.

    Attributes:
        schema_version: Bumped when a field changes meaning or goes away.
        model_name: The registered model both versions belong to.
        challenger_version: The challenger compared.
        champion_versions: Champion versions among the pairs (the alias may move in a window).
        window_start: Earliest ``decided_at`` asked for; None for no lower bound.
        window_end: First ``decided_at`` excluded; None for no upper bound.
        first_decided_at: Earliest paired decision.
        last_decided_at: Latest paired decision.
        generated_at: When the report was built (UTC).
        paired: Decisions both models scored.
        unpaired: Decisions of the window this challenger did not score.
        arms: How many paired applicants received each model's decision.
        agreement_rate: Share of paired applicants both models decide alike.
        swap_set: The 2×2 table of decisions, with PDs per cell.
        pd_shift: The challenger's PD less the champion's.
        segments: Both approval rates per value of each declared segment.
        costs: The cost matrix.
        expected_costs: Each model's decisions priced under each model's PD.
        outcomes: On labelled loans, overall then by vintage; empty before outcomes arrive.
        bootstrap_samples: Resamples of the AUC-difference intervals.
        seed: Their seed.
    """

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    model_name: str
    challenger_version: str
    champion_versions: tuple[str, ...]
    window_start: datetime | None
    window_end: datetime | None
    first_decided_at: datetime
    last_decided_at: datetime
    generated_at: datetime
    paired: int
    unpaired: int
    arms: dict[str, int]
    agreement_rate: float
    swap_set: SwapSet
    pd_shift: PdShift
    segments: tuple[SegmentApproval, ...]
    costs: Costs
    expected_costs: tuple[ExpectedCost, ...]
    outcomes: tuple[SliceOutcomes, ...]
    bootstrap_samples: int
    seed: int

    @property
    def overall_outcomes(self) -> SliceOutcomes | None:
        """The labelled loans of the whole window, if any outcome has arrived."""
        return next((s for s in self.outcomes if s.name == OVERALL), None)

    def expected_cost(self, decisions_of: str) -> ExpectedCost:
        return next(c for c in self.expected_costs if c.decisions_of == decisions_of)

    def headline_metrics(self) -> dict[str, float]:
        """At most twelve numbers for the MLflow run (the approval request shows twelve).

        ``live_auc_change*`` appear once outcomes support an AUC; the rest always do.
        """
        champion, challenger = self.expected_cost("champion"), self.expected_cost("challenger")
        metrics = {
            "live_paired_decisions": float(self.paired),
            "live_agreement_rate": self.agreement_rate,
            "live_swap_in": float(self.swap_set.swap_in),
            "live_swap_out": float(self.swap_set.swap_out),
            "live_pd_shift_mean": float(self.pd_shift.difference.mean or 0.0),
            "live_cost_change_under_champion_pd": challenger.under_champion_pd
            - champion.under_champion_pd,
        }
        overall = self.overall_outcomes
        if overall is not None:
            metrics["live_labelled"] = float(overall.labelled)
            if overall.champion is not None and overall.champion.auc is not None:
                metrics["live_champion_auc"] = overall.champion.auc
            if overall.challenger is not None and overall.challenger.auc is not None:
                metrics["live_challenger_auc"] = overall.challenger.auc
            if overall.auc_difference is not None:
                metrics["live_auc_change"] = overall.auc_difference.difference
                metrics["live_auc_change_low"] = overall.auc_difference.low
                metrics["live_auc_change_high"] = overall.auc_difference.high
        return metrics


def compare_pairs(
    frame: pd.DataFrame,
    *,
    model_name: str,
    segments: Sequence[Segment],
    costs: CostMatrix,
    challenger_version: str | None = None,
    window: tuple[datetime | None, datetime | None] = (None, None),
    bootstrap_samples: int = 1000,
    seed: int = 0,
    min_labels: int = DEFAULT_MIN_LABELS,
    min_defaults: int = DEFAULT_MIN_DEFAULTS,
) -> ComparisonReport:
    """The compare report of one challenger over a window of decisions.

    Args:
        frame: The window's decisions with the paired columns (`paired.PAIRED_COLUMNS`), any
            segment columns, and ``defaulted`` where outcomes are joined in (null where not yet).
        model_name: The registered model.
        segments: The declared segments to report approval rates by.
        costs: The cost matrix.
        challenger_version: The challenger; None takes the one seen most recently.
        window: The bounds the frame was read with, for the record.
        bootstrap_samples: Resamples for the AUC-difference intervals.
        seed: Seed of the resampling.
        min_labels: Fewest labelled loans a slice needs for any outcome metric.
        min_defaults: Fewest loans of each outcome a slice needs for AUC, KS and the interval.

    Raises:
        NoPairedDecisionsError: The challenger scored none of the decisions.
        ValueError: A paired column is missing or holds a bad value.
    """
    pairs = pairs_of(frame, challenger_version)
    decided = pd.to_datetime(pairs.frame["decided_at"], utc=True)
    arms = pairs.frame["arm"].fillna("champion").astype(str).value_counts()
    return ComparisonReport(
        model_name=model_name,
        challenger_version=pairs.challenger_version,
        champion_versions=pairs.champion_versions,
        window_start=window[0],
        window_end=window[1],
        first_decided_at=decided.min().to_pydatetime(),
        last_decided_at=decided.max().to_pydatetime(),
        generated_at=datetime.now(UTC),
        paired=pairs.rows,
        unpaired=len(frame) - pairs.rows,
        arms={arm: int(arms.get(arm, 0)) for arm in ("champion", "challenger")},
        agreement_rate=agreement_rate(pairs),
        swap_set=swap_set(pairs),
        pd_shift=pd_shift(pairs),
        segments=tuple(segment_approvals(pairs, segments)),
        costs=Costs(false_approve=costs.false_approve, false_decline=costs.false_decline),
        expected_costs=tuple(expected_costs(pairs, costs)),
        outcomes=tuple(
            outcomes_by_vintage(
                pairs,
                costs,
                samples=bootstrap_samples,
                seed=seed,
                min_labels=min_labels,
                min_defaults=min_defaults,
            )
        ),
        bootstrap_samples=bootstrap_samples,
        seed=seed,
    )
