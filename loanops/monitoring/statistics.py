"""The score-drift statistics computed on every row: PSI over fixed bins and the two-sample KS.

Not to be confused with `loanops.evaluate.ks_separation`, the credit-scoring "KS" of one
model's scores between defaulted and repaid loans: the statistic here compares the score
distribution of a window with the reference's, with no labels involved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from loanops.monitoring.reference import PredictionStatistics

PSI_BINS: Final = 10
"""The reference's score deciles are the PSI bins."""
# Floor on bin shares so an empty bin gives a large but finite PSI term.
_PSI_FLOOR: Final = 1e-4


def share(part: int, whole: int) -> float:
    """`part / whole`, and 0 for an empty whole."""
    return part / whole if whole else 0.0


def score_bins(
    scores: npt.NDArray[np.float64], bins: int = PSI_BINS
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Inner bin edges at the scores' quantiles (deduplicated) and each bin's share of them.

    Args:
        scores: Reference scores, without NaNs; at least one.
        bins: Quantile bins wanted; ties in the scores may merge some.

    Returns:
        The inner edges and the share of `scores` in each of the `len(edges) + 1` bins.
    """
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, scores, side="right"), minlength=len(edges) + 1)
    return edges, counts / len(scores)


def population_stability_index(
    scores: npt.ArrayLike, reference: PredictionStatistics, *, floor: float = _PSI_FLOOR
) -> float:
    """PSI of scores against the reference's decile bins: sum of (c - r) * ln(c / r).

    Args:
        scores: Current scores (NaNs must be dropped first).
        reference: The reference's cached bin edges and shares (`score_bins`).
        floor: Least share given to a bin, so an empty bin adds a large but finite term.

    Returns:
        The PSI; 0 when the distributions agree, about 0.1 for a moderate shift.
    """
    values = np.asarray(scores, dtype=np.float64)
    edges = np.asarray(reference.bin_edges, dtype=np.float64)
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    current = np.maximum(counts / max(len(values), 1), floor)
    expected = np.maximum(np.asarray(reference.bin_shares, dtype=np.float64), floor)
    return float(np.sum((current - expected) * np.log(current / expected)))


def ks_drift_statistic(
    reference: npt.NDArray[np.float64], current: npt.NDArray[np.float64]
) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two CDFs.

    Computed exactly on every row by merging the sorted samples, with no p-value (on a large
    window any shift is significant; the gap itself is what a reader can judge).

    Args:
        reference: The reference's scores, without NaNs.
        current: The window's scores, without NaNs.

    Returns:
        The statistic, in [0, 1].
    """
    reference, current = np.sort(reference), np.sort(current)
    points = np.concatenate([reference, current])
    below_reference = np.searchsorted(reference, points, side="right") / len(reference)
    below_current = np.searchsorted(current, points, side="right") / len(current)
    return float(np.max(np.abs(below_reference - below_current)))
