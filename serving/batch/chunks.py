"""Scoring and explaining one chunk of a batch file, without Celery.

`score_chunk` validates a chunk's input rows (`serving.batch.validation`) and turns them into
its output rows (the input columns plus `row`, `probability`, `decision`, `reason_codes` and
`rejection_reason`) and the decisions to record; `decision_columns` lays the latter out as the
decision log stores them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import orjson
import pyarrow as pa

from loanops.explain import ReasonRanking, Variant, reason_code
from loanops.schema import Feature, FeatureSchema
from serving.batch.job import ChunkCounts
from serving.batch.validation import ValidatedChunk, validate_chunk

if TYPE_CHECKING:
    import pandas as pd

    from serving.model import LoadedModel
    from serving.scorer.compiled import CompiledScorer

INPUT_PREFIX = "input:"
"""Prefix of the feature columns in a chunk's decisions table."""


@dataclass(frozen=True)
class ScoredChunk:
    """One chunk, scored: the output rows, the decisions to record, and its counts."""

    table: pa.Table
    """The input columns plus `row`, `probability`, `decision`, `reason_codes` and
    `rejection_reason`, one row per input row, in order."""
    decisions: pa.Table
    """One row per scored row: `row`, `probability`, `decision`, `reasons` (JSON) and the
    features as validated (`input:<name>`); the model, threshold, job and time ride in the
    schema's metadata. When a challenger shadows the job, the record step adds its columns
    (`serving.batch.shadow`). `decision_columns` lays it out as the decision log stores it."""
    counts: ChunkCounts


def score_chunk(
    table: pa.Table,
    model: LoadedModel,
    *,
    first_row: int,
    job_id: str,
    top_reasons: int,
    decided_at: datetime | None = None,
) -> ScoredChunk:
    """Validate, score and explain one chunk of a batch file.

    Args:
        table: the chunk's input rows, every column of the file.
        model: the version the job is pinned to.
        first_row: input position of the chunk's first row.
        job_id: the job, for the decisions' request ids `<job id>-<row>`.
        top_reasons: most adverse-action reasons per declined row.
        decided_at: time stamp of the decisions; now by default.

    Returns:
        The scored chunk. Declined rows carry their adverse-action reason codes (";"-joined);
        approved and rejected rows carry none.
    """
    n_rows = table.num_rows
    checked = validate_chunk(table, model.schema)
    valid = checked.valid
    scored_rows = np.flatnonzero(valid)
    # Every row valid (the usual case): the frame views the validated columns, which it only
    # reads, instead of copying them.
    features = checked.frame(scored_rows if len(scored_rows) < n_rows else slice(None))
    probability = np.full(n_rows, np.nan)
    decision = np.full(n_rows, None, dtype=object)
    codes = np.full(n_rows, None, dtype=object)
    decided = decide_rows(features, model, top_reasons=top_reasons)
    probability[scored_rows] = decided.probability
    decision[scored_rows] = decided.decision
    codes[scored_rows] = decided.codes
    rows = np.arange(first_row, first_row + n_rows, dtype=np.int64)
    output = (
        table.append_column("row", pa.array(rows))
        .append_column("probability", pa.array(probability, mask=~valid, type=pa.float64()))
        .append_column("decision", pa.array(decision, type=pa.string()))
        .append_column("reason_codes", pa.array(codes, type=pa.string()))
        .append_column("rejection_reason", pa.array(checked.rejections, type=pa.string()))
    )
    metadata = {
        "job_id": job_id,
        "model_name": model.name,
        "model_version": model.version,
        "threshold": repr(float(model.threshold)),
        "decided_at": (decided_at or datetime.now(UTC)).isoformat(),
    }
    decisions = decisions_table(checked, model.schema, rows, decided, metadata)
    counts = ChunkCounts(rows=n_rows, valid=len(scored_rows), rejected=n_rows - len(scored_rows))
    return ScoredChunk(table=output, decisions=decisions, counts=counts)


def decisions_table(
    checked: ValidatedChunk,
    schema: FeatureSchema,
    rows: np.ndarray,
    decided: DecidedRows,
    metadata: Mapping[str, str],
) -> pa.Table:
    """The valid rows' decisions as the record task logs them (`decision_columns`).

    Args:
        checked: The chunk as `validate_chunk` left it.
        schema: The schema it was validated against.
        rows: Input position of every row of the chunk.
        decided: `decide_rows` on its valid rows.
        metadata: The job, model, threshold and time, as `score_chunk` sets them.
    """
    valid = checked.valid
    return pa.table(
        {
            "row": pa.array(rows[valid]),
            "probability": pa.array(decided.probability, type=pa.float64()),
            "decision": pa.array(decided.decision, type=pa.string()),
            "reasons": pa.array(decided.reasons, type=pa.string()),
            **{
                f"{INPUT_PREFIX}{feature.name}": _input_column(checked, feature, valid)
                for feature in schema.features
            },
        }
    ).replace_schema_metadata(dict(metadata))


