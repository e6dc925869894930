"""A scorecard compiled: per feature, its bin edges or category groups and what each bin adds to
the logit (the logistic regression's coefficient times the bin's weight of evidence).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from loanops.scorecard import WoEEncoder
from serving.scorer.parts import (
    Additive,
    Block,
    CategoryTable,
    Columns,
    FloatArray,
    Term,
    UnsupportedModelError,
)


@dataclass(frozen=True)
class _NumericBins:
    name: str
    edges: tuple[float, ...]
    weights: tuple[float, ...]
    """What each bin adds to the logit, in bin order."""
    missing: float

    def of(self, value: Any) -> float:
        if value is None or value != value:
            return self.missing
        return self.weights[bisect.bisect_right(self.edges, float(value))]


@dataclass(frozen=True)
class Bins(Additive):
    """The logit of a scorecard as a sum of per-bin weights."""

    intercept: float
    numbers: tuple[_NumericBins, ...]
    categories: tuple[CategoryTable, ...]

    family = "scorecard"
    one_by_one = 24

    @cached_property
    def terms(self) -> tuple[Term, ...]:
        return (*self.numbers, *self.categories)

    def columns(self, columns: Columns, n_rows: int) -> FloatArray:
        total = np.full(n_rows, self.intercept)
        for bins in self.numbers:
            values = columns.number(bins.name)
            index = np.searchsorted(np.asarray(bins.edges), values, side="right")
            # The appended entry, picked where the value is missing.
            table = np.array([*bins.weights, bins.missing])
            total += table[np.where(np.isnan(values), len(bins.weights), index)]
        for table_ in self.categories:
            total += columns.category(table_)
        return total


def is_scorecard_block(blocks: list[Block]) -> bool:
    return len(blocks) == 1 and isinstance(blocks[0].transformer, WoEEncoder)


def compile_scorecard(blocks: list[Block], classifier: LogisticRegression) -> Bins:
    coef = np.asarray(classifier.coef_, dtype=np.float64)
    if coef.shape[0] != 1 or len(classifier.classes_) != 2:
        raise UnsupportedModelError("only a binary logistic regression is supported")
    (block,) = blocks
    encoder: WoEEncoder = block.transformer
    numbers: list[_NumericBins] = []
    categories: list[CategoryTable] = []
    for bins, weight in zip(encoder.bins_, coef[0][block.output], strict=True):
        added = tuple(float(weight * w) for w in bins.woe)
        missing = float(weight * bins.missing_woe)
        if bins.categorical:
            values = {v: added[i] for i, group in enumerate(bins.groups) for v in group}
            # An unseen category carries no evidence: WoE 0.
            categories.append(CategoryTable(bins.name, values, unknown=0.0, missing=missing))
        else:
            numbers.append(_NumericBins(bins.name, bins.edges, added, missing))
    return Bins(float(classifier.intercept_[0]), tuple(numbers), tuple(categories))
