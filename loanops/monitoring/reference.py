"""The reference of a model version: its sample, its statistics computed once, on disk.

`flows/train.py` builds one for each new version (`build_reference`, `save_reference`) and logs
the folder as an artifact of that version; the monitor flow loads it (`load_reference`). The
statistics (null rates, ranges, category shares, the drift test chosen per feature, the score
deciles used by PSI) are stored as JSON next to the Parquet sample and loaded, not recomputed,
on each run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from loanops.data import frame_sha256
from loanops.monitoring.statistics import score_bins, share
from loanops.schema import FeatureKind, FeatureSchema

PREDICTION_COLUMN: Final = "probability"
"""The model's default probability, as `read_decisions` returns it."""
LABEL_COLUMN: Final = "label"
"""Reference column holding the label where known: 1 defaulted, 0 repaid, <NA> unknown."""

DEFAULT_REFERENCE_ROWS: Final = 100_000

REFERENCE_SAMPLE_FILE: Final = "reference.parquet"
REFERENCE_STATISTICS_FILE: Final = "statistics.json"
REFERENCE_SCHEMA_FILE: Final = "schema.json"

# Numeric features with at most this many distinct reference values are compared as categories,
# as Evidently does: a Wasserstein distance normed by the std of a 0/1/2 count jumps about.
_FEW_VALUES: Final = 5


class FeatureStatistics(BaseModel):
    """One feature of the reference sample, as the monitor compares against it."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: FeatureKind
    rows: int = Field(description="Non-null values.")
    null_rate: float
    distinct: int = Field(description="Distinct non-null values.")
    drift_method: Literal["wasserstein", "jensenshannon"] = Field(
        description="Distance test used on large windows; fixed here once for the version."
    )
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    std: float | None = None
    category_shares: dict[str, float] | None = Field(
        default=None, description="Share of each category among non-null values (categorical)."
    )


class PredictionStatistics(BaseModel):
    """The reference's score distribution: its deciles are the PSI bins."""

    model_config = ConfigDict(frozen=True)

    rows: int
    mean: float
    std: float
    bin_edges: tuple[float, ...] = Field(description="Inner bin edges (the deciles, deduplicated).")
    bin_shares: tuple[float, ...] = Field(description="Share of reference rows in each bin.")


class ReferenceStatistics(BaseModel):
    """What a monitor run needs from the reference besides the sample itself; JSON-serialisable."""

    model_config = ConfigDict(frozen=True)

    schema_name: str
    schema_sha256: str
    rows: int = Field(description="Rows in the reference sample.")
    source_rows: int = Field(description="Rows the sample was drawn from.")
    sample_sha256: str = Field(description="Content hash of the sample these statistics describe.")
    features: dict[str, FeatureStatistics]
    prediction: PredictionStatistics
    labelled_rows: int
    default_rate: float | None = None


@dataclass(frozen=True, eq=False)
class Reference:
    """The reference sample of a model version and its precomputed statistics.

    Attributes:
        frame: The schema's features (its dtypes, in its order), `PREDICTION_COLUMN` and
            `LABEL_COLUMN` (nullable Int8), one row per reference loan.
        schema: The feature schema the model was trained on.
        statistics: `reference_statistics(frame, schema)`, computed once.
    """

    frame: pd.DataFrame
    schema: FeatureSchema
    statistics: ReferenceStatistics

    @property
    def rows(self) -> int:
        return len(self.frame)

    @property
    def labels(self) -> pd.Series:
        """The labels (1 default, 0 repaid, <NA> unknown)."""
        return self.frame[LABEL_COLUMN]


def build_reference(
    frame: pd.DataFrame,
    probabilities: npt.ArrayLike,
    labels: npt.ArrayLike | None,
    schema: FeatureSchema,
    *,
    max_rows: int = DEFAULT_REFERENCE_ROWS,
    seed: int = 0,
) -> Reference:
    """The reference of a model version: its validation or test rows, scores and labels.

    Args:
        frame: Rows holding at least the schema's features (other columns are ignored).
        probabilities: The model's default probability for each row, in [0, 1].
        labels: 1 for default and 0 for repaid per row (e.g. `schema.labels(frame)`), NaN where
            unknown; None when no label is known.
        schema: The model's feature schema.
        max_rows: Most rows kept; larger inputs are sampled uniformly without replacement.
        seed: Seed of that sample.

    Returns:
        The sample (index reset) and its statistics.

    Raises:
        KeyError: A feature column is missing.
        ValueError: Lengths differ, a probability is outside [0, 1] or not finite, a label is
            not 0, 1 or missing, or `frame` is empty.
    """
    rows = len(frame)
    if rows == 0:
        raise ValueError("a reference needs at least one row")
    if max_rows < 1:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    scores = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if len(scores) != rows:
        raise ValueError(f"{len(scores)} probabilities for {rows} rows")
    if not (np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()):
        raise ValueError("probabilities must be finite and lie in [0, 1]")
    if labels is None:
        label_values = pd.array([pd.NA] * rows, dtype="Int8")
    else:
        raw = pd.Series(np.asarray(labels, dtype=np.float64).reshape(-1))
        if len(raw) != rows:
            raise ValueError(f"{len(raw)} labels for {rows} rows")
        if not raw.dropna().isin([0.0, 1.0]).all():
            raise ValueError("labels must be 0, 1 or missing")
        label_values = raw.astype("Int8").array
    sample = schema.to_frame(frame).reset_index(drop=True)
    sample[PREDICTION_COLUMN] = scores
    sample[LABEL_COLUMN] = label_values
    if rows > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(rows, size=max_rows, replace=False))
        sample = sample.iloc[keep].reset_index(drop=True)
    return Reference(
        frame=sample,
        schema=schema,
        statistics=reference_statistics(sample, schema, source_rows=rows),
    )


