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
from typing import Any

import numpy as np
import pandas as pd

from loanops.schema import FeatureSchema

FrameScorer = Callable[[pd.DataFrame], np.ndarray]
RowScorer = Callable[[Sequence[Mapping[str, Any]]], np.ndarray]


@dataclass(frozen=True)
class Reason:
    """One adverse-action reason."""

    code: str
    feature: str
    text: str
    impact: float
    """How much the probability of default would fall with the feature at its favourable value."""


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


class Explainer:
    """Ranks an applicant's features by how much each one raises their PD."""

    def __init__(
        self, schema: FeatureSchema, favourable: Mapping[str, Any], score_rows: RowScorer
    ) -> None:
        self._favourable = dict(favourable)
        self._score_rows = score_rows
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
        variants = [{**row, name: self._favourable[name]} for name in names]
        impacts = pd_ - self._score_rows(variants)
        order = np.argsort(-impacts, kind="stable")[:top]
        return [
            Reason(
                code=reason_code(names[i]),
                feature=names[i],
                text=self._texts[names[i]],
                impact=float(impacts[i]),
            )
            for i in order
            if impacts[i] > 0
        ]
