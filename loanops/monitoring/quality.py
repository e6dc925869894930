"""Data quality of a window on every row: null rates, out-of-range values, wrong types, new
categories, each against the reference; counted batch by batch, no sampling, no Evidently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Final

import numpy as np
import pandas as pd

from loanops.monitoring.reference import Reference, ReferenceStatistics
from loanops.monitoring.results import DataQuality, FeatureQuality
from loanops.monitoring.statistics import share
from loanops.monitoring.thresholds import MonitorThresholds
from loanops.monitoring.window import PreparedBatch, frame_batches, prepare_batch
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
    counts = QualityCounts(schema)
    for batch in frame_batches(current):
        counts.add(prepare_batch(batch, schema))
    return data_quality(counts, reference.statistics, schema, thresholds or MonitorThresholds())


def check_same_features(schema: FeatureSchema, reference: FeatureSchema) -> None:
    """Refuse a schema whose features (names, kinds, order) differ from the reference's."""
    ours = [(f.name, f.kind) for f in schema.features]
    theirs = [(f.name, f.kind) for f in reference.features]
    if ours != theirs:
        raise ValueError(
            f"schema {schema.name!r} does not match the reference's ({reference.name!r}): "
            "features or kinds differ"
        )


class QualityCounts:
    """What data quality needs from a window, counted batch by batch: memory is per category."""

    def __init__(self, schema: FeatureSchema) -> None:
        self._schema = schema
        self.rows = 0
        self.present: set[str] = set()
        """Features with a column in at least one batch; the others are missing."""
        self.nulls = dict.fromkeys(schema.feature_names, 0)
        """Values missing as logged (not counting the invalid ones)."""
        self.invalid = dict.fromkeys(schema.feature_names, 0)
        self.out_of_range = dict.fromkeys(schema.feature_names, 0)
        self.categories: dict[str, Counter[str]] = {
            name: Counter() for name in schema.categorical_features
        }

    def add(self, batch: PreparedBatch) -> None:
        """Count one prepared batch."""
        import pyarrow.compute as pc

        self.rows += batch.rows
        self.present |= {name for name in self.nulls if name not in batch.absent}
        for feature in self._schema.features:
            name = feature.name
            invalid = batch.invalid[name]
            self.invalid[name] += invalid
            if feature.is_categorical:
                texts = batch.texts[name]
                self.nulls[name] += texts.null_count
                counted = pc.value_counts(texts)
                for value, count in zip(
                    counted.field("values").to_pylist(),
                    counted.field("counts").to_pylist(),
                    strict=True,
                ):
                    if value is not None:
                        self.categories[name][value] += count
                continue
            values = batch.numbers[name]
            self.nulls[name] += int(np.isnan(values).sum()) - invalid
            outside = np.zeros(len(values), dtype=np.bool_)
            if feature.minimum is not None:
                outside |= values < feature.minimum
            if feature.maximum is not None:
                outside |= values > feature.maximum
            self.out_of_range[name] += int(outside.sum())


def data_quality(
    counts: QualityCounts,
    stats: ReferenceStatistics,
    schema: FeatureSchema,
    thresholds: MonitorThresholds,
) -> DataQuality:
    """The data-quality findings on a window's counts, with their flags.

    Args:
        counts: The window's `QualityCounts`, every batch added.
        stats: The reference's statistics.
        schema: The model's feature schema.
        thresholds: Flag thresholds.

    Returns:
        Per-feature findings and the features each flag names.
    """
    rows = counts.rows
    missing = tuple(name for name in schema.feature_names if name not in counts.present)
    results: list[FeatureQuality] = []
    for feature in schema.features:
        reference = stats.features[feature.name]
        unknown: dict[str, int] = {}
        unseen: dict[str, int] = {}
        if feature.name in missing:
            null_rate = 1.0
        else:
            null_rate = share(counts.nulls[feature.name], rows)
            if feature.is_categorical:
                allowed = set(feature.categories or ())
                seen = set(reference.category_shares or {})
                for value, count in counts.categories[feature.name].items():
                    if value not in allowed:
                        unknown[str(value)] = int(count)
                    elif value not in seen:
                        unseen[str(value)] = int(count)
        change = null_rate - reference.null_rate
        results.append(
            FeatureQuality(
                feature=feature.name,
                kind=feature.kind,
                null_rate=null_rate,
                reference_null_rate=reference.null_rate,
                null_rate_change=change,
                invalid=counts.invalid[feature.name],
                out_of_range=0 if feature.name in missing else counts.out_of_range[feature.name],
                unknown_categories=_top(unknown),
                unseen_categories=_top(unseen),
                missingness_spike=change > thresholds.null_rate_increase,
            )
        )
    return DataQuality(
        rows=rows,
        features=tuple(results),
        missing_columns=missing,
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