def reference_statistics(
    frame: pd.DataFrame, schema: FeatureSchema, *, source_rows: int | None = None
) -> ReferenceStatistics:
    """The statistics a monitor run compares against, computed once per model version.

    Args:
        frame: A reference sample, as `Reference.frame` holds it.
        schema: The model's feature schema.
        source_rows: Rows the sample was drawn from (default: its own length).

    Returns:
        Null rates, ranges, moments and category shares per feature, the drift test chosen for
        each, the score's deciles and bin shares, and the default rate where labels are known.

    Raises:
        ValueError: The frame has no `PREDICTION_COLUMN` values.
    """
    features: dict[str, FeatureStatistics] = {}
    for feature in schema.features:
        column = frame[feature.name]
        present = column.dropna()
        distinct = int(present.nunique())
        common: dict[str, Any] = {
            "name": feature.name,
            "kind": feature.kind,
            "rows": len(present),
            "null_rate": share(len(column) - len(present), len(column)),
            "distinct": distinct,
        }
        if feature.is_categorical:
            counts = present.value_counts()
            features[feature.name] = FeatureStatistics(
                **common,
                drift_method="jensenshannon",
                category_shares={
                    str(value): float(count) / len(present) for value, count in counts.items()
                },
            )
        else:
            values = present.to_numpy(dtype=np.float64)
            features[feature.name] = FeatureStatistics(
                **common,
                drift_method="wasserstein" if distinct > _FEW_VALUES else "jensenshannon",
                minimum=float(values.min()) if len(values) else None,
                maximum=float(values.max()) if len(values) else None,
                mean=float(values.mean()) if len(values) else None,
                std=float(values.std()) if len(values) else None,
            )
    scores = frame[PREDICTION_COLUMN].dropna().to_numpy(dtype=np.float64)
    if len(scores) == 0:
        raise ValueError(f"the reference has no {PREDICTION_COLUMN!r} values")
    edges, shares = score_bins(scores)
    labels = frame[LABEL_COLUMN].dropna() if LABEL_COLUMN in frame else pd.Series(dtype="Int8")
    return ReferenceStatistics(
        schema_name=schema.name,
        schema_sha256=schema_sha256(schema),
        rows=len(frame),
        source_rows=len(frame) if source_rows is None else source_rows,
        sample_sha256=frame_sha256(frame),
        features=features,
        prediction=PredictionStatistics(
            rows=len(scores),
            mean=float(scores.mean()),
            std=float(scores.std()),
            bin_edges=tuple(float(edge) for edge in edges),
            bin_shares=tuple(float(bin_share) for bin_share in shares),
        ),
        labelled_rows=len(labels),
        default_rate=float(labels.astype(np.float64).mean()) if len(labels) else None,
    )


def save_reference(reference: Reference, folder: str | Path) -> Path:
    """Write a reference as a folder the flow logs as one MLflow artifact directory.

    The folder gets `reference.parquet` (the sample), `statistics.json` and `schema.json`.

    Args:
        reference: The reference to write.
        folder: Folder to write into; created if missing, files in it replaced.

    Returns:
        The folder.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    reference.frame.to_parquet(root / REFERENCE_SAMPLE_FILE, index=False)
    (root / REFERENCE_STATISTICS_FILE).write_text(
        reference.statistics.model_dump_json(indent=2) + "\n"
    )
    (root / REFERENCE_SCHEMA_FILE).write_text(reference.schema.model_dump_json(indent=2) + "\n")
    return root


def load_reference(folder: str | Path, *, verify: bool = True) -> Reference:
    """Read a reference written by `save_reference`, with its cached statistics.

    Args:
        folder: The folder (e.g. the downloaded MLflow artifact directory).
        verify: Check that the statistics describe this sample and this schema (by hashing
            the sample).

    Returns:
        The reference; its statistics are read, not recomputed.

    Raises:
        FileNotFoundError: A file is missing.
        ValueError: `verify` is set and the statistics belong to another sample or schema.
    """
    root = Path(folder)
    schema = FeatureSchema.model_validate_json((root / REFERENCE_SCHEMA_FILE).read_text())
    statistics = ReferenceStatistics.model_validate_json(
        (root / REFERENCE_STATISTICS_FILE).read_text()
    )
    frame = pd.read_parquet(root / REFERENCE_SAMPLE_FILE)
    if verify:
        if statistics.schema_sha256 != schema_sha256(schema):
            raise ValueError(f"{root}: the statistics were computed for another schema")
        if statistics.sample_sha256 != frame_sha256(frame):
            raise ValueError(f"{root}: the statistics do not describe this reference sample")
    return Reference(frame=frame, schema=schema, statistics=statistics)


def schema_sha256(schema: FeatureSchema) -> str:
    """A content hash of a feature schema, to tell which schema statistics were computed for."""
    return hashlib.sha256(schema.model_dump_json().encode()).hexdigest()
