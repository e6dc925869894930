"""The window `bench/monitor.py` measures: drawn chunk by chunk, written as Parquet and as logs.

Writing ten million decisions through `write_decisions` takes the best part of an hour here
(one `Decision` and one JSON object per row, then each row into ``decisions``), so by default
(`--setup segments`) the bench writes only what the monitor reads: each 100k-row chunk as one
row of ``decision_segments``, its Arrow table built column-wise from the chunk. Before it writes
any, `check_segment_layout` writes the first rows through `write_decisions` into a scratch
SQLite log and requires the segment it stored to equal the one built here, value for value and
type for type, so the bench cannot drift from the product's layout unnoticed. `--setup
decisions` writes every decision through `write_decisions` instead, rows and segments.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select

from loanops.data import synthetic as syn
from loanops.data.synthetic_drift import Drift
from loanops.decisions.database import create_engine_for, migrate
from loanops.decisions.record import Decision
from loanops.decisions.segments import (
    TYPED_PREFIX,
    decode,
    encode,
    insert_segments,
    with_paired,
)
from loanops.decisions.table import SEGMENTS_TABLE
from loanops.decisions.write import write_decisions
from loanops.monitoring import reference as monitor_reference

REFERENCE_SEED = 1
WINDOW_SEED = 2
WINDOW_START = datetime(2026, 11, 19, tzinfo=UTC)
WINDOW_DAYS = 7
DB_CHUNK = 100_000
MODEL_NAME = "loan-default"
MODEL_VERSION = "1"
THRESHOLD = 0.2
_CHECKED_ROWS = 2_000


def decisions_frame(frame: pd.DataFrame, first: int, rows: int) -> pd.DataFrame:
    """Generated loans as `read_decisions` returns them, spread evenly over the window."""
    probability = syn.baseline_pd(frame)
    index = np.arange(first, first + len(frame))
    step_us = timedelta(days=WINDOW_DAYS) / timedelta(microseconds=1) / rows
    meta = pd.DataFrame(
        {
            "request_id": [f"r{i:08d}" for i in index],
            "decided_at": pd.to_datetime(WINDOW_START)
            + pd.to_timedelta(np.floor(index * step_us), unit="us"),
            "model_name": MODEL_NAME,
            "model_version": MODEL_VERSION,
            "threshold": THRESHOLD,
            "probability": probability,
            "decision": np.where(probability >= THRESHOLD, "decline", "approve"),
            "source": "batch",
            "job_id": "bench",
        }
    )
    return pd.concat([meta, frame[syn.SCHEMA.feature_names].reset_index(drop=True)], axis=1)


def window_chunks(rows: int, drift: str) -> Iterator[pd.DataFrame]:
    """The rows of `syn.generate(rows, WINDOW_SEED, drift)` in chunks of DB_CHUNK, drawn one
    generator chunk at a time; the drift, if any, starts half-way."""
    preset = None if drift == "none" else Drift.preset(drift, start=0.5)
    drawn = syn._chunks(rows, WINDOW_SEED, preset, 36, "2016-01", syn.DEFAULT_CHUNK_ROWS, 0.0)
    buffered, first = pd.DataFrame(), 0
    for part in drawn:
        buffered = pd.concat([buffered, part], ignore_index=True)
        while len(buffered) >= DB_CHUNK:
            yield decisions_frame(buffered.iloc[:DB_CHUNK], first, rows)
            buffered, first = buffered.iloc[DB_CHUNK:].reset_index(drop=True), first + DB_CHUNK
    if len(buffered):
        yield decisions_frame(buffered, first, rows)


def to_decisions(chunk: pd.DataFrame) -> list[Decision]:
    inputs = chunk[syn.SCHEMA.feature_names].to_dict("records")
    return [
        Decision(
            request_id=request_id,
            decided_at=decided_at.to_pydatetime(),
            model_name=MODEL_NAME,
            model_version=MODEL_VERSION,
            threshold=THRESHOLD,
            inputs={k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()},
            probability=float(probability),
            decision=decision,
            reasons=[],
            source="batch",
            job_id="bench",
        )
        for request_id, decided_at, probability, decision, row in zip(
            chunk["request_id"],
            chunk["decided_at"],
            chunk["probability"],
            chunk["decision"],
            inputs,
            strict=True,
        )
    ]


def segment_table(chunk: pd.DataFrame) -> pa.Table:
    """A chunk as the segment `write_decisions` stores for it, built column by column."""
    rows = len(chunk)
    columns: dict[str, Any] = {
        "request_id": pa.array(chunk["request_id"], type=pa.string()),
        "decided_at": pa.array(chunk["decided_at"]).cast(pa.timestamp("us", tz="UTC")),
        "threshold": pa.array(chunk["threshold"], type=pa.float64()),
        "probability": pa.array(chunk["probability"], type=pa.float64()),
        "decision": pa.array(chunk["decision"], type=pa.string()).dictionary_encode(),
        "reasons": pa.array(["[]"] * rows, type=pa.string()),
        "source": pa.array(chunk["source"], type=pa.string()).dictionary_encode(),
        "job_id": pa.array(chunk["job_id"], type=pa.string()).dictionary_encode(),
    }
    # The champion's decisions alone: no challenger attached.
    table = with_paired(pa.table(columns))
    for name in syn.SCHEMA.feature_names:
        table = table.append_column(TYPED_PREFIX + name, pa.array(chunk[name], from_pandas=True))
    return table  # the chunk is in (decided_at, request_id) order already


def segment_row(chunk: pd.DataFrame) -> dict[str, Any]:
    table = segment_table(chunk)
    return {
        "model_name": MODEL_NAME,
        "model_version": MODEL_VERSION,
        "first_at": chunk["decided_at"].iloc[0].to_pydatetime(),
        "last_at": chunk["decided_at"].iloc[-1].to_pydatetime(),
        "rows": table.num_rows,
        "data": encode(table),
    }


def check_segment_layout(chunk: pd.DataFrame, folder: Path) -> None:
    """Refuse to write segments unlike those `write_decisions` stores for the same decisions."""
    part = chunk.iloc[:_CHECKED_ROWS]
    engine = create_engine_for(f"sqlite:///{folder / 'layout-check.db'}")
    try:
        migrate(engine)
        write_decisions(engine, to_decisions(part))
        with engine.connect() as connection:
            stored = decode(connection.execute(select(SEGMENTS_TABLE.c.data)).scalar_one())
    finally:
        engine.dispose()
    (folder / "layout-check.db").unlink()
    built = segment_table(part)
    if not stored.equals(built):
        raise SystemExit(
            "the bench's segments differ from write_decisions' (the layout changed?): "
            f"stored {stored.schema}, built {built.schema}; update bench/monitor_setup.py"
        )


def write_reference(folder: Path, rows: int) -> None:
    source = syn.generate(rows, seed=REFERENCE_SEED)
    reference = monitor_reference.build_reference(
        source, syn.baseline_pd(source), source["default"], syn.SCHEMA, seed=REFERENCE_SEED
    )
    monitor_reference.save_reference(reference, folder / "reference")


def write_window(
    folder: Path, rows: int, drift: str, urls: dict[str, str], setup: str
) -> dict[str, float]:
    """The window as `window.parquet` and into each decision log; seconds spent on each."""
    engines = {name: create_engine_for(url) for name, url in urls.items()}
    for engine in engines.values():
        migrate(engine)
    writer: pq.ParquetWriter | None = None
    seconds = {"window": 0.0, "build": 0.0} | dict.fromkeys(engines, 0.0)
    checked = False
    try:
        for chunk in window_chunks(rows, drift):
            started = time.perf_counter()
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            writer = writer or pq.ParquetWriter(folder / "window.parquet", table.schema)
            writer.write_table(table)
            written = time.perf_counter()
            seconds["window"] += written - started
            if not engines:
                continue
            if setup == "segments":
                if not checked:
                    check_segment_layout(chunk, folder)
                    checked = True
                payload: Any = [segment_row(chunk)]
            else:
                payload = to_decisions(chunk)
            seconds["build"] += time.perf_counter() - written
            for name, engine in engines.items():
                began = time.perf_counter()
                if setup == "segments":
                    with engine.begin() as connection:
                        insert_segments(connection, payload)
                else:
                    write_decisions(engine, payload)
                seconds[name] += time.perf_counter() - began
    finally:
        if writer is not None:
            writer.close()
        for engine in engines.values():
            engine.dispose()
    if not engines:
        del seconds["build"]
    return seconds
