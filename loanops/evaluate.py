"""Metrics, the cost-minimising threshold, and the plots that go with a trained model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)


@dataclass(frozen=True)
class CostMatrix:
    """What each kind of wrong decision costs, per loan."""

    false_approve: float
    """Approving a loan that then defaults."""
    false_decline: float
    """Declining a loan that would have repaid."""

    @property
    def bayes_threshold(self) -> float:
        """The threshold that minimises expected cost for perfectly calibrated probabilities."""
        return self.false_decline / (self.false_decline + self.false_approve)


def expected_cost(y: np.ndarray, p: np.ndarray, threshold: float, costs: CostMatrix) -> float:
    """Mean cost per application when applications with p >= threshold are declined."""
    decline = p >= threshold
    false_approvals = np.sum((y == 1) & ~decline)
    false_declines = np.sum((y == 0) & decline)
    total = costs.false_approve * false_approvals + costs.false_decline * false_declines
    return float(total / len(y))


def choose_threshold(y: np.ndarray, p: np.ndarray, costs: CostMatrix) -> float:
    """The decline threshold that minimises the empirical expected cost on (y, p).

    Every distinct score is a candidate, plus "decline nobody"; among equal costs the threshold
    that declines fewer applications wins, so the choice is deterministic.
    """
    order = np.argsort(-p, kind="stable")
    p_sorted, y_sorted = p[order], y[order]
    # Declining the top k applications: defaults among them are avoided, repayers are lost.
    declined_defaults = np.concatenate([[0], np.cumsum(y_sorted)])
    declined_repayers = np.concatenate([[0], np.cumsum(1 - y_sorted)])
    costs_by_k = (
        costs.false_approve * (y.sum() - declined_defaults)
        + costs.false_decline * declined_repayers
    )
    # Only a k that ends at a change of score can be expressed as a threshold.
    valid = np.ones(len(p) + 1, dtype=bool)
    valid[1:-1] = p_sorted[:-1] != p_sorted[1:]
    k = int(np.flatnonzero(valid)[np.argmin(costs_by_k[valid])])
    if k == 0:
        return float(np.nextafter(p_sorted[0], np.inf))
    return float(p_sorted[k - 1])


def ks_separation(y: np.ndarray, p: np.ndarray) -> float:
    """Credit scoring's KS: how far apart one model's scores put defaulted and repaid loans.

    The Kolmogorov-Smirnov statistic between the score distributions of the two classes, i.e.
    the largest TPR - FPR gap over all thresholds. Not the drift statistic of
    `loanops.monitoring.statistics.ks_drift_statistic`, which compares two windows of scores.
    """
    fpr, tpr, _ = roc_curve(y, p)
    return float(np.max(tpr - fpr))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE over equal-count bins.

    Equal-count bins keep every bin populated when most scores sit near the low default rate;
    equal-width bins would put nearly all loans in the first one or two.
    """
    order = np.argsort(p, kind="stable")
    gaps = [
        len(chunk) * abs(p[chunk].mean() - y[chunk].mean())
        for chunk in np.array_split(order, bins)
        if len(chunk)
    ]
    return float(np.sum(gaps) / len(p))


