"""Adverse-action reasons: which features pushed an applicant's risk up the most.

Each feature has a favourable value, found once per model at training time. Where the schema
declares the direction of risk, it is the low (or high) end of the reference distribution;
otherwise it is the value that gives the lowest mean probability of default over a reference
sample (a one-feature partial dependence). An applicant's reason for a feature is how much their
PD would fall if that feature alone took its favourable value. The top reasons are the largest
such falls, so the method is faithful by construction: moving a reason's feature to its
favourable value lowers the score by exactly the reported impact. Codes are the feature names
upper-cased, so they stay stable across model versions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from loanops.schema import FeatureSchema

FrameScorer = Callable[[pd.DataFrame], np.ndarray]
RowScorer = Callable[[Sequence[Mapping[str, Any]]], np.ndarray]
RowVariantScorer = Callable[[Mapping[str, Any], Sequence[tuple[str, Any]]], np.ndarray]
"""PD of each variant of one row, given as (feature, new value): what `RowScorer` would give
for the changed rows, possibly without building them."""

_VARIANT_ROWS_PER_CALL = 65_536
"""Most variant rows `score_variant_frames` scores in one call, which bounds its memory."""


@dataclass(frozen=True)
class Reason:
    """One adverse-action reason."""

    code: str
    feature: str
    text: str
    impact: float
    """How much the probability of default would fall with the feature at its favourable value."""


class Variant(NamedTuple):
    """Some rows of a frame with one feature set to one value."""

    feature: str
    value: Any
    rows: np.ndarray
    """Positions in the frame."""


@runtime_checkable
class VariantScorer(Protocol):
    """Scores variants of a frame's rows without building them as frames, when a model's
    structure allows it (see `serving.scorer.compiled.CompiledScorer.score_variants`)."""

    def score_variants(self, frame: pd.DataFrame, variants: Sequence[Variant]) -> np.ndarray:
        """PD of each variant's rows, concatenated in the order of `variants`; the same numbers
        as scoring frames holding those rows with the feature set."""
        ...


def score_variant_frames(
    score: FrameScorer, frame: pd.DataFrame, variants: Sequence[Variant]
) -> np.ndarray:
    """`VariantScorer.score_variants` for any frame scorer: the variants built as frames.

    Variants of several features go to `score` together, a bounded number of rows at a time:
    one call per feature would pay the scorer's fixed cost many times over. They are built
    column by column in numpy, which costs a fraction of a frame copy per feature.
    """
    columns = {column: frame[column].to_numpy() for column in frame.columns}
    scores: list[np.ndarray] = []
    pending: list[Variant] = []
    pending_rows = 0

    def flush() -> None:
        nonlocal pending_rows
        if not pending:
            return
        taken = np.concatenate([variant.rows for variant in pending])
        built = {column: values[taken] for column, values in columns.items()}
        start = 0
        for variant in pending:
            end = start + len(variant.rows)
            built[variant.feature] = _able_to_hold(built[variant.feature], variant.value)
            built[variant.feature][start:end] = variant.value
            start = end
        # copy=False: the arrays are fresh, and pandas would copy them into blocks again.
        scores.append(np.asarray(score(pd.DataFrame(built, copy=False)), dtype=np.float64))
        pending.clear()
        pending_rows = 0

    for variant in variants:
        pending.append(variant)
        pending_rows += len(variant.rows)
        if pending_rows >= _VARIANT_ROWS_PER_CALL:
            flush()
    flush()
    return np.concatenate(scores) if scores else np.empty(0)


def reason_code(feature: str) -> str:
    return feature.upper()


def favourable_values(
    score: FrameScorer,
    X: pd.DataFrame,
    schema: FeatureSchema,
    *,
    sample_rows: int = 2000,
    grid: int = 9,
    seed: int = 0,
) -> dict[str, Any]:
    """For each feature, the value that gives the lowest mean PD over a reference sample.

    Args:
        score: PD of each row of a feature frame.
        X: reference features, typically the training split.
        schema: the features' schema.
        sample_rows: rows of `X` to average over.
        grid: candidate quantiles per numeric feature.
        seed: picks the sample.

    Returns:
        A JSON-ready mapping from feature name to its favourable value.
    """
    sample = X.sample(n=min(sample_rows, len(X)), random_state=seed)
    favourable: dict[str, Any] = {}
    for feature in schema.features:
        column = sample[feature.name]
        candidates: list[Any]
        if feature.is_categorical:
            candidates = sorted(str(v) for v in column.dropna().unique())
        else:
            values = column.dropna().quantile(np.linspace(0.05, 0.95, grid)).unique()
            candidates = sorted({_as_json(feature.kind, v) for v in values})
        if not candidates:
            continue
        if feature.risk is not None:
            # Policy fixes the direction, so a reason's text always matches the change it names:
            # a model that learned the opposite direction yields no reason rather than a wrong one.
            favourable[feature.name] = candidates[0 if feature.risk == "increasing" else -1]
            continue
        means = [float(score(sample.assign(**{feature.name: c})).mean()) for c in candidates]
        favourable[feature.name] = candidates[int(np.argmin(means))]
    return favourable


def _as_json(kind: str, value: Any) -> int | float:
    return int(round(float(value))) if kind == "int" else float(value)


class ReasonRanking(NamedTuple):
    """Every row's top candidate reasons, as `Explainer.rank_reasons` finds them."""

    features: list[str]
    """The features that can be reasons, in the favourable values' order."""
    texts: list[str]
    """Each feature's adverse-action text."""
    order: np.ndarray
    """(rows, top) indices into `features`, largest impact first."""
    impacts: np.ndarray
    """(rows, top) the matching impacts; a slot is a reason only when its impact is > 0."""


