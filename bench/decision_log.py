"""Recording batch decisions against a raw in-process `predict_proba` over the same rows.

    OMP_NUM_THREADS=1 .venv/bin/python bench/decision_log.py [--rows 1000000]
                                       [--family logreg] [--database both|sqlite|postgres]

One process fits a model on synthetic loans (the behaviour tests' fixed configuration, as
bench/batch.py does, without MLflow) and draws `--rows` applications. It times:

- raw: `schema.to_frame` then `predict_proba` over all of them, on one thread (best of two);
- recording: what a batch worker does for each chunk of the batch settings' `chunk_rows` beyond
  scoring it: build the chunk's decisions table from the validated chunk (with `score_chunk`'s
  own `decisions_table`, without adverse-action reasons, which are explaining, not recording;
  the chunks are validated before the clock starts, as scoring's part), store it in the job
  storage and read it back (the chunk task hands it to the record task so), then
  `WorkerRuntime.record`'s two steps, `decision_columns` and `write_segment` (one transaction),
  into a fresh SQLite file and a fresh PostgreSQL database (on 127.0.0.1:5432, or
  `LOANOPS_BENCH_POSTGRES_URL`), dropped afterwards.

The batch path with its decisions recorded takes raw + recording, so its rows/s over raw rows/s
is raw / (raw + recording). It prints both rates, that ratio per database, and PASS when it is at
least `TARGET_RATIO` (the scale-out issue's target). Exits 0 on PASS, 1 on FAIL.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
from psycopg import sql
from sqlalchemy.engine import make_url
from threadpoolctl import threadpool_limits

from loanops.data import synthetic as syn
from loanops.decisions.bulk import write_segment
from loanops.decisions.database import create_engine_for, migrate
from loanops.decisions.read import count_decisions
from loanops.evaluate import CostMatrix
from loanops.features import split_frame
from loanops.settings import BatchSettings, TrainingSettings
from loanops.train import fit
from serving.batch.chunks import DecidedRows, decision_columns
from serving.batch.chunks import decisions_table as chunk_decisions
from serving.batch.storage import LocalStorage
from serving.batch.validation import ValidatedChunk, validate_chunk

TARGET_RATIO = 0.5
TRAINING_ROWS = 20_000
SEED = 0
CONFIGS: dict[str, dict[str, Any]] = {
    "logreg": {"C": 0.015, "log_amounts": True},
    "hist_gbt": {
        "learning_rate": 0.1,
        "max_leaf_nodes": 15,
        "min_samples_leaf": 50,
        "l2_regularization": 1.0,
    },
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Recording decisions against predict_proba.")
    parser.add_argument("--rows", type=int, default=1_000_000, help="applications scored")
    parser.add_argument("--family", choices=list(CONFIGS), default="logreg", help="model family")
    parser.add_argument("--database", choices=["both", "sqlite", "postgres"], default="both")
    return parser.parse_args(argv)


def _admin_url() -> str:
    return os.environ.get(
        "LOANOPS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """A fresh decision-log database of this run, removed afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'decisions.db'}"
        return
    name = f"loanops_bench_decisions_{os.getpid()}"
    with psycopg.connect(_admin_url(), autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(_admin_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_admin_url(), autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def validated_chunks(applications: pd.DataFrame, chunk: int) -> list[ValidatedChunk]:
    """Each chunk of the applications as the chunk task has it before scoring: validated.

    Validation is scoring's part of the chunk task (raw's `to_frame` stands for it), so it is
    done before the clock starts.
    """
    names = syn.SCHEMA.feature_names
    table = pa.Table.from_pandas(applications[names], preserve_index=False)
    return [
        validate_chunk(table.slice(first, chunk), syn.SCHEMA)
        for first in range(0, table.num_rows, chunk)
    ]


def decisions_table(
    checked: ValidatedChunk, probability: np.ndarray, threshold: float, first: int
) -> pa.Table:
    """A chunk's decisions table, built by `score_chunk`'s own `decisions_table`.

    Its rows are decided as `decide_rows` decides them, without adverse-action reasons.
    """
    n = len(probability)
    decided = DecidedRows(
        probability=probability,
        decision=np.where(probability >= threshold, "decline", "approve").astype(object),
        reasons=np.full(n, "[]", dtype=object),
        codes=np.full(n, None, dtype=object),
    )
    metadata = {
        "job_id": "bench",
        "model_name": "bench",
        "model_version": "1",
        "threshold": repr(float(threshold)),
        "decided_at": datetime.now(UTC).isoformat(),
    }
    rows = np.arange(first, first + n, dtype=np.int64)
    return chunk_decisions(checked, syn.SCHEMA, rows, decided, metadata)


def record(
    url: str,
    chunks: Sequence[ValidatedChunk],
    p: np.ndarray,
    threshold: float,
    chunk: int,
    folder: Path,
) -> dict[str, float]:
    engine = create_engine_for(url)
    storage = LocalStorage(folder / "jobs")
    try:
        migrate(engine)
        built = written = 0.0
        for number, checked in enumerate(chunks):
            first = number * chunk
            started = time.perf_counter()
            table = decisions_table(checked, p[first : first + chunk], threshold, first)
            storage.write_table("bench/log/chunk.arrow", table)
            middle = time.perf_counter()
            stored_table = storage.read_table("bench/log/chunk.arrow")
            write_segment(engine, *decision_columns(stored_table))
            built += middle - started
            written += time.perf_counter() - middle
        stored = count_decisions(engine)
    finally:
        engine.dispose()
    if stored != len(p):
        raise SystemExit(f"{stored} decisions stored, {len(p)} written")
    return {"build": built, "write": written}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rows < 1:
        print("error: --rows must be positive", file=sys.stderr)
        return 2
    schema = syn.SCHEMA
    training = TrainingSettings()
    splits = split_frame(
        syn.generate(TRAINING_ROWS, seed=SEED + 1000),
        schema,
        test_size=training.test_size,
        validation_size=training.validation_size,
        seed=SEED,
    )
    costs = CostMatrix(training.cost_false_approve, training.cost_false_decline)
    trained = fit(
        schema, args.family, CONFIGS[args.family], splits.train, splits.validation, costs, SEED
    )
    applications = syn.generate(args.rows, seed=SEED)
    frame = schema.to_frame(applications)
    chunk = BatchSettings().chunk_rows
    chunks = validated_chunks(applications, chunk)
    del applications
    with threadpool_limits(1):
        raw = float("inf")
        for _ in range(2):
            started = time.perf_counter()
            p = trained.model.predict_proba(schema.to_frame(frame))[:, 1]
            raw = min(raw, time.perf_counter() - started)
    print(
        f"decision-log bench: {args.rows:,} decisions, {args.family}, {chunk:,} per "
        f"write_segment, {os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}"
    )
    print(f"  raw predict_proba              {raw:7.2f} s {args.rows / raw:>10,.0f} rows/s")
    kinds = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    passed = True
    folder = Path(tempfile.mkdtemp(prefix="loanops-bench-decisions-"))
    try:
        for kind in kinds:
            with database(kind, folder) as url:
                times = record(url, chunks, p, trained.threshold, chunk, folder)
            spent = times["build"] + times["write"]
            ratio = raw / (raw + spent)
            ok = ratio >= TARGET_RATIO
            passed = passed and ok
            print(
                f"  record on {kind:<8}             {spent:7.2f} s "
                f"{args.rows / spent:>10,.0f} rows/s"
                f" (build and store {times['build']:.1f} s, record {times['write']:.1f} s)"
            )
            print(
                f"  batch with decisions on {kind:<8} {ratio:.2f}x raw "
                f"(target {TARGET_RATIO}x)   {'PASS' if ok else 'FAIL'}"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