def bootstrap_auc_interval(
    y: np.ndarray, p: np.ndarray, *, samples: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval for ROC AUC, resampling loans with replacement."""
    rng = np.random.default_rng(seed)
    aucs = []
    n = len(y)
    for _ in range(samples):
        idx = rng.integers(0, n, n)
        if y[idx].min() == y[idx].max():
            continue  # a resample with one class has no AUC
        aucs.append(roc_auc_score(y[idx], p[idx]))
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(aucs, [tail, 100 - tail])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Evaluation:
    """Test-split metrics of a scored model at its threshold."""

    roc_auc: float
    roc_auc_lo: float
    roc_auc_hi: float
    pr_auc: float
    ks: float
    brier: float
    log_loss: float
    ece: float
    threshold: float
    cost_per_loan: float
    approval_rate: float
    default_rate: float
    mean_pd: float
    rows: int

    def as_metrics(self, prefix: str = "test_") -> dict[str, float]:
        return {f"{prefix}{name}": float(value) for name, value in asdict(self).items()}


def evaluate(
    y: np.ndarray,
    p: np.ndarray,
    *,
    threshold: float,
    costs: CostMatrix,
    bootstrap_samples: int,
    seed: int,
) -> Evaluation:
    """Every test metric for scores `p` on labels `y` at `threshold`."""
    lo, hi = bootstrap_auc_interval(y, p, samples=bootstrap_samples, seed=seed)
    return Evaluation(
        roc_auc=float(roc_auc_score(y, p)),
        roc_auc_lo=lo,
        roc_auc_hi=hi,
        pr_auc=float(average_precision_score(y, p)),
        ks=ks_separation(y, p),
        brier=float(brier_score_loss(y, p)),
        log_loss=float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])),
        ece=expected_calibration_error(y, p),
        threshold=threshold,
        cost_per_loan=expected_cost(y, p, threshold, costs),
        approval_rate=float(np.mean(p < threshold)),
        default_rate=float(np.mean(y)),
        mean_pd=float(np.mean(p)),
        rows=len(y),
    )


def feature_importance(
    model: Any, X: pd.DataFrame, y: np.ndarray, *, seed: int, repeats: int = 5
) -> pd.Series:
    """Permutation importance (drop in ROC AUC) per raw input feature, largest first."""
    result = permutation_importance(
        model, X, y, scoring="roc_auc", n_repeats=repeats, random_state=seed
    )
    return pd.Series(result.importances_mean, index=X.columns).sort_values(ascending=False)


def plot_roc(y: np.ndarray, p: np.ndarray) -> Figure:
    fpr, tpr, _ = roc_curve(y, p)
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y, p):.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC (test)")
    ax.legend(loc="lower right")
    return fig


def plot_precision_recall(y: np.ndarray, p: np.ndarray) -> Figure:
    precision, recall, _ = precision_recall_curve(y, p)
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    ax.plot(recall, precision, label=f"AP {average_precision_score(y, p):.3f}")
    ax.axhline(float(np.mean(y)), linestyle="--", color="grey", label="base rate")
    ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall (test)")
    ax.legend(loc="upper right")
    return fig


def plot_calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> Figure:
    """Observed default rate against mean predicted PD in equal-count bins."""
    order = np.argsort(p, kind="stable")
    chunks = [c for c in np.array_split(order, bins) if len(c)]
    predicted = [p[c].mean() for c in chunks]
    observed = [y[c].mean() for c in chunks]
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    top = max(max(predicted), max(observed)) * 1.05
    ax.plot([0, top], [0, top], linestyle="--", color="grey", label="perfect")
    ax.plot(predicted, observed, marker="o", label="model")
    ax.set(
        xlabel="Mean predicted PD",
        ylabel="Observed default rate",
        title=f"Calibration, {bins} equal-count bins (test)",
    )
    ax.legend(loc="upper left")
    return fig


def plot_confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> Figure:
    """Outcome against decision at `threshold`; each count in black or white to suit its cell."""
    matrix = confusion_matrix(y, (p >= threshold).astype(int), labels=[0, 1])
    fig = Figure(figsize=(5, 4.5), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        cell = tuple(np.asarray(image.cmap(image.norm(count)), dtype=float).ravel())
        ax.text(col, row, f"{count:,}", ha="center", va="center", color=_text_colour_on(cell))
    ax.set_xticks([0, 1], ["approve", "decline"])
    ax.set_yticks([0, 1], ["repaid", "defaulted"])
    ax.set(xlabel="Decision", ylabel="Outcome", title=f"Confusion at threshold {threshold:.3f}")
    return fig


def plot_importance(importance: pd.Series, top: int = 15) -> Figure:
    shown = importance.head(top)[::-1]
    fig = Figure(figsize=(6, 0.35 * len(shown) + 1.2), layout="constrained")
    ax = fig.subplots()
    ax.barh(shown.index, shown.to_numpy())
    ax.set(xlabel="Drop in ROC AUC when permuted", title="Permutation importance (test)")
    return fig


def _text_colour_on(background: tuple[float, ...]) -> str:
    """Black or white, whichever contrasts more with `background` (WCAG 2 luminance)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in background[:3]]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    # Contrast with black is (L + 0.05) / 0.05, with white 1.05 / (L + 0.05); they meet here.
    return "black" if luminance > 0.179 else "white"
