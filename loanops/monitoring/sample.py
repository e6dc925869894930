"""The seeded sample of a window that Evidently sees, drawn in one pass over its batches.

Each row, in window order, gets a key from one seeded generator; the sample is the `rows` rows
with the smallest keys (ties broken by position), in window order. That is a uniform sample
without replacement, and the same rows whether the window comes whole or in batches of any
size: the generator's draws do not depend on how they are split, and a row whose key is above
the `rows`-th smallest seen so far can never be chosen, so only candidates are kept. Memory is
about twice the sample, whatever the window.

Which rows are chosen depends on the window's order. `stream_decisions` yields segments in the
order they were written, `read_decisions` sorts by time: where segments overlap in time (the API
and batch workers writing at once), the two orders differ, and so do the rows sampled, though
not their number nor anything computed on every row.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from loanops.monitoring.reference import PREDICTION_COLUMN
from loanops.monitoring.window import PreparedBatch, text_values

# Candidates kept, in multiples of the sample, before the surplus is dropped.
_SLACK: Final = 2


class WindowSample:
    """A seeded uniform sample of `rows` rows of a window, batch by batch (module docstring)."""

    def __init__(self, rows: int, seed: int) -> None:
        if rows < 1:
            raise ValueError(f"sample_rows must be positive, got {rows}")
        self._limit = rows
        self._generator = np.random.default_rng(seed)
        self._seen = 0
        self._ceiling = np.inf  # the limit-th smallest key kept, once the sample is full
        self._keys: list[npt.NDArray[np.float64]] = []
        self._positions: list[npt.NDArray[np.int64]] = []
        self._numbers: dict[str, list[npt.NDArray[np.float64]]] = {}
        self._texts: dict[str, list[pa.Array]] = {}
        self._scores: list[npt.NDArray[np.float64]] = []
        self._held = 0

    def add(self, batch: PreparedBatch) -> None:
        """Draw the batch's keys and keep its rows that may still be chosen."""
        keys = self._generator.random(batch.rows)
        chosen = np.flatnonzero(keys <= self._ceiling)
        if len(chosen):
            self._keys.append(keys[chosen])
            self._positions.append(self._seen + chosen)
            for name, values in batch.numbers.items():
                self._numbers.setdefault(name, []).append(values[chosen])
            for name, texts in batch.texts.items():
                self._texts.setdefault(name, []).append(texts.take(pa.array(chosen)))
            scores = batch.scores if batch.scores is not None else np.full(batch.rows, np.nan)
            self._scores.append(scores[chosen])
            self._held += len(chosen)
        self._seen += batch.rows
        if self._held > _SLACK * self._limit:
            self._keep_smallest()

    def frame(self, features: list[str], *, with_scores: bool) -> pd.DataFrame:
        """The sample: the given features (and the score if asked), in window order.

        Numeric features are float64, categorical ones objects holding str or None, as
        `loanops.monitoring.window.coerce_number` and `coerce_text` give them.
        """
        self._keep_smallest()
        columns: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.object_]] = {}
        for name in features:
            if name in self._numbers:
                columns[name] = _floats(self._numbers[name])
            else:
                texts = self._texts.get(name, [])
                joined = pa.concat_arrays(texts) if texts else pa.array([], type=pa.string())
                columns[name] = text_values(joined)
        if with_scores:
            columns[PREDICTION_COLUMN] = _floats(self._scores)
        return pd.DataFrame(columns, index=pd.RangeIndex(self._held))

    def _keep_smallest(self) -> None:
        keys = np.concatenate(self._keys) if self._keys else np.empty(0)
        positions = np.concatenate(self._positions) if self._positions else np.empty(0, np.int64)
        keep = np.sort(np.lexsort((positions, keys))[: self._limit])  # window order
        self._keys, self._positions = [keys[keep]], [positions[keep]]
        self._numbers = {n: [_floats(v)[keep]] for n, v in self._numbers.items()}
        self._texts = {
            n: [pa.concat_arrays(v).take(pa.array(keep))] for n, v in self._texts.items()
        }
        self._scores = [_floats(self._scores)[keep]]
        self._held = len(keep)
        if self._held == self._limit:
            self._ceiling = float(self._keys[0].max())


def _floats(parts: list[npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)
