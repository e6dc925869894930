"""Drift monitoring at scale: `run_monitor` over 10M logged decisions, against Evidently's defaults.

    .venv/bin/python bench/monitor.py [--rows 10000000] [--reference-rows 100000]
                                      [--sample-rows 50000] [--drift PRESET] [--skip-db]
                                      [--database both|sqlite|postgres]
                                      [--evidently-timeout 600] [--keep]

The parent process draws a synthetic reference (scored by the no-drift ground truth, the ideal
model trained before any drift) and saves it with `save_reference`; it draws the window, shaped
like `read_decisions` output, and writes it as Parquet and, unless `--skip-db`, into a SQLite
decision log and a PostgreSQL one (a scratch database on 127.0.0.1:5432, or on
`LOANOPS_BENCH_POSTGRES_URL`, dropped afterwards) with `write_decisions`, 100k decisions per
transaction. Each measured path then runs in a fresh child process, so that its peak RSS is its
own:

- **monitor (file)**: `read_parquet` of the window, `load_reference` (cached statistics),
  `run_monitor` (sampling `--sample-rows` rows for Evidently) and `write_reports`;
- **monitor (decision log)**: the same, with the window read by `read_decisions`, once per
  database;
- **Evidently defaults**: `Report([DataDriftPreset(), DataSummaryPreset()])` on the full window
  and the full reference, with the same column mapping and no sampling, then `save_html`.
  It is killed after `--evidently-timeout` seconds.

It prints wall time, CPU time and peak RSS of each, the ratio Evidently / monitor, and PASS or
FAIL for each monitor path against the issue's target: under 120 s and under 3 GiB on 2 cores.
Exits 0 when both pass, 1 otherwise, 2 on bad arguments. Everything lives in a temporary folder,
removed afterwards unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import sql
from sqlalchemy.engine import make_url

from loanops.data import synthetic as syn
from loanops.data.synthetic_drift import PRESETS, Drift
from loanops.decisions.database import create_engine_for, migrate
from loanops.decisions.read import read_decisions
from loanops.decisions.record import Decision
from loanops.decisions.write import write_decisions
from loanops.monitoring import evidently_mapping, reports
from loanops.monitoring import reference as monitor_reference
from loanops.monitoring import run as monitor_run

TARGET_SECONDS = 120.0
TARGET_GIB = 3.0
REFERENCE_SEED = 1
WINDOW_SEED = 2
WINDOW_START = datetime(2026, 11, 19, tzinfo=UTC)
WINDOW_DAYS = 7
DB_CHUNK = 100_000
MODEL_NAME = "loan-default"
MODEL_VERSION = "1"
THRESHOLD = 0.2
_RESULT = "RESULT "


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="run_monitor at 1M rows against Evidently.")
    parser.add_argument("--rows", type=int, default=10_000_000, help="decisions in the window")
    parser.add_argument("--reference-rows", type=int, default=100_000, help="reference rows")
    parser.add_argument(
        "--sample-rows",
        type=int,
        default=monitor_run.DEFAULT_SAMPLE_ROWS,
        help="rows of the window given to Evidently by run_monitor",
    )
    parser.add_argument(
        "--drift",
        choices=["none", *PRESETS],
        default="none",
        help="drift injected into the second half of the window",
    )
    parser.add_argument("--skip-db", action="store_true", help="skip the decision logs")
    parser.add_argument(
        "--database",
        choices=["both", "sqlite", "postgres"],
        default="both",
        help="which decision logs to write and read",
    )
    parser.add_argument(
        "--evidently-timeout", type=float, default=600.0, help="seconds before Evidently is killed"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- inputs ----------------------------------------------------------------------------------


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
    """The window in chunks of DB_CHUNK rows; the drift, if any, starts half-way."""
    preset = None if drift == "none" else Drift.preset(drift, start=0.5)
    generated = syn.generate(rows, seed=WINDOW_SEED, drift=preset)
    for first in range(0, rows, DB_CHUNK):
        yield decisions_frame(generated.iloc[first : first + DB_CHUNK], first, rows)


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


def databases(args: argparse.Namespace, folder: Path) -> dict[str, str]:
    """Decision-log URL of each database the run uses, by name."""
    if args.skip_db:
        return {}
    urls = {}
    if args.database in ("both", "sqlite"):
        urls["sqlite"] = f"sqlite:///{folder / 'decisions.db'}"
    if args.database in ("both", "postgres"):
        urls["postgres"] = create_postgres_database()
    return urls


def _admin_url() -> str:
    return os.environ.get(
        "LOANOPS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )


def create_postgres_database() -> str:
    name = f"loanops_bench_monitor_{os.getpid()}"
    with psycopg.connect(_admin_url(), autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(_admin_url()).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    name = make_url(url).database or ""
    with psycopg.connect(_admin_url(), autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def prepare(folder: Path, args: argparse.Namespace, urls: dict[str, str]) -> dict[str, float]:
    """Reference folder, window Parquet and the decision logs named in `urls`."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    source = syn.generate(args.reference_rows, seed=REFERENCE_SEED)
    reference = monitor_reference.build_reference(
        source, syn.baseline_pd(source), source["default"], syn.SCHEMA, seed=REFERENCE_SEED
    )
    monitor_reference.save_reference(reference, folder / "reference")
    seconds["reference"] = time.perf_counter() - started

    # One chunk at a time: into the Parquet file, then into each decision log.
    engines = {name: create_engine_for(url) for name, url in urls.items()}
    for engine in engines.values():
        migrate(engine)
    writer: pq.ParquetWriter | None = None
    seconds["window"] = seconds["decisions"] = 0.0
    for name in engines:
        seconds[name] = 0.0
    try:
        for chunk in window_chunks(args.rows, args.drift):
            started = time.perf_counter()
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            writer = writer or pq.ParquetWriter(folder / "window.parquet", table.schema)
            writer.write_table(table)
            written = time.perf_counter()
            seconds["window"] += written - started
            if not engines:
                continue
            decisions = to_decisions(chunk)
            seconds["decisions"] += time.perf_counter() - written
            for name, engine in engines.items():
                began = time.perf_counter()
                write_decisions(engine, decisions)
                seconds[name] += time.perf_counter() - began
    finally:
        if writer is not None:
            writer.close()
        for engine in engines.values():
            engine.dispose()
    if not engines:
        del seconds["decisions"]
    return seconds


