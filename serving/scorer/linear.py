"""Logistic regression compiled: imputer fill, log1p, standard scaling and a weight per number,
and the weight of the one-hot column each category value lights up (infrequent bucket included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    StandardScaler,
)

from serving.scorer.parts import (
    NAN,
    Additive,
    Block,
    CategoryTable,
    Columns,
    FloatArray,
    Term,
    UnsupportedModelError,
    is_identity,
    is_nan,
    transformer_steps,
)


@dataclass(frozen=True)
class _NumericTerm:
    """One number's way into the logit: impute, maybe log1p, standardise, weigh."""

    name: str
    fill: float
    """The imputer's statistic; NaN when there is no imputer (and so NaN stays NaN)."""
    log: bool
    mean: float
    scale: float
    weight: float

    def of(self, value: Any) -> float:
        value = self.fill if value is None or value != value else float(value)
        if self.log:
            value = math.log1p(value)
        return self.weight * ((value - self.mean) / self.scale)


@dataclass(frozen=True)
class Linear(Additive):
    """The logit of a logistic regression as a sum of per-feature terms."""

    intercept: float
    numbers: tuple[_NumericTerm, ...]
    categories: tuple[CategoryTable, ...]
    """Each maps a category value to the weight of the one-hot column it sets."""

    family = "logreg"
    one_by_one = 24

    @cached_property
    def terms(self) -> tuple[Term, ...]:
        return (*self.numbers, *self.categories)

    def columns(self, columns: Columns, n_rows: int) -> FloatArray:
        total = np.full(n_rows, self.intercept)
        for term in self.numbers:
            values = columns.number(term.name)
            values[np.isnan(values)] = term.fill
            if term.log:
                np.log1p(values, out=values)
            total += term.weight * ((values - term.mean) / term.scale)
        for table in self.categories:
            total += columns.category(table)
        return total


def _is_log1p(step: Any) -> bool:
    return isinstance(step, FunctionTransformer) and step.func is np.log1p and not step.kw_args


def _numeric_terms(steps: list[Any], columns: list[str], weights: FloatArray) -> list[_NumericTerm]:
    """Terms for a block of numbers: [impute] → [log1p] → [standardise], each step optional."""
    n = len(columns)
    fill, log = [NAN] * n, False
    mean, scale = [0.0] * n, [1.0] * n
    stage = 0  # each kind of step may come once, in the order above
    for step in steps:
        if is_identity(step):
            continue
        if isinstance(step, SimpleImputer) and stage < 1:
            fill, stage = _numeric_fill(step, n), 1
        elif _is_log1p(step) and stage < 2:
            log, stage = True, 2
        elif isinstance(step, StandardScaler) and stage < 3:
            if step.with_mean:
                mean = [float(m) for m in step.mean_]
            if step.with_std:
                scale = [float(s) for s in step.scale_]
            stage = 3
        else:
            raise UnsupportedModelError(f"cannot compile {step!r} in a block of numbers")
    if len(weights) != n:
        raise UnsupportedModelError(f"numbers {columns} give {len(weights)} columns, not {n}")
    return [
        _NumericTerm(name, fill[j], log, mean[j], scale[j], float(weights[j]))
        for j, name in enumerate(columns)
    ]


def _numeric_fill(imputer: SimpleImputer, n: int) -> list[float]:
    statistics = np.asarray(imputer.statistics_, dtype=np.float64)
    if not is_nan(imputer.missing_values) or imputer.add_indicator:
        raise UnsupportedModelError(f"cannot compile {imputer!r}: only NaN imputation is known")
    if len(statistics) != n or not np.isfinite(statistics).all():
        # A NaN statistic means an all-missing training column, which the imputer drops.
        raise UnsupportedModelError(f"{imputer!r} has statistics {statistics}")
    return [float(s) for s in statistics]


def _one_hot_tables(
    steps: list[Any], columns: list[str], weights: FloatArray
) -> list[CategoryTable]:
    """Per category feature, the weight of the one-hot column each value sets.

    `[impute None → constant] → OneHotEncoder(drop=None)`. The encoder's columns per feature are
    its frequent categories in order, then one infrequent column when some categories had fewer
    than `min_frequency` rows. An unknown value sets the infrequent column under
    `handle_unknown="infrequent_if_exist"` when there is one, and no column otherwise.
    """
    *before, encoder = steps
    fills: list[Any] = [None] * len(columns)
    for step in before:
        if is_identity(step):
            continue
        if (
            isinstance(step, SimpleImputer)
            and step.strategy == "constant"
            and step.missing_values is None
            and not step.add_indicator
        ):
            fills = list(step.statistics_)
        else:
            raise UnsupportedModelError(f"cannot compile {step!r} before a one-hot encoder")
    if not isinstance(encoder, OneHotEncoder):
        raise UnsupportedModelError(f"cannot compile {encoder!r} as a category encoder")
    if encoder.drop_idx_ is not None:
        raise UnsupportedModelError(f"cannot compile {encoder!r}: only drop=None is known")
    if encoder.handle_unknown not in ("ignore", "infrequent_if_exist", "warn"):
        raise UnsupportedModelError(f"cannot compile {encoder!r}: unknown values would raise")
    try:
        infrequent = encoder.infrequent_categories_
    except AttributeError:  # neither min_frequency nor max_categories was set
        infrequent = [None] * len(columns)

    rares = [[] if r is None else list(r) for r in infrequent]
    widths = [
        len(categories) - len(rare) + (1 if rare else 0)
        for categories, rare in zip(encoder.categories_, rares, strict=True)
    ]
    if sum(widths) != len(weights):
        raise UnsupportedModelError(f"categories {columns} give {len(weights)} columns")

    tables, offset = [], 0
    for name, categories, rare, width, fill in zip(
        columns, encoder.categories_, rares, widths, fills, strict=True
    ):
        block = [float(w) for w in weights[offset : offset + width]]
        offset += width
        frequent = [c for c in categories if c not in rare]
        weight_of = {c: block[i] for i, c in enumerate(frequent)}
        weight_of.update(dict.fromkeys(rare, block[-1]))  # the infrequent column comes last
        unknown = block[-1] if rare and encoder.handle_unknown != "ignore" else 0.0
        values: dict[str, float] = {}
        missing = unknown
        for category, weight in weight_of.items():
            if category is None:  # seen in training, None is a category like any other
                missing = weight
            elif isinstance(category, str):
                values[category] = weight
            elif not is_nan(category):  # NaN cannot arrive: to_frame turns it into None
                raise UnsupportedModelError(f"{name!r} has a non-string category {category!r}")
        if fill is not None:
            # The imputer turned None into its fill value before the encoder saw it.
            missing = values.get(fill, unknown)
        tables.append(CategoryTable(name, values, unknown, missing))
    return tables


def compile_linear(blocks: list[Block], classifier: LogisticRegression) -> Linear:
    coef = np.asarray(classifier.coef_, dtype=np.float64)
    if coef.shape[0] != 1 or len(classifier.classes_) != 2:
        raise UnsupportedModelError("only a binary logistic regression is supported")
    weights = coef[0]
    numbers: list[_NumericTerm] = []
    categories: list[CategoryTable] = []
    for block in blocks:
        steps = transformer_steps(block.transformer)
        block_weights = weights[block.output]
        if isinstance(steps[-1], OneHotEncoder):
            categories += _one_hot_tables(steps, block.columns, block_weights)
        else:
            numbers += _numeric_terms(steps, block.columns, block_weights)
    return Linear(float(classifier.intercept_[0]), tuple(numbers), tuple(categories))
