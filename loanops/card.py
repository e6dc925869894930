"""Model cards: what a risk reviewer reads about a registered version, built from its records.

`build_card` gathers a version's facts from the registry (its training run's lineage tags,
parameters and metrics, its MLmodel metadata, its gate decision) and scores its frozen test
split once, for what the run did not log: bootstrap intervals on every headline metric,
calibration, and metrics by each segment its schema declares, with a disparity summary.
`write_card` renders it (`loanops.card_render`: Markdown, and HTML from the Jinja2 template
`loanops/templates/model_card.html.j2`) beside its PNG plots; the promote flow logs that
folder as the ``model_card`` artifact of the version's run, and `loanops models card VERSION`
writes it out locally.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from sklearn.metrics import brier_score_loss, roc_auc_score

from loanops import registry
from loanops.card_render import plot_segments, render_html, render_markdown
from loanops.evaluate import (
    expected_calibration_error,
    ks_separation,
    plot_calibration,
    plot_roc,
)
from loanops.schema import FeatureSchema, Segment
from loanops.scorecard import Scorecard, points_table

__all__ = [
    "CARD_ARTIFACT",
    "ModelCardReport",
    "MetricInterval",
    "SegmentRow",
    "build_card",
    "card_from_scores",
    "log_card",
    "segments",
    "write_card",
]

CARD_ARTIFACT: Final = "model_card"
"""Artifact folder of the card in the version's training run."""
MIN_SEGMENT_DEFAULTS: Final = 30
"""Fewer defaults than this in a segment: its AUC is not reported and a limitation is noted."""
_BOOTSTRAP_LEVEL: Final = 0.95


@dataclass(frozen=True)
class MetricInterval:
    """A test metric with its percentile-bootstrap interval."""

    name: str
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class SegmentRow:
    """The version's behaviour on one segment of its test split."""

    segment: str
    value: str
    rows: int
    defaults: int
    default_rate: float
    mean_pd: float
    approval_rate: float
    roc_auc: float | None


@dataclass(frozen=True)
class ModelCardReport:
    """Everything a model card shows, as plain data (rendered by `write_card`)."""

    model_name: str
    version: str
    run_id: str
    created_at: str
    data: dict[str, str]
    family: str
    params: dict[str, Any]
    metrics: list[MetricInterval]
    threshold: float
    cost_false_approve: float
    cost_false_decline: float
    segments: list[SegmentRow]
    disparity: list[str]
    promotion: dict[str, str]
    limitations: list[str]
    figures: dict[str, Figure] = field(default_factory=dict, repr=False)
    scorecard: Scorecard | None = None
    """The points table, when the version is a scorecard."""

    @property
    def bayes_threshold(self) -> float:
        return self.cost_false_decline / (self.cost_false_decline + self.cost_false_approve)


_METRICS: Final[Mapping[str, Callable[[np.ndarray, np.ndarray], float]]] = {
    "ROC AUC": lambda y, p: float(roc_auc_score(y, p)),
    "KS": ks_separation,
    "Brier score": lambda y, p: float(brier_score_loss(y, p)),
    "ECE (10 equal-count bins)": expected_calibration_error,
    "mean PD": lambda y, p: float(p.mean()),
    "default rate": lambda y, p: float(y.mean()),
}