# --- the measured paths, each in a child process ----------------------------------------------


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def import_evidently() -> float:
    """Import Evidently before any clock starts (about 5 s, once per process, for both sides)."""
    started = time.perf_counter()
    import evidently.metrics
    import evidently.presets  # noqa: F401

    return time.perf_counter() - started


def child_monitor(folder: Path, args: argparse.Namespace, url: str | None) -> dict[str, Any]:
    imported = import_evidently()
    cpu, started = time.process_time(), time.perf_counter()
    from_db = url is not None
    if url is not None:
        engine = create_engine_for(url)
        # As the monitor flow reads it: the schema's inputs only, extracted by the database.
        window = read_decisions(
            engine,
            WINDOW_START,
            WINDOW_START + timedelta(days=WINDOW_DAYS),
            model_name=MODEL_NAME,
            inputs=monitor_run.logged_inputs(syn.SCHEMA),
            reasons=False,
        )
        engine.dispose()
    else:
        window = pd.read_parquet(folder / "window.parquet")
    reference = monitor_reference.load_reference(folder / "reference")
    read = time.perf_counter()
    summary, snapshot = monitor_run.run_monitor(
        window, reference, syn.SCHEMA, sample_rows=args.sample_rows, seed=0
    )
    monitored = time.perf_counter()
    reports.write_reports(
        snapshot, folder / (f"reports-{args.child}" if from_db else "reports"), summary=summary
    )
    done = time.perf_counter()
    return {
        "rows": len(window),
        "seconds": done - started,
        "cpu": time.process_time() - cpu,
        "read": read - started,
        "monitor": monitored - read,
        "reports": done - monitored,
        "rss_gib": peak_rss_gib(),
        "import": imported,
        "share_drifted": summary.drift.share_drifted,
        "drifted": len(summary.drift.drifted_features),
        "tested": len(summary.drift.features),
        "psi": summary.prediction.psi if summary.prediction else float("nan"),
        "quality_flags": [
            *summary.quality.missingness_spikes,
            *summary.quality.out_of_range,
            *summary.quality.new_categories,
        ],
    }