@dataclass(frozen=True)
class DecidedRows:
    """One model's decisions on validated rows, in row order."""

    probability: np.ndarray
    decision: np.ndarray
    """`approve` or `decline` per row."""
    reasons: np.ndarray
    """The adverse-action reasons as decision-log JSON; `[]` for an approved row."""
    codes: np.ndarray
    """The reason codes joined with ";"; None for an approved row."""


def decide_rows(features: pd.DataFrame, model: LoadedModel, *, top_reasons: int) -> DecidedRows:
    """Score and explain rows that `validate_chunk` has cast already."""
    n = len(features)
    reasons = np.full(n, "[]", dtype=object)
    codes = np.full(n, None, dtype=object)
    if n == 0:
        return DecidedRows(np.empty(0), np.empty(0, dtype=object), reasons, codes)
    p, decided = model.score_frame(features, cast=False)
    declined = np.flatnonzero(decided == "decline")
    if len(declined):
        ranking = model.explainer.rank_reasons(
            features.iloc[declined], p[declined], _CastAlready(model.scorer), top=top_reasons
        )
        reasons[declined], codes[declined] = _reason_texts(ranking)
    return DecidedRows(p, decided, reasons, codes)


@dataclass(frozen=True)
class _CastAlready:
    """The scorer's variants of frames that `validate_chunk` has cast already."""

    scorer: CompiledScorer

    def score_variants(self, frame: pd.DataFrame, variants: Sequence[Variant]) -> np.ndarray:
        return self.scorer.score_variants(frame, variants, cast=False)


def _reason_texts(ranking: ReasonRanking) -> tuple[list[str], list[str]]:
    """Per row, its reasons as decision-log JSON and its reason codes joined with ";"."""
    codes = [reason_code(name) for name in ranking.features]
    # Each reason is `{"code": ..., "text": ..., "impact": ...}`; all but the impact is fixed
    # per feature, so it is encoded once.
    heads = [
        orjson.dumps({"code": code, "text": text}).decode()[:-1] + ',"impact":'
        for code, text in zip(codes, ranking.texts, strict=True)
    ]
    as_json: list[str] = []
    joined: list[str] = []
    for row_order, row_impacts in zip(
        ranking.order.tolist(), ranking.impacts.tolist(), strict=True
    ):
        kept = [(j, impact) for j, impact in zip(row_order, row_impacts, strict=True) if impact > 0]
        as_json.append("[" + ",".join(f"{heads[j]}{impact!r}}}" for j, impact in kept) + "]")
        joined.append(";".join(codes[j] for j, _ in kept))
    return as_json, joined


def _input_column(checked: ValidatedChunk, feature: Feature, valid: np.ndarray) -> pa.Array:
    """A validated feature of the scored rows as the decision log keeps it."""
    if feature.is_categorical:
        return checked.texts[feature.name].filter(pa.array(valid)).combine_chunks()
    array = pa.array(checked.columns[feature.name][valid], from_pandas=True)
    # Validated counts are whole, so the cast is exact; a missing value stays null.
    return array.cast(pa.int64()) if feature.kind == "int" else array


def decision_columns(table: pa.Table) -> tuple[str, str, pa.Table]:
    """A chunk's decisions table (see `ScoredChunk.decisions`) as the log stores it.

    Column for column, in Arrow: no Python object per decision. Request ids are
    `<job id>-<row>`, so writing the same chunk twice records nothing more.

    Returns:
        The model name, its version, and the decisions laid out as a segment
        (`loanops.decisions.segments`), for `loanops.decisions.bulk.write_segment`.
    """
    import pyarrow.compute as pc

    from loanops.decisions.segments import PAIRED_FIELDS, TYPED_PREFIX

    metadata = {
        key.decode(): value.decode() for key, value in (table.schema.metadata or {}).items()
    }
    job_id = metadata["job_id"]
    n = table.num_rows
    decided_at = pa.scalar(
        datetime.fromisoformat(metadata["decided_at"]).astimezone(UTC), pa.timestamp("us", tz="UTC")
    )
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "request_id": pc.binary_join_element_wise(
            job_id, table.column("row").cast(pa.string()), "-"
        ),
        "decided_at": pa.repeat(decided_at, n),
        "threshold": pa.repeat(pa.scalar(float(metadata["threshold"]), pa.float64()), n),
        "probability": table.column("probability"),
        "decision": table.column("decision").dictionary_encode(),
        "reasons": table.column("reasons"),
        "source": pa.repeat("batch", n).dictionary_encode(),
        "job_id": pa.repeat(job_id, n).dictionary_encode(),
    }
    for name in PAIRED_FIELDS:
        if name in table.column_names:  # a job a challenger shadows (`serving.batch.shadow`)
            columns[name] = table.column(name)
    for name in table.column_names:
        if name.startswith(INPUT_PREFIX):
            column = table.column(name)
            if pa.types.is_floating(column.type):
                # As JSON would keep it: a value that is no finite number is missing.
                column = pc.if_else(pc.is_finite(column), column, pa.scalar(None, column.type))
            elif pa.types.is_large_string(column.type) or pa.types.is_dictionary(column.type):
                column = column.cast(pa.string())
            columns[TYPED_PREFIX + name.removeprefix(INPUT_PREFIX)] = column
    return metadata["model_name"], metadata["model_version"], pa.table(columns)
