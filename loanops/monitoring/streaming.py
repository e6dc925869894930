"""One pass over a window's batches, keeping only what a monitor run needs from it.

`WindowStatistics` adds up, batch by batch: the data-quality counts (`quality.QualityCounts`),
the score's PSI and KS counts (`statistics.ScoreCounts`), the labels of the summary (models,
time span) and the seeded sample given to Evidently (`sample.WindowSample`). Its memory is
bounded by the sample, the reference's distinct scores and the categories seen, not by the
window, so a run over ten million decisions holds one batch at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import numpy as np
import pandas as pd

from loanops.decisions.stream import ColumnBatch
from loanops.monitoring.quality import QualityCounts
from loanops.monitoring.reference import PREDICTION_COLUMN, Reference
from loanops.monitoring.sample import WindowSample
from loanops.monitoring.statistics import ScoreCounts
from loanops.monitoring.window import prepare_batch
from loanops.schema import FeatureSchema


class WindowStatistics:
    """What a monitor run reads from a window, accumulated one batch at a time."""

    def __init__(
        self, reference: Reference, schema: FeatureSchema, *, sample_rows: int, seed: int
    ) -> None:
        """Args:
        reference: The reference of the model version (its scores bound the KS counts).
        schema: The model's feature schema.
        sample_rows: Rows of the window kept for Evidently.
        seed: Seed of that sample.
        """
        self._schema = schema
        self.quality = QualityCounts(schema)
        reference_scores = reference.frame[PREDICTION_COLUMN].dropna().to_numpy(np.float64)
        self.scores = ScoreCounts(reference_scores, reference.statistics.prediction)
        self.sample = WindowSample(sample_rows, seed)
        self.has_score_column = False
        self.model_names: set[str] = set()
        self.model_versions: set[str] = set()
        self._first: pd.Timestamp | None = None
        self._last: pd.Timestamp | None = None

    @property
    def rows(self) -> int:
        return self.quality.rows

    def add_all(self, batches: Iterable[ColumnBatch]) -> WindowStatistics:
        """Add every batch, in order; returns self."""
        for batch in batches:
            self.add(batch)
        return self

    def add(self, batch: ColumnBatch) -> None:
        """Add one batch of the window."""
        if not batch.rows:
            return
        prepared = prepare_batch(batch, self._schema)
        self.quality.add(prepared)
        self.sample.add(prepared)
        if prepared.scores is not None:
            self.has_score_column = True
            self.scores.add(prepared.scores[~np.isnan(prepared.scores)])
        self.model_names |= prepared.model_names
        self.model_versions |= prepared.model_versions
        if prepared.decided is not None:
            first, last = prepared.decided
            self._first = first if self._first is None else min(self._first, first)
            self._last = last if self._last is None else max(self._last, last)

    @property
    def time_span(self) -> tuple[datetime, datetime] | None:
        """The earliest and latest ``decided_at`` seen, if any batch had one."""
        if self._first is None or self._last is None:
            return None
        return self._first.to_pydatetime(), self._last.to_pydatetime()

    @property
    def present_features(self) -> list[str]:
        """The schema's features with a column in at least one batch, in schema order."""
        return [name for name in self._schema.feature_names if name in self.quality.present]

    def sample_frame(self) -> pd.DataFrame:
        """The seeded sample of the window's present features, with the score if it has one."""
        return self.sample.frame(self.present_features, with_scores=self.has_score_column)