def _able_to_hold(values: np.ndarray, value: Any) -> np.ndarray:
    """`values`, cast if need be so that `value` can be stored in it without loss."""
    if values.dtype == object:
        return values
    if isinstance(value, str):
        return values.astype(object)
    if values.dtype.kind in "iub" and not float(value).is_integer():
        return values.astype(np.float64)
    return values


class Explainer:
    """Ranks an applicant's features by how much each one raises their PD."""

    def __init__(
        self,
        schema: FeatureSchema,
        favourable: Mapping[str, Any],
        score_rows: RowScorer,
        score_row_variants: RowVariantScorer | None = None,
    ) -> None:
        self._favourable = dict(favourable)
        self._score_rows = score_rows
        self._score_row_variants = score_row_variants
        self._texts = {f.name: f.reason or f.description for f in schema.features}

    def reasons(self, row: Mapping[str, Any], pd_: float, top: int = 4) -> list[Reason]:
        """The `top` features whose favourable value would lower this applicant's PD the most.

        Args:
            row: one validated application.
            pd_: its probability of default, as scored.
            top: how many reasons to return at most.

        Returns:
            Reasons with a positive impact, largest first.
        """
        names = [
            name for name, value in self._favourable.items() if name in row and row[name] != value
        ]
        if not names:
            return []
        if self._score_row_variants is not None:
            changes = [(name, self._favourable[name]) for name in names]
            impacts = pd_ - self._score_row_variants(row, changes)
        else:
            impacts = pd_ - self._score_rows(
                [{**row, name: self._favourable[name]} for name in names]
            )
        # Plain floats and Python's stable sort: for a score's twenty-odd impacts, cheaper than
        # numpy's argsort and its scalars. Largest first, ties in the favourable values' order.
        values = impacts.tolist()
        order = sorted(range(len(values)), key=lambda i: -values[i])[:top]
        return [
            Reason(
                code=reason_code(names[i]),
                feature=names[i],
                text=self._texts[names[i]],
                impact=values[i],
            )
            for i in order
            if values[i] > 0
        ]

    def rank_reasons(
        self,
        frame: pd.DataFrame,
        probabilities: np.ndarray,
        score: FrameScorer | VariantScorer,
        top: int = 4,
    ) -> ReasonRanking:
        """Each row's `top` candidate reasons as arrays, scoring the variants of many rows at once.

        The ranking behind `reasons_frame`, without a Python object per reason: what a batch
        file needs, where declined rows number in the thousands per chunk. The variants of all
        rows (one feature set to its favourable value) go to `score` together.

        Args:
            frame: validated applications, one per row, holding the schema's feature columns.
            probabilities: their probabilities of default, as scored, in row order.
            score: PD of each row of a frame like `frame` (e.g. `CompiledScorer.score_frame`),
                or a `VariantScorer` (e.g. a `CompiledScorer`), which may score the variants
                without building them.
            top: how many reasons to rank per row at most.

        Returns:
            The ranking; slot k of a row is a reason when its impact is positive.
        """
        n_rows = len(frame)
        names = [name for name in self._favourable if name in frame.columns]
        texts = [self._texts[name] for name in names]
        if n_rows == 0 or not names:
            empty = np.empty((n_rows, 0))
            return ReasonRanking(names, texts, empty.astype(np.intp), empty)
        p = np.asarray(probabilities, dtype=np.float64)
        # -inf marks "at its favourable value already": such a feature is no reason, as in
        # `reasons`, and sorts after every real impact.
        impacts = np.full((n_rows, len(names)), -np.inf)
        variants = []
        for j, name in enumerate(names):
            differs = np.asarray(frame[name].to_numpy() != self._favourable[name], dtype=bool)
            if differs.any():
                variants.append((j, Variant(name, self._favourable[name], np.flatnonzero(differs))))
        chosen = [variant for _, variant in variants]
        if isinstance(score, VariantScorer):
            scores = np.asarray(score.score_variants(frame, chosen), dtype=np.float64)
        else:
            scores = score_variant_frames(score, frame, chosen)
        start = 0
        for j, variant in variants:
            end = start + len(variant.rows)
            impacts[variant.rows, j] = p[variant.rows] - scores[start:end]
            start = end
        order = np.argsort(-impacts, axis=1, kind="stable")[:, :top]
        return ReasonRanking(names, texts, order, np.take_along_axis(impacts, order, axis=1))

    def reasons_frame(
        self,
        frame: pd.DataFrame,
        probabilities: np.ndarray,
        score: FrameScorer | VariantScorer,
        top: int = 4,
    ) -> list[list[Reason]]:
        """`reasons` for every row of a frame, scoring the variants of many rows at once.

        The same reasons, in the same order, as calling `reasons(row, p, top)` row by row; see
        `rank_reasons`, which this wraps.

        Args:
            frame: validated applications, one per row, holding the schema's feature columns.
            probabilities: their probabilities of default, as scored, in row order.
            score: as in `rank_reasons`.
            top: how many reasons to return per row at most.

        Returns:
            Per row, reasons with a positive impact, largest first.
        """
        ranking = self.rank_reasons(frame, probabilities, score, top)
        names, texts = ranking.features, ranking.texts
        # Plain lists: indexing numpy arrays one element at a time is slow.
        return [
            [
                Reason(code=reason_code(names[j]), feature=names[j], text=texts[j], impact=impact)
                for j, impact in zip(row_order, row_impacts, strict=True)
                if impact > 0
            ]
            for row_order, row_impacts in zip(
                ranking.order.tolist(), ranking.impacts.tolist(), strict=True
            )
        ]