def child_evidently(folder: Path) -> dict[str, Any]:
    imported = import_evidently()
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    cpu, started = time.process_time(), time.perf_counter()
    columns = [*syn.SCHEMA.feature_names, monitor_reference.PREDICTION_COLUMN]
    window = pd.read_parquet(folder / "window.parquet", columns=columns)
    reference = pd.read_parquet(folder / "reference" / "reference.parquet", columns=columns)
    definition = evidently_mapping.data_definition(syn.SCHEMA)
    read = time.perf_counter()
    snapshot = Report([DataDriftPreset(), DataSummaryPreset()]).run(
        Dataset.from_pandas(window, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    ran = time.perf_counter()
    snapshot.save_html(str(folder / "evidently-default.html"))
    done = time.perf_counter()
    return {
        "rows": len(window),
        "seconds": done - started,
        "cpu": time.process_time() - cpu,
        "read": read - started,
        "monitor": ran - read,
        "reports": done - ran,
        "rss_gib": peak_rss_gib(),
        "import": imported,
    }


def run_child(
    name: str, folder: Path, args: argparse.Namespace, timeout: float, url: str | None = None
) -> dict[str, Any] | None:
    """Run one measured path in a fresh interpreter; None when it timed out."""
    command = [
        sys.executable, __file__, "--child", name, "--folder", str(folder),
        "--rows", str(args.rows), "--sample-rows", str(args.sample_rows),
        *(["--url", url] if url else []),
    ]  # fmt: skip
    log = folder / f"{name}.log"
    with log.open("w") as stderr:
        try:
            completed = subprocess.run(
                command, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return None
    if completed.returncode != 0:
        raise SystemExit(f"{name} failed (exit {completed.returncode}); see {log}")
    line = next(x for x in completed.stdout.splitlines() if x.startswith(_RESULT))
    result: dict[str, Any] = json.loads(line.removeprefix(_RESULT))
    return result


# --- report ----------------------------------------------------------------------------------


def row(label: str, result: dict[str, Any], read_label: str) -> str:
    return (
        f"  {label:<34} {result['seconds']:7.1f} s {result['cpu']:7.1f} s "
        f"{result['rss_gib']:6.2f} GiB   {read_label} {result['read']:.1f} s, "
        f"compute {result['monitor']:.1f} s, reports {result['reports']:.1f} s"
    )


def verdict(label: str, result: dict[str, Any] | None) -> bool:
    if result is None:
        print(f"  {label:<34} skipped")
        return True
    passed = result["seconds"] < TARGET_SECONDS and result["rss_gib"] < TARGET_GIB
    print(
        f"  {label:<34} {result['seconds']:7.1f} s {result['rss_gib']:6.2f} GiB   "
        f"{'PASS' if passed else 'FAIL'}"
    )
    return passed


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Evidently's UI and collector phone home unless told not to; the library itself does not.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("EVIDENTLY_DISABLE_TELEMETRY", "1")
    if args.child:
        result = (
            child_evidently(args.folder)
            if args.child == "evidently"
            else child_monitor(args.folder, args, args.url)
        )
        print(_RESULT + json.dumps(result))
        return 0
    if min(args.rows, args.reference_rows, args.sample_rows) < 1 or args.evidently_timeout <= 0:
        print("error: row counts and the timeout must be positive", file=sys.stderr)
        return 2

    import evidently

    print(
        f"monitor bench: {args.rows:,} decisions (drift: {args.drift}) against a "
        f"{args.reference_rows:,}-row reference; run_monitor samples {args.sample_rows:,} rows; "
        f"{os.cpu_count()} cores; evidently {evidently.__version__}"
    )
    folder = Path(tempfile.mkdtemp(prefix="loanops-bench-monitor-"))
    urls: dict[str, str] = {}
    try:
        urls = databases(args, folder)
        prepared = prepare(folder, args, urls)
        print(
            "prepare: "
            + ", ".join(f"{name.replace('_', ' ')} {s:.1f} s" for name, s in prepared.items())
            + ("" if args.skip_db else f" ({DB_CHUNK:,} decisions per write_decisions)")
        )
        for name in urls:
            rate = args.rows / prepared[name] if prepared[name] else float("nan")
            print(f"  write_decisions into {name}: {rate:,.0f} decisions/s")
        monitor = run_child("monitor", folder, args, timeout=args.evidently_timeout)
        from_db = {
            name: run_child(f"monitor-{name}", folder, args, args.evidently_timeout, url)
            for name, url in urls.items()
        }
        default = run_child("evidently", folder, args, timeout=args.evidently_timeout)
        if monitor is None:
            raise SystemExit(f"run_monitor did not finish within {args.evidently_timeout:.0f} s")

        print(
            f"\n  {'':<34} {'wall':>9} {'cpu':>9} {'peak RSS':>10}   "
            f"(import evidently, {monitor['import']:.1f} s per process, not counted)"
        )
        print(row("run_monitor, window from Parquet", monitor, "read_parquet"))
        for name, measured in from_db.items():
            if measured is not None:
                print(row(f"run_monitor, log on {name}", measured, "read_decisions"))
        if default is not None:
            print(row("Evidently defaults, no sampling", default, "read_parquet"))
            wall = default["seconds"] / monitor["seconds"]
            compute = default["monitor"] / monitor["monitor"]
            memory = default["rss_gib"] / monitor["rss_gib"]
            print(
                f"\nEvidently defaults / run_monitor: {wall:.1f}x wall (compute alone "
                f"{compute:.1f}x), {memory:.1f}x peak RSS"
            )
        else:
            print(
                f"\nEvidently defaults did not finish within {args.evidently_timeout:.0f} s: "
                f"more than {args.evidently_timeout / monitor['seconds']:.1f}x run_monitor"
            )
        flags = ", ".join(monitor["quality_flags"]) or "none"
        print(
            f"headline: {monitor['drifted']} of {monitor['tested']} features drifted "
            f"(share {monitor['share_drifted']:.2f}), score PSI {monitor['psi']:.4f}, "
            f"data-quality flags: {flags}"
        )
        print(f"\ntarget: under {TARGET_SECONDS:.0f} s and under {TARGET_GIB:.0f} GiB")
        passed = verdict("run_monitor, window from Parquet", monitor)
        for name, measured in from_db.items():
            passed = verdict(f"run_monitor, log on {name}", measured) and passed
            if measured is None:
                print(f"  (it did not finish within {args.evidently_timeout:.0f} s)")
                passed = False
        if args.keep:
            print(f"\nkept {folder}")
        return 0 if passed else 1
    finally:
        if "postgres" in urls and not args.keep:
            drop_postgres_database(urls["postgres"])
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
