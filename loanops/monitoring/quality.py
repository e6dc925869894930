"""Data quality of a window on every row: null rates, out-of-range values, wrong types, new
categories, each against the reference; vectorised, no sampling, no Evidently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from loanops.monitoring.reference import PREDICTION_COLUMN, Reference, ReferenceStatistics
from loanops.monitoring.results import DataQuality, FeatureQuality
from loanops.monitoring.statistics import share
from loanops.monitoring.thresholds import MonitorThresholds
from loanops.schema import FeatureSchema

# Most categories listed per feature in the data-quality findings.
_LISTED_CATEGORIES: Final = 20


def check_data_quality(
    current: pd.DataFrame,
    reference: Reference,
    schema: FeatureSchema,
    *,
    thresholds: MonitorThresholds | None = None,
) -> DataQuality:
    """The data-quality part of `run_monitor` alone: every row, no sampling, no Evidently.

    It is vectorised over the whole window, so a flow can afford it on any window.

    Args:
        current: The window (see `run_monitor`).
        reference: The reference of the model version.
        schema: The model's feature schema; its features must match the reference's.
        thresholds: Flag thresholds (default: `MonitorThresholds()`).

    Returns:
        Null rates against the reference's, out-of-range and invalid values, and categories
        unknown to the schema or absent from the reference, per feature, with the flags.

    Raises:
        ValueError: The schema's features differ from the reference's.
    """
    check_same_features(schema, reference.schema)
    prepared, invalid, missing = coerce_window(current, schema)
    return data_quality(
        prepared, invalid, missing, reference.statistics, schema, thresholds or MonitorThresholds()
    )


def check_same_features(schema: FeatureSchema, reference: FeatureSchema) -> None:
    """Refuse a schema whose features (names, kinds, order) differ from the reference's."""
    ours = [(f.name, f.kind) for f in schema.features]
    theirs = [(f.name, f.kind) for f in reference.features]
    if ours != theirs:
        raise ValueError(
            f"schema {schema.name!r} does not match the reference's ({reference.name!r}): "
            "features or kinds differ"
        )


def coerce_window(
    current: pd.DataFrame, schema: FeatureSchema
) -> tuple[pd.DataFrame, dict[str, int], tuple[str, ...]]:
    """The window's features as monitoring compares them, with counts of values of the wrong type.

    Numeric features become float64 (a value that is not a number becomes NaN and is counted as
    invalid); categorical ones become objects holding str or None. Only the needed columns are
    copied, never the whole window.
    """
    columns: dict[str, npt.NDArray[Any]] = {}
    invalid: dict[str, int] = {}
    missing = tuple(name for name in schema.feature_names if name not in current)
    for feature in schema.features:
        if feature.name in missing:
            continue
        column = current[feature.name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            column = column.astype(object)
        invalid[feature.name] = 0
        if feature.is_categorical:
            present = column.notna()
            if pd.api.types.infer_dtype(column, skipna=True) not in ("string", "empty"):
                column = column.where(~present, column.astype(str))
            columns[feature.name] = column.astype(object).where(present, None).to_numpy()
        elif pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            columns[feature.name] = column.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            numbers = pd.to_numeric(column, errors="coerce").astype(np.float64)
            invalid[feature.name] = int((column.notna() & numbers.isna()).sum())
            columns[feature.name] = numbers.to_numpy()
    if PREDICTION_COLUMN in current:
        scores = pd.to_numeric(current[PREDICTION_COLUMN], errors="coerce")
        columns[PREDICTION_COLUMN] = scores.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(current))), invalid, missing


def data_quality(
    prepared: pd.DataFrame,
    invalid: Mapping[str, int],
    missing: Sequence[str],
    stats: ReferenceStatistics,
    schema: FeatureSchema,
    thresholds: MonitorThresholds,
) -> DataQuality:
    """The data-quality findings on a window `coerce_window` prepared, with their flags.

    Args:
        prepared: The window's features as `coerce_window` returns them.
        invalid: Values of the wrong type per feature, from `coerce_window`.
        missing: Features absent from the window.
        stats: The reference's statistics.
        schema: The model's feature schema.
        thresholds: Flag thresholds.

    Returns:
        Per-feature findings and the features each flag names.
    """
    rows = len(prepared)
    results: list[FeatureQuality] = []
    for feature in schema.features:
        reference = stats.features[feature.name]
        unknown: dict[str, int] = {}
        unseen: dict[str, int] = {}
        out_of_range = 0
        if feature.name in missing:
            null_rate = 1.0
        else:
            column = prepared[feature.name]
            nulls = int(column.isna().sum()) - invalid[feature.name]
            null_rate = share(nulls, rows)
            if feature.is_categorical:
                allowed = set(feature.categories or ())
                seen = set(reference.category_shares or {})
                for value, count in column.value_counts().items():
                    if value not in allowed:
                        unknown[str(value)] = int(count)
                    elif value not in seen:
                        unseen[str(value)] = int(count)
            else:
                values = column.to_numpy()
                outside = np.zeros(rows, dtype=np.bool_)
                if feature.minimum is not None:
                    outside |= values < feature.minimum
                if feature.maximum is not None:
                    outside |= values > feature.maximum
                out_of_range = int(outside.sum())
        change = null_rate - reference.null_rate
        results.append(
            FeatureQuality(
                feature=feature.name,
                kind=feature.kind,
                null_rate=null_rate,
                reference_null_rate=reference.null_rate,
                null_rate_change=change,
                invalid=invalid.get(feature.name, 0),
                out_of_range=out_of_range,
                unknown_categories=_top(unknown),
                unseen_categories=_top(unseen),
                missingness_spike=change > thresholds.null_rate_increase,
            )
        )
    return DataQuality(
        rows=rows,
        features=tuple(results),
        missing_columns=tuple(missing),
        missingness_spikes=tuple(r.feature for r in results if r.missingness_spike),
        out_of_range=tuple(
            r.feature
            for r in results
            if r.out_of_range and share(r.out_of_range, rows) > thresholds.out_of_range_share
        ),
        invalid_values=tuple(r.feature for r in results if r.invalid),
        new_categories=tuple(
            r.feature
            for r in results
            if r.unknown_categories
            or share(sum(r.unseen_categories.values()), rows) > thresholds.unseen_category_share
        ),
    )


def _top(counts: Mapping[str, int]) -> dict[str, int]:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return dict(ranked[:_LISTED_CATEGORIES])
