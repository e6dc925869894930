"""Upstream bugs to inject into generated loans: wrong units, wrong types, new categories.

Only tests use them: each returns a corrupted copy of a `loanops.data.synthetic.generate` frame,
for the validation and monitoring tests to catch. A dropped column is `tests.factories.drop_column`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from loanops.data.synthetic import SCHEMA


def _row_sample(frame: pd.DataFrame, share: float, seed: int) -> npt.NDArray[np.intp]:
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(frame), size=round(share * len(frame)), replace=False))


def income_as_monthly(frame: pd.DataFrame, share: float, seed: int = 0) -> pd.DataFrame:
    """An upstream unit bug: `annual_inc` holds the monthly income for `share` of the rows.

    Args:
        frame: a generated frame.
        share: fraction of rows to corrupt, in [0, 1].
        seed: seed choosing the rows.

    Returns:
        A corrupted copy.

    Raises:
        ValueError: when `share` is outside [0, 1].
    """
    corrupted = frame.copy()
    rows = _row_sample(frame, share, seed)
    column = corrupted.columns.get_loc("annual_inc")
    corrupted.iloc[rows, column] = np.round(frame["annual_inc"].to_numpy()[rows] / 12.0, 2)
    return corrupted


def revol_util_as_fraction(frame: pd.DataFrame) -> pd.DataFrame:
    """An upstream unit bug: `revol_util` as a fraction (0-1.5) instead of a percentage.

    Args:
        frame: a generated frame.

    Returns:
        A corrupted copy.
    """
    corrupted = frame.copy()
    corrupted["revol_util"] = frame["revol_util"] / 100.0
    return corrupted


def int_rate_as_string(frame: pd.DataFrame) -> pd.DataFrame:
    """An upstream dtype bug: `int_rate` as strings such as "13.5%".

    Args:
        frame: a generated frame.

    Returns:
        A corrupted copy.
    """
    corrupted = frame.copy()
    corrupted["int_rate"] = frame["int_rate"].round(2).astype(str) + "%"
    return corrupted


def unseen_category(
    frame: pd.DataFrame, column: str, value: str, share: float, seed: int = 0
) -> pd.DataFrame:
    """An upstream vocabulary change: `value`, unknown to the schema, in `share` of `column`.

    Args:
        frame: a generated frame.
        column: a categorical column, e.g. "purpose".
        value: the new category, e.g. "crypto".
        share: fraction of rows to corrupt, in [0, 1].
        seed: seed choosing the rows.

    Returns:
        A corrupted copy.

    Raises:
        KeyError: when `column` is not in the frame.
        ValueError: when `column` is not categorical, `value` is already one of its categories,
            or `share` is outside [0, 1].
    """
    if column not in frame.columns:
        raise KeyError(column)
    if column in SCHEMA.feature_names:
        feature = SCHEMA.feature(column)
        if feature.categories is None:
            raise ValueError(f"{column!r} is not a categorical feature")
        if value in feature.categories:
            raise ValueError(f"{value!r} is already a category of {column!r}")
    corrupted = frame.copy()
    rows = _row_sample(frame, share, seed)
    corrupted.iloc[rows, corrupted.columns.get_loc(column)] = value
    return corrupted