def bootstrap_metrics(
    y: np.ndarray, p: np.ndarray, *, samples: int, seed: int
) -> list[MetricInterval]:
    """Each headline metric on (y, p) with a percentile bootstrap interval, loans resampled."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {name: [] for name in _METRICS}
    n = len(y)
    for _ in range(samples):
        idx = rng.integers(0, n, n)
        if y[idx].min() == y[idx].max():
            continue  # one class only: no AUC or KS
        for name, metric in _METRICS.items():
            draws[name].append(metric(y[idx], p[idx]))
    tail = (1 - _BOOTSTRAP_LEVEL) / 2 * 100
    results = []
    for name, metric in _METRICS.items():
        low, high = np.percentile(draws[name], [tail, 100 - tail]) if draws[name] else (np.nan,) * 2
        results.append(MetricInterval(name, metric(y, p), float(low), float(high)))
    return results


def segments(frame: pd.DataFrame, declared: Sequence[Segment]) -> dict[str, pd.Series]:
    """The declared segments, as labels aligned with `frame`; one whose column is absent is left
    out (a version trained before its dataset declared it)."""
    return {s.name: s.labels(frame) for s in declared if s.column in frame}


def segment_table(
    frame: pd.DataFrame,
    declared: Sequence[Segment],
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
) -> list[SegmentRow]:
    """Rows, defaults, default rate, mean PD, approval rate and AUC per segment value."""
    rows: list[SegmentRow] = []
    for name, labels in segments(frame, declared).items():
        values = labels.fillna("missing").to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            ys, ps = y[mask], p[mask]
            defaults = int(ys.sum())
            auc = (
                float(roc_auc_score(ys, ps)) if MIN_SEGMENT_DEFAULTS <= defaults < len(ys) else None
            )
            rows.append(
                SegmentRow(
                    segment=name,
                    value=str(value),
                    rows=int(mask.sum()),
                    defaults=defaults,
                    default_rate=float(ys.mean()),
                    mean_pd=float(ps.mean()),
                    approval_rate=float((ps < threshold).mean()),
                    roc_auc=auc,
                )
            )
    return rows


def disparity_summary(rows: Sequence[SegmentRow]) -> list[str]:
    """Per segment: the spread of approval rates, calibration gaps and AUCs across its values.

    The approval-rate ratio is the lowest approval rate over the highest, the "four-fifths"
    reading of adverse impact; credit grades differ in risk by design, so for grade a low ratio
    is expected and the calibration gap is the number to watch.
    """
    lines = []
    for name in dict.fromkeys(row.segment for row in rows):
        part = [row for row in rows if row.segment == name and row.rows > 0]
        approvals = [row.approval_rate for row in part]
        gaps = [row.mean_pd - row.default_rate for row in part]
        aucs = [row.roc_auc for row in part if row.roc_auc is not None]
        ratio = min(approvals) / max(approvals) if max(approvals) > 0 else float("nan")
        worst = max(part, key=lambda row: abs(row.mean_pd - row.default_rate))
        text = (
            f"{name}: approval-rate ratio {ratio:.2f} (min/max over {len(part)} values); "
            f"calibration gap (mean PD − default rate) from {min(gaps):+.3f} to {max(gaps):+.3f}, "
            f"largest in {worst.value!r}"
        )
        if len(aucs) >= 2:
            text += f"; AUC from {min(aucs):.3f} to {max(aucs):.3f}"
        lines.append(text)
    return lines


def card_from_scores(
    *,
    model_name: str,
    version: str,
    run_id: str,
    created_at: str,
    data: dict[str, str],
    model_card: registry.ModelCard,
    promotion: dict[str, str],
    test_frame: pd.DataFrame,
    y: np.ndarray,
    p: np.ndarray,
    bootstrap_samples: int,
    seed: int,
    scorecard: Scorecard | None = None,
) -> ModelCardReport:
    """A card from a version's facts and its scores `p` on its test split (labels `y`)."""
    threshold = model_card.threshold
    rows = segment_table(test_frame, model_card.schema.segments, y, p, threshold)
    limitations = [
        "Trained and tested on one historical extract: performance on later vintages is "
        "measured by the performance flow once outcomes arrive, not by this card.",
        "Test-split metrics are in-time: the split is random, not out-of-time.",
        "Reasons are attributions of this model, not causes; they explain a score, not a "
        "borrower's true risk.",
    ]
    if data.get("dataset") == "synthetic":
        limitations.insert(0, "Trained on synthetic data: a demonstration, not a lending model.")
    if model_card.family == "logreg":
        limitations.append(
            "The logistic regression's coefficients are bounded by the declared risk "
            "directions; where a bound binds, the coefficient is zero, so that feature moves no "
            "PD and gives no adverse-action reason (the gate's direction check is in the "
            "promotion decision)."
        )
    thin = [f"{row.segment} {row.value!r}" for row in rows if row.defaults < MIN_SEGMENT_DEFAULTS]
    if thin:
        limitations.append(
            f"Fewer than {MIN_SEGMENT_DEFAULTS} test defaults in {', '.join(thin)}: no AUC is "
            "reported there and its rates are noisy."
        )
    figures = {"roc.png": plot_roc(y, p), "calibration.png": plot_calibration(y, p)}
    if rows:
        figures["segments.png"] = plot_segments(rows)
    return ModelCardReport(
        model_name=model_name,
        version=version,
        run_id=run_id,
        created_at=created_at,
        data=data,
        family=model_card.family,
        params=dict(model_card.params),
        metrics=bootstrap_metrics(y, p, samples=bootstrap_samples, seed=seed),
        threshold=threshold,
        cost_false_approve=model_card.cost_false_approve,
        cost_false_decline=model_card.cost_false_decline,
        segments=rows,
        disparity=disparity_summary(rows),
        promotion=promotion,
        limitations=limitations,
        figures=figures,
        scorecard=scorecard,
    )


