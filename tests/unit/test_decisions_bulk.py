"""Columnar writes on SQLite: a batch chunk's Arrow columns stored as rows and one segment."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

import loanops.outcomes  # noqa: F401  (its table is part of Base.metadata and of the migrations)
from loanops.decisions.bulk import write_segment
from loanops.decisions.read import count_decisions, read_decisions
from loanops.decisions.segments import decode
from loanops.decisions.table import DECISIONS_TABLE, SEGMENTS_TABLE
from serving.batch.chunks import decision_columns

WHEN = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)


def chunk(first: int, n: int, **columns: list[object]) -> pa.Table:
    """A chunk's decisions table as `score_chunk` makes it, rows `first` to `first + n - 1`."""
    probability = [(i % 10) / 10 for i in range(n)]
    data: dict[str, object] = {
        "row": pa.array(range(first, first + n), pa.int64()),
        "probability": pa.array(probability, pa.float64()),
        "decision": pa.array(["decline" if p >= 0.5 else "approve" for p in probability]),
        "reasons": pa.array(["[]"] * n),
        "input:loan_amnt": pa.array([1_000 + i for i in range(n)], pa.int64()),
        "input:dti": pa.array([float(i) if i % 7 else float("nan") for i in range(n)]),
        "input:grade": pa.array([None if i % 5 == 0 else "B" for i in range(n)], pa.string()),
    }
    data |= {name: pa.array(values) for name, values in columns.items()}
    metadata = {
        "job_id": "job",
        "model_name": "loan-default",
        "model_version": "3",
        "threshold": "0.5",
        "decided_at": WHEN.isoformat(),
    }
    return pa.table(data).replace_schema_metadata(metadata)


def segments(engine: Engine) -> list[pa.Table]:
    with engine.connect() as connection:
        blobs = connection.execute(
            sa.select(SEGMENTS_TABLE.c.data).order_by(SEGMENTS_TABLE.c.segment_id)
        ).scalars()
        return [decode(blob) for blob in blobs]


def test_a_chunk_is_stored_once_and_a_partly_new_one_adds_only_its_new_rows(
    engine: Engine,
) -> None:
    assert write_segment(engine, *decision_columns(chunk(0, 120))) == 120
    assert write_segment(engine, *decision_columns(chunk(0, 120))) == 0  # redelivered
    assert write_segment(engine, *decision_columns(chunk(100, 50))) == 30

    assert count_decisions(engine) == 150
    stored = segments(engine)
    assert [table.num_rows for table in stored] == [120, 30]
    assert stored[1]["request_id"].to_pylist() == sorted(f"job-{i}" for i in range(120, 150))
    with engine.connect() as connection:
        pointers = dict(
            connection.execute(
                sa.select(DECISIONS_TABLE.c.request_id, DECISIONS_TABLE.c.segment_id)
            ).all()
        )
    first_segment = {pointers[f"job-{i}"] for i in range(120)}
    second_segment = {pointers[f"job-{i}"] for i in range(120, 150)}
    assert len(first_segment) == len(second_segment) == 1 and first_segment != second_segment
    frame = read_decisions(engine, inputs={"loan_amnt": "number", "dti": "number"})
    assert len(frame) == 150 and frame["request_id"].is_unique
    first = frame.set_index("request_id").loc["job-7"]
    assert (first["loan_amnt"], first["source"], first["job_id"]) == (1_007, "batch", "job")
    assert first["decided_at"] == WHEN
    # NaN is stored as missing, as JSON would keep it: every 7th row of each chunk written.
    assert frame["dti"].isna().sum() == len(range(0, 120, 7)) + len(range(21, 50, 7))


def test_a_request_id_repeated_in_a_batch_is_stored_once(engine: Engine) -> None:
    name, version, table = decision_columns(chunk(0, 10))
    doubled = pa.concat_tables([table, table.slice(2, 3)])

    assert write_segment(engine, name, version, doubled) == 10
    assert [t.num_rows for t in segments(engine)] == [10]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"input:grade": ["B\x00"] * 5}, "NUL"),
        ({"probability": [0.1, 0.2, 1.5, 0.3, 0.4]}, "probability"),
        ({"probability": [0.1, 0.2, float("nan"), 0.3, 0.4]}, "probability"),
        ({"decision": ["approve", "maybe", "approve", "approve", "approve"]}, "decision"),
        ({"reasons": ["[]", "[]", "[]", "[]", '["\x00"]']}, "NUL"),
    ],
)
def test_a_chunk_the_log_cannot_store_is_refused_whole_before_writing(
    engine: Engine, columns: dict[str, list[object]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        write_segment(engine, *decision_columns(chunk(0, 5, **columns)))

    assert count_decisions(engine) == 0
    assert segments(engine) == []


def test_a_batch_without_its_model_or_with_foreign_columns_is_refused(engine: Engine) -> None:
    _, version, table = decision_columns(chunk(0, 5))
    with pytest.raises(ValueError, match="model name"):
        write_segment(engine, "", version, table)
    with pytest.raises(ValueError, match="not inputs"):
        write_segment(engine, "m", version, table.append_column("extra", pa.array([1] * 5)))
    with pytest.raises(ValueError, match="needs the columns"):
        write_segment(engine, "m", version, table.drop_columns(["threshold"]))


def test_ids_and_a_job_that_need_escaping_are_stored_as_given(engine: Engine) -> None:
    # The shared values are bound once and the ids sent as one JSON array: quotes, backslashes,
    # control characters and non-ASCII text must come back unchanged.
    job = 'job "7"\t\\ \n é'
    table = chunk(0, 30)
    metadata = {**table.schema.metadata, b"job_id": job.encode()}
    written = table.replace_schema_metadata(metadata)

    assert write_segment(engine, *decision_columns(written)) == 30
    assert write_segment(engine, *decision_columns(written)) == 0
    with engine.connect() as connection:
        stored = set(connection.execute(sa.select(DECISIONS_TABLE.c.request_id)).scalars())
    assert stored == {f"{job}-{i}" for i in range(30)}
    segment = segments(engine)[0]
    assert segment["request_id"].to_pylist() == sorted(f"{job}-{i}" for i in range(30))
    assert segment["job_id"].cast(pa.string()).to_pylist() == [job] * 30
