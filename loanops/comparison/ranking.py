"""Both models on the loans whose outcomes have arrived: ranking, calibration and their gap.

On the same labelled loans, each model's ROC AUC, KS, Brier score, ECE, calibration in the
large (mean PD against the default rate, observed over expected, the gap in standard errors, as
`loanops.performance` measures it) and a reliability table of equal-count bins; and the paired
bootstrap interval of the AUC difference (challenger − champion): each resample draws the same
loans for both models, so the interval reflects how the two disagree rather than the noise
each has on its own. All of it overall and per vintage, the month (UTC) of ``decided_at``.

Outcomes arrive only for loans that were made, so in shadow mode both models are judged on the
champion's approvals: a fair comparison of the two on that population, not of how either would
rank the applicants the champion declined.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import brier_score_loss, roc_auc_score

from loanops.comparison.paired import Pairs
from loanops.evaluate import CostMatrix, expected_calibration_error, ks_separation
from loanops.performance import DEFAULT_MIN_DEFAULTS, DEFAULT_MIN_LABELS, OVERALL

RELIABILITY_BINS: Final = 10
INTERVAL_LEVEL: Final = 0.95
_CHUNK_CELLS: Final = 4_000_000
"""Resample weights held at once (resamples × loans): about 32 MB per array of them."""


class ReliabilityBin(BaseModel):
    """One equal-count bin of a model's PDs: its mean PD against its default rate."""

    model_config = ConfigDict(frozen=True)

    rows: int
    mean_pd: float
    default_rate: float


class OutcomeMetrics(BaseModel):
    """One model's scores on labelled loans."""

    model_config = ConfigDict(frozen=True)

    mean_pd: float
    default_rate: float
    calibration_gap: float
    """``mean_pd − default_rate``: negative when more loans default than predicted."""
    observed_to_expected: float | None
    calibration_z: float
    brier: float
    realised_cost: float
    """Cost per labelled loan of the model's decisions under the settings' cost matrix."""
    reliability: tuple[ReliabilityBin, ...]
    auc: float | None = None
    ks: float | None = None
    ece: float | None = None


class AucDifference(BaseModel):
    """Challenger's AUC less the champion's, with its paired percentile-bootstrap interval."""

    model_config = ConfigDict(frozen=True)

    difference: float
    low: float
    high: float
    level: float
    samples: int
    seed: int

    @property
    def verdict(self) -> str:
        """``challenger better``, ``champion better`` or ``no difference`` at the level."""
        if self.low > 0:
            return "challenger better"
        if self.high < 0:
            return "champion better"
        return "no difference"


class SliceOutcomes(BaseModel):
    """Both models on the labelled loans of one slice: every one, or one vintage."""

    model_config = ConfigDict(frozen=True)

    name: str
    labelled: int
    defaults: int
    champion: OutcomeMetrics | None = None
    challenger: OutcomeMetrics | None = None
    auc_difference: AucDifference | None = None
    note: str | None = None


