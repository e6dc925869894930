"""What both compiled model families share: the inputs they read (one row as a mapping, or
columns of many), the category tables values are looked up in, the fitted ColumnTransformer
blocks they are read from, the decision-function protocol, and the error for what the compiler
cannot reproduce.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

FloatArray = npt.NDArray[np.float64]


NAN = float("nan")


class UnsupportedModelError(Exception):
    """The model holds something the compiler cannot reproduce exactly; serving refuses it."""


def is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


@dataclass(frozen=True)
class CategoryTable:
    """The number each value of one categorical feature becomes: a weight, or a code for trees."""

    name: str
    values: dict[str, float]
    unknown: float
    """For a value the encoder never saw."""
    missing: float
    """For None (and NaN, which `FeatureSchema.to_frame` turns into None)."""

    def of(self, value: Any) -> float:
        if value is None or value != value:
            return self.missing
        return self.values.get(value, self.unknown)


class Columns(Protocol):
    """Feature columns of n rows, as the vectorised evaluators read them."""

    def number(self, name: str) -> FloatArray:
        """A fresh float column, NaN where missing."""
        ...

    def category(self, table: CategoryTable) -> FloatArray:
        """The column's values looked up in `table`."""
        ...


class RowColumns:
    """Columns gathered from rows (mappings) without pandas."""

    def __init__(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._rows = rows

    def number(self, name: str) -> FloatArray:
        # dtype=float turns None into NaN.
        return np.array([row[name] for row in self._rows], dtype=np.float64)

    def category(self, table: CategoryTable) -> FloatArray:
        return np.array([table.of(row[table.name]) for row in self._rows], dtype=np.float64)


class FrameColumns:
    """Columns of a frame already cast by `FeatureSchema.to_frame`."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame

    def number(self, name: str) -> FloatArray:
        return self._frame[name].to_numpy(dtype=np.float64, copy=True)

    def category(self, table: CategoryTable) -> FloatArray:
        # to_frame has turned NaN into None. get_indexer gives -1 for a value not in the index,
        # which picks the last entry: unknown.
        positions = pd.Index([*table.values, None]).get_indexer(self._frame[table.name])
        looked_up = [*table.values.values(), table.missing, table.unknown]
        return np.array(looked_up, dtype=np.float64)[positions]


@dataclass(frozen=True)
class Block:
    """One fitted transformer of a ColumnTransformer: its input columns and output slice."""

    transformer: Any
    columns: list[str]
    output: slice


class DecisionFunction(Protocol):
    """The classifier's decision_function, with the preprocessing before it folded in."""

    family: str
    one_by_one: int
    """Up to this many rows, plain Python one row at a time beats numpy columns (measured)."""

    def row(self, row: Mapping[str, Any]) -> float: ...

    def columns(self, columns: Columns, n_rows: int) -> FloatArray: ...


class Term(Protocol):
    """What one feature adds to an additive logit."""

    @property
    def name(self) -> str: ...

    def of(self, value: Any) -> float: ...


Change = tuple[str, Any]
"""One feature of a row set to another value: a variant, as the adverse-action reasons ask."""


class Additive:
    """The one-row paths of a logit that is a sum of per-feature terms (linear, scorecard).

    A subclass declares `intercept` and its terms in `terms`, in the order they are summed.
    """

    intercept: float

    @property
    def terms(self) -> tuple[Term, ...]:
        raise NotImplementedError

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {term.name: k for k, term in enumerate(self.terms)}

    def row(self, row: Mapping[str, Any]) -> float:
        total = self.intercept
        for term in self.terms:
            total += term.of(row[term.name])
        return total

    def row_variants(self, row: Mapping[str, Any], changes: Sequence[Change]) -> list[float]:
        """`row` of each variant of `row`, each evaluating only the term that changed.

        The sum runs in `row`'s order from the same partial sums, so a variant's logit is the
        one `row` gives for the changed mapping, to the last bit.
        """
        terms = self.terms
        values = [term.of(row[term.name]) for term in terms]
        partial = [self.intercept]  # partial[k]: the sum before term k
        for value in values:
            partial.append(partial[-1] + value)
        logits = []
        for name, changed in changes:
            k = self._positions.get(name)
            if k is None:  # a feature the model never reads
                logits.append(partial[-1])
                continue
            total = partial[k] + terms[k].of(changed)
            for value in values[k + 1 :]:
                total += value
            logits.append(total)
        return logits


def is_identity(step: Any) -> bool:
    if isinstance(step, str) or step is None:
        return step in ("passthrough", None)
    return isinstance(step, FunctionTransformer) and step.func is None


def transformer_steps(transformer: Any) -> list[Any]:
    if isinstance(transformer, Pipeline):
        return [step for _, step in transformer.steps]
    return [transformer]