def build_card(
    client: MlflowClient,
    version: ModelVersion,
    *,
    model: Any | None = None,
    bootstrap_samples: int = 1000,
    seed: int = 0,
) -> ModelCardReport:
    """Gather a registered version's card from the registry, scoring its test split once.

    Args:
        client: Registry client.
        version: The version.
        model: The loaded model, if the caller has it; else it is loaded from the registry.
        bootstrap_samples: Resamples for the metric intervals.
        seed: Seed of the resampling.

    Raises:
        ValueError: The version has no training run.
    """
    if version.run_id is None:
        raise ValueError(f"{version.name} v{version.version} has no training run")
    run = client.get_run(version.run_id)
    model_card = registry.model_card(client, version)
    schema: FeatureSchema = model_card.schema
    with tempfile.TemporaryDirectory(prefix="loanops-card-") as tmp:
        test_frame = registry.gate_data(client, version, Path(tmp))
    if model is None:
        model = registry.load_model(version.name, str(version.version))
    y = schema.labels(test_frame)
    p = np.asarray(model.predict_proba(schema.to_frame(test_frame))[:, 1], dtype=np.float64)
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    data = {
        "dataset": tags.get("loanops.dataset", model_card.dataset),
        "source": tags.get("loanops.data_source", ""),
        **{
            key.removeprefix("loanops.provenance."): value
            for key, value in sorted(tags.items())
            if key.startswith("loanops.provenance.")
        },
        "sha256": model_card.dataset_sha256,
        "rows": _whole(metrics.get("data_rows"), tags.get("loanops.data_rows")),
        "default rate": f"{metrics['data_default_rate']:.4f}"
        if "data_default_rate" in metrics
        else "",
        "train / validation / test rows": " / ".join(
            params.get(key, "?") for key in ("train_rows", "validation_rows", "test_rows")
        ),
        "git commit": tags.get("loanops.git_commit", ""),
    }
    promotion = {
        key.removeprefix("gate."): value
        for key, value in sorted((version.tags or {}).items())
        if key.startswith("gate.")
    }
    created = datetime.fromtimestamp(version.creation_timestamp / 1000, UTC)
    return card_from_scores(
        model_name=version.name,
        version=str(version.version),
        run_id=version.run_id,
        created_at=created.isoformat(timespec="seconds"),
        data=data,
        model_card=model_card,
        promotion=promotion,
        test_frame=test_frame,
        y=y,
        p=p,
        bootstrap_samples=bootstrap_samples,
        seed=seed,
        scorecard=points_table(model) if model_card.family == "scorecard" else None,
    )


def _whole(metric: float | None, tag: str | None) -> str:
    if metric is not None:
        return f"{int(metric):,}"
    return tag or ""


def log_card(client: MlflowClient, version: ModelVersion, card: ModelCardReport) -> str:
    """Log the card as the ``model_card`` artifact of the version's run; return its URI."""
    assert version.run_id is not None  # build_card refuses a version without a run
    with tempfile.TemporaryDirectory(prefix="loanops-card-") as tmp:
        write_card(card, Path(tmp))
        client.log_artifacts(version.run_id, tmp, CARD_ARTIFACT)
    uri = f"runs:/{version.run_id}/{CARD_ARTIFACT}/model_card.html"
    client.set_model_version_tag(version.name, str(version.version), "model_card", uri)
    return uri


def write_card(card: ModelCardReport, folder: Path) -> tuple[Path, Path]:
    """Write ``model_card.md``, ``model_card.html`` and the PNG plots into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, figure in card.figures.items():
        figure.savefig(folder / name, format="png", dpi=110)
    markdown, page = folder / "model_card.md", folder / "model_card.html"
    markdown.write_text(render_markdown(card), encoding="utf-8")
    page.write_text(render_html(card), encoding="utf-8")
    return markdown, page