def weighted_aucs(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of `p` against `y` under each row of `weights` (resample counts per loan).

    The Mann-Whitney form with ties counted half, computed on the scores sorted once: per
    group of equal scores, the weighted defaults times the weighted repaid loans scored lower.
    """
    order = np.argsort(p, kind="stable")
    sorted_p, sorted_y = p[order], y[order].astype(bool)
    starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    w = weights[:, order]
    defaults = np.add.reduceat(np.where(sorted_y, w, 0), starts, axis=1)
    repaid = np.add.reduceat(np.where(sorted_y, 0, w), starts, axis=1)
    below = np.cumsum(repaid, axis=1) - repaid
    pairs = defaults.sum(axis=1) * repaid.sum(axis=1)
    wins = (defaults * (below + 0.5 * repaid)).sum(axis=1)
    return np.divide(wins, pairs, out=np.full(len(w), np.nan), where=pairs > 0)


def paired_auc_difference(
    y: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    *,
    samples: int,
    seed: int,
    level: float = INTERVAL_LEVEL,
) -> AucDifference:
    """AUC(challenger) − AUC(champion) with a paired percentile-bootstrap interval.

    Resamples that draw loans of one outcome only have no AUC and are left out.
    """
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    n = len(y)
    differences: list[np.ndarray] = []
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    for first in range(0, samples, chunk):
        size = min(chunk, samples - first)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)
        differences.append(
            weighted_aucs(y, challenger, weights) - weighted_aucs(y, champion, weights)
        )
    drawn = np.concatenate(differences)
    drawn = drawn[np.isfinite(drawn)]
    tail = (1 - level) / 2
    low, high = np.quantile(drawn, [tail, 1 - tail])
    return AucDifference(
        difference=float(roc_auc_score(y, challenger) - roc_auc_score(y, champion)),
        low=float(low),
        high=float(high),
        level=level,
        samples=int(len(drawn)),
        seed=seed,
    )


def reliability(y: np.ndarray, p: np.ndarray, bins: int = RELIABILITY_BINS) -> list[ReliabilityBin]:
    """Equal-count bins of `p`, lowest first, each with its mean PD and default rate."""
    order = np.argsort(p, kind="stable")
    return [
        ReliabilityBin(
            rows=len(chunk), mean_pd=float(p[chunk].mean()), default_rate=float(y[chunk].mean())
        )
        for chunk in np.array_split(order, bins)
        if len(chunk)
    ]


def outcome_metrics(
    y: np.ndarray, p: np.ndarray, approves: np.ndarray, costs: CostMatrix, *, ranked: bool
) -> OutcomeMetrics:
    """One model on labelled loans; AUC, KS and ECE only when `ranked` (enough of each class)."""
    mean_pd, default_rate = float(p.mean()), float(y.mean())
    expected = float(p.sum())
    # If the PDs were right, the default count would have mean Σp and variance Σp(1 − p).
    spread = math.sqrt(max(float(np.mean(p * (1 - p))), 1e-12) / len(y))
    cost = np.where(approves, y * costs.false_approve, (1 - y) * costs.false_decline)
    return OutcomeMetrics(
        mean_pd=mean_pd,
        default_rate=default_rate,
        calibration_gap=mean_pd - default_rate,
        observed_to_expected=float(y.sum()) / expected if expected > 0 else None,
        calibration_z=(mean_pd - default_rate) / spread,
        brier=float(brier_score_loss(y, p)),
        realised_cost=float(cost.mean()),
        reliability=tuple(reliability(y, p)),
        auc=float(roc_auc_score(y, p)) if ranked else None,
        ks=ks_separation(y, p) if ranked else None,
        ece=expected_calibration_error(y, p) if ranked else None,
    )


def slice_outcomes(
    name: str,
    pairs: Pairs,
    mask: np.ndarray,
    y: np.ndarray,
    costs: CostMatrix,
    *,
    samples: int,
    seed: int,
    min_labels: int,
    min_defaults: int,
) -> SliceOutcomes:
    """Both models on the labelled loans `mask` picks out of `pairs` (`y` their outcomes)."""
    ys = y[mask]
    labelled, defaults = len(ys), int(ys.sum())
    if labelled < min_labels:
        note = f"{labelled} labelled loans; every metric needs at least {min_labels}"
        return SliceOutcomes(name=name, labelled=labelled, defaults=defaults, note=note)
    repaid = labelled - defaults
    ranked = min(defaults, repaid) >= min_defaults
    champion, challenger = pairs.champion_pd[mask], pairs.challenger_pd[mask]
    return SliceOutcomes(
        name=name,
        labelled=labelled,
        defaults=defaults,
        champion=outcome_metrics(ys, champion, pairs.champion_approves[mask], costs, ranked=ranked),
        challenger=outcome_metrics(
            ys, challenger, pairs.challenger_approves[mask], costs, ranked=ranked
        ),
        auc_difference=paired_auc_difference(ys, champion, challenger, samples=samples, seed=seed)
        if ranked
        else None,
        note=None
        if ranked
        else f"{defaults} defaults and {repaid} repaid; AUC, KS, ECE and the AUC difference "
        f"need at least {min_defaults} of each",
    )


def outcomes_by_vintage(
    pairs: Pairs,
    costs: CostMatrix,
    *,
    samples: int,
    seed: int,
    min_labels: int = DEFAULT_MIN_LABELS,
    min_defaults: int = DEFAULT_MIN_DEFAULTS,
) -> list[SliceOutcomes]:
    """The overall slice, then one per vintage month, oldest first; empty without outcomes.

    Rows whose ``defaulted`` is missing (no outcome yet) are left out. Each vintage's
    resampling has a seed of its own, derived from `seed`, so adding a month leaves the others'
    intervals as they were.
    """
    if "defaulted" not in pairs.frame:
        return []
    outcome = pairs.frame["defaulted"]
    known = outcome.notna().to_numpy(dtype=bool)
    if not known.any():
        return []
    y = np.zeros(pairs.rows, dtype=np.int64)
    y[known] = outcome[known].astype("int64").to_numpy()
    months = pd.to_datetime(pairs.frame["decided_at"], utc=True).dt.strftime("%Y-%m").to_numpy()
    settings = {"samples": samples, "min_labels": min_labels, "min_defaults": min_defaults}
    slices = [slice_outcomes(OVERALL, pairs, known, y, costs, seed=seed, **settings)]
    for month in sorted(set(months[known])):
        month_seed = int(
            np.random.SeedSequence([seed, int(month.replace("-", ""))]).generate_state(1)[0]
        )
        slices.append(
            slice_outcomes(
                month,
                pairs,
                known & (months == month),
                y,
                costs,
                seed=month_seed,
                **settings,
            )
        )
    return slices
