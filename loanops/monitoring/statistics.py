"""The score-drift statistics computed on every row: PSI over fixed bins and the two-sample KS.

Each comes in two forms: on an array of scores, and on `ScoreCounts`, counts accumulated batch
by batch so that a window never has to be held whole. The counts give the same PSI and the
same KS, to the bit: both statistics depend on the window's scores only through how many fall
in each bin of the reference's deciles (PSI) and on each side of each distinct reference score
(KS), and the counts are exactly those.

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
    return psi_from_counts(_bin_counts(values, reference), reference, floor=floor)


def psi_from_counts(
    counts: npt.NDArray[np.int64], reference: PredictionStatistics, *, floor: float = _PSI_FLOOR
) -> float:
    """PSI from the count of current scores in each of the reference's bins (`_bin_counts`)."""
    current = np.maximum(counts / max(int(counts.sum()), 1), floor)
    expected = np.maximum(np.asarray(reference.bin_shares, dtype=np.float64), floor)
    return float(np.sum((current - expected) * np.log(current / expected)))


def _bin_counts(
    values: npt.NDArray[np.float64], reference: PredictionStatistics
) -> npt.NDArray[np.int64]:
    edges = np.asarray(reference.bin_edges, dtype=np.float64)
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)


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


class ScoreCounts:
    """A window's scores, batch by batch, as the counts its PSI and KS need, in bounded memory.

    Memory is a few arrays the size of the reference's distinct scores, whatever the window.
    Give every batch to `add`, then read `psi`, `ks_drift_statistic` and `mean`.
    """

    def __init__(self, reference_scores: npt.NDArray[np.float64], prediction: PredictionStatistics):
        """Args:
        reference_scores: The reference's scores, without NaNs; at least one.
        prediction: The reference's cached bins (`score_bins`).
        """
        ordered = np.sort(np.asarray(reference_scores, dtype=np.float64))
        self._prediction = prediction
        self._reference_rows = len(ordered)
        self._points = np.unique(ordered)
        # The reference's CDF at each of its distinct scores, as ks_drift_statistic computes it.
        self._reference_cdf = np.searchsorted(ordered, self._points, side="right") / len(ordered)
        size = len(self._points) + 1
        self._at_or_below = np.zeros(size, dtype=np.int64)  # by the first point >= the score
        self._equal = np.zeros(size, dtype=np.int64)  # scores equal to that point
        self._bins = np.zeros(len(prediction.bin_edges) + 1, dtype=np.int64)
        self.rows = 0
        self._sum = 0.0

    def add(self, scores: npt.NDArray[np.float64]) -> None:
        """Count a batch of current scores (NaNs must be dropped first)."""
        values = np.asarray(scores, dtype=np.float64)
        if not len(values):
            return
        slot = np.searchsorted(self._points, values, side="left")
        last = len(self._points) - 1
        equal = (slot <= last) & (self._points[np.minimum(slot, last)] == values)
        size = len(self._points) + 1
        self._at_or_below += np.bincount(slot, minlength=size)
        self._equal += np.bincount(slot[equal], minlength=size)
        self._bins += _bin_counts(values, self._prediction)
        self.rows += len(values)
        self._sum += float(values.sum())

    @property
    def psi(self) -> float:
        """As `population_stability_index` on every score counted."""
        return psi_from_counts(self._bins, self._prediction)

    @property
    def mean(self) -> float:
        """The mean score (a sum of per-batch sums: equal to numpy's mean within rounding)."""
        return self._sum / self.rows if self.rows else float("nan")

    @property
    def ks_drift_statistic(self) -> float:
        """As `ks_drift_statistic(reference_scores, every score counted)`, to the bit.

        The largest CDF gap is reached at a reference score, or at the highest current score
        below one (between two reference scores the reference's CDF is flat and the current
        one only rises). Both CDFs there come from the counts, with the same divisions.
        """
        if not self.rows:
            raise ValueError("no scores were counted")
        at_or_below = np.cumsum(self._at_or_below)[:-1]  # current scores <= each point
        below = at_or_below - self._equal[:-1]  # current scores < each point
        at_points = np.abs(self._reference_cdf - at_or_below / self.rows)
        # Just below point i the reference's CDF is its value at point i - 1 (0 below the first).
        before = np.concatenate([[0.0], self._reference_cdf[:-1]])
        below_points = np.abs(before - below / self.rows)
        return float(max(at_points.max(), below_points.max()))
