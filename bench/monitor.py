"""Drift monitoring at scale: the monitor over 10M logged decisions, against Evidently's defaults.

    .venv/bin/python bench/monitor.py [--rows 10000000] [--reference-rows 100000]
                                      [--sample-rows 50000] [--drift PRESET] [--skip-db]
                                      [--database both|sqlite|postgres]
                                      [--setup segments|decisions]
                                      [--evidently-timeout 600] [--evidently-memory-gib 6]
                                      [--keep]

The parent process draws a synthetic reference (scored by the no-drift ground truth, the ideal
model trained before any drift) and saves it with `save_reference`; it draws the window a chunk
at a time and writes it as Parquet and, unless `--skip-db`, into a SQLite decision log and a
PostgreSQL one (a scratch database on 127.0.0.1:5432, or on `LOANOPS_BENCH_POSTGRES_URL`, dropped
afterwards), 100k decisions per segment (`monitor_setup` says how, and how it checks the layout
against `write_decisions`). Each measured path then runs in a fresh child process, so that its
peak RSS is its own:

- **monitor (file)**: `load_reference` (cached statistics), `monitor_window` over
  `parquet_batches` of the window (sampling `--sample-rows` rows for Evidently), `write_reports`;
- **monitor (decision log)**: the same over `stream_decisions`, as the monitor flow reads the
  log, once per database;
- **Evidently defaults**: `Report([DataDriftPreset(), DataSummaryPreset()])` on the full window
  and the full reference, with the same column mapping and no sampling, then `save_html`.
  It is killed after `--evidently-timeout` seconds, or once its RSS passes
  `--evidently-memory-gib` (the machine is shared).

It prints wall time, CPU time and peak RSS of each, the ratio Evidently / monitor, and PASS or
FAIL for each monitor path against the issue's target: under 120 s and under 3 GiB on 2 cores.
Exits 0 when all pass, 1 otherwise, 2 on bad arguments. Everything lives in a temporary folder,
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
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from monitor_setup import (
    DB_CHUNK,
    MODEL_NAME,
    WINDOW_DAYS,
    WINDOW_START,
    write_reference,
    write_window,
)
from psycopg import sql
from sqlalchemy.engine import make_url

from loanops.data import synthetic as syn
from loanops.data.synthetic_drift import PRESETS
from loanops.decisions.database import create_engine_for
from loanops.decisions.stream import ColumnBatch, stream_decisions
from loanops.monitoring import evidently_mapping, reports
from loanops.monitoring import reference as monitor_reference
from loanops.monitoring import run as monitor_run
from loanops.monitoring.window import parquet_batches

TARGET_SECONDS = 120.0
TARGET_GIB = 3.0
_RESULT = "RESULT "


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The monitor at 10M decisions against Evidently.")
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
        "--setup",
        choices=["segments", "decisions"],
        default="segments",
        help="write the logs' segments directly, or every decision through write_decisions",
    )
    parser.add_argument(
        "--evidently-timeout", type=float, default=600.0, help="seconds before Evidently is killed"
    )
    parser.add_argument(
        "--evidently-memory-gib",
        type=float,
        default=6.0,
        help="RSS at which Evidently is killed",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- inputs ----------------------------------------------------------------------------------


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
    started = time.perf_counter()
    write_reference(folder, args.reference_rows)
    seconds = {"reference": time.perf_counter() - started}
    return seconds | write_window(folder, args.rows, args.drift, urls, args.setup)


# --- the measured paths, each in a child process ----------------------------------------------


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def import_evidently() -> float:
    """Import Evidently before any clock starts (about 5 s, once per process, for both sides)."""
    started = time.perf_counter()
    import evidently.metrics
    import evidently.presets  # noqa: F401

    return time.perf_counter() - started


class Timed:
    """An iterator's items, with the time spent producing them (reading, not computing)."""

    def __init__(self, items: Iterable[ColumnBatch]) -> None:
        self._items = iter(items)
        self.seconds = 0.0
        self.done_at = 0.0

    def __iter__(self) -> Iterator[ColumnBatch]:
        while True:
            started = time.perf_counter()
            try:
                item = next(self._items)
            except StopIteration:
                self.done_at = time.perf_counter()
                self.seconds += self.done_at - started
                return
            self.seconds += time.perf_counter() - started
            yield item


def child_monitor(folder: Path, args: argparse.Namespace, url: str | None) -> dict[str, Any]:
    imported = import_evidently()
    cpu, started = time.process_time(), time.perf_counter()
    reference = monitor_reference.load_reference(folder / "reference")
    engine = create_engine_for(url) if url is not None else None
    if engine is not None:
        # As the monitor flow reads it: the schema's inputs, from the columnar segments.
        source: Iterable[ColumnBatch] = stream_decisions(
            engine,
            WINDOW_START,
            WINDOW_START + timedelta(days=WINDOW_DAYS),
            model_name=MODEL_NAME,
            inputs=monitor_run.logged_inputs(syn.SCHEMA),
        )
    else:
        source = parquet_batches(folder / "window.parquet", syn.SCHEMA)
    batches = Timed(source)
    loaded = time.perf_counter()
    summary, snapshot = monitor_run.monitor_window(
        batches, reference, syn.SCHEMA, sample_rows=args.sample_rows, seed=0
    )
    monitored = time.perf_counter()
    if engine is not None:
        engine.dispose()
    reports.write_reports(
        snapshot, folder / (f"reports-{args.child}" if url else "reports"), summary=summary
    )
    done = time.perf_counter()
    return {
        "rows": summary.rows,
        "seconds": done - started,
        "cpu": time.process_time() - cpu,
        "reference": loaded - started,
        "read": batches.seconds,
        "pass": batches.done_at - loaded,
        "evidently": monitored - batches.done_at,
        "reports": done - monitored,
        "rss_gib": peak_rss_gib(),
        "import": imported,
        "share_drifted": summary.drift.share_drifted,
        "drifted": len(summary.drift.drifted_features),
        "tested": len(summary.drift.features),
        "psi": summary.prediction.psi if summary.prediction else float("nan"),
        "ks": summary.prediction.ks_drift_statistic if summary.prediction else float("nan"),
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
        "evidently": ran - read,
        "reports": done - ran,
        "rss_gib": peak_rss_gib(),
        "import": imported,
    }


def run_child(
    name: str,
    folder: Path,
    args: argparse.Namespace,
    url: str | None = None,
    *,
    memory_gib: float | None = None,
) -> tuple[dict[str, Any] | None, str]:
    """Run one measured path in a fresh interpreter.

    Returns:
        Its result, or None with why: it ran past `--evidently-timeout`, or its RSS past
        `memory_gib` (then it is killed at once, so that it never crowds the shared machine).
    """
    command = [
        sys.executable, __file__, "--child", name, "--folder", str(folder),
        "--rows", str(args.rows), "--sample-rows", str(args.sample_rows),
        *(["--url", url] if url else []),
    ]  # fmt: skip
    log = folder / f"{name}.log"
    started = time.perf_counter()
    with log.open("w") as stderr, tempfile.TemporaryFile("w+") as stdout:
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True)
        why = ""
        while child.poll() is None:
            elapsed = time.perf_counter() - started
            if elapsed > args.evidently_timeout:
                why = f"did not finish within {args.evidently_timeout:.0f} s"
            elif memory_gib is not None and rss_gib(child.pid) > memory_gib:
                why = f"passed {memory_gib:.0f} GiB of RSS after {elapsed:.0f} s"
            if why:
                child.kill()
                child.wait()
                return None, why
            time.sleep(0.25)
        stdout.seek(0)
        output = stdout.read()
    if child.returncode != 0:
        raise SystemExit(f"{name} failed (exit {child.returncode}); see {log}")
    line = next(x for x in output.splitlines() if x.startswith(_RESULT))
    result: dict[str, Any] = json.loads(line.removeprefix(_RESULT))
    return result, ""


def rss_gib(pid: int) -> float:
    """The resident set of a running process, from /proc (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20  # kB
    return 0.0


# --- report ----------------------------------------------------------------------------------


def row(label: str, result: dict[str, Any]) -> str:
    common = (
        f"  {label:<34} {result['seconds']:7.1f} s {result['cpu']:7.1f} s "
        f"{result['rss_gib']:6.2f} GiB   "
    )
    if "pass" in result:
        return common + (
            f"pass over the window {result['pass']:.1f} s (reading {result['read']:.1f} s), "
            f"Evidently on the samples {result['evidently']:.1f} s, "
            f"reports {result['reports']:.1f} s"
        )
    return common + (
        f"read_parquet {result['read']:.1f} s, Evidently {result['evidently']:.1f} s, "
        f"save_html {result['reports']:.1f} s"
    )


def verdict(label: str, result: dict[str, Any] | None, why: str) -> bool:
    if result is None:
        print(f"  {label:<34} FAIL ({why})")
        return False
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
    if (
        min(args.rows, args.reference_rows, args.sample_rows) < 1
        or min(args.evidently_timeout, args.evidently_memory_gib) <= 0
    ):
        print("error: row counts, the timeout and the memory cap must be positive", file=sys.stderr)
        return 2

    import evidently

    print(
        f"monitor bench: {args.rows:,} decisions (drift: {args.drift}) against a "
        f"{args.reference_rows:,}-row reference; the monitor samples {args.sample_rows:,} rows; "
        f"{os.cpu_count()} cores; evidently {evidently.__version__}"
    )
    folder = Path(tempfile.mkdtemp(prefix="loanops-bench-monitor-"))
    urls: dict[str, str] = {}
    try:
        urls = databases(args, folder)
        prepared = prepare(folder, args, urls)
        how = "segments written directly" if args.setup == "segments" else "write_decisions"
        print(
            "prepare: "
            + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in prepared.items())
            + ("" if args.skip_db else f" ({DB_CHUNK:,} decisions per segment, {how})")
        )
        measured = {"Parquet": run_child("monitor", folder, args)}
        for name, url in urls.items():
            measured[name] = run_child(f"monitor-{name}", folder, args, url)
        default, default_why = run_child(
            "evidently", folder, args, memory_gib=args.evidently_memory_gib
        )
        monitor, why = measured["Parquet"]
        if monitor is None:
            raise SystemExit(f"the monitor on the Parquet file {why}")

        print(
            f"\n  {'':<34} {'wall':>9} {'cpu':>9} {'peak RSS':>10}   "
            f"(import evidently, {monitor['import']:.1f} s per process, not counted)"
        )
        for name, (result, _) in measured.items():
            if result is not None:
                print(row(label(name), result))
        if default is not None:
            print(row("Evidently defaults, no sampling", default))
            wall = default["seconds"] / monitor["seconds"]
            memory = default["rss_gib"] / monitor["rss_gib"]
            print(f"\nEvidently defaults / monitor: {wall:.1f}x wall, {memory:.1f}x peak RSS")
        else:
            print(f"  {'Evidently defaults, no sampling':<34} killed: it {default_why}")
        flags = ", ".join(monitor["quality_flags"]) or "none"
        print(
            f"headline: {monitor['drifted']} of {monitor['tested']} features drifted "
            f"(share {monitor['share_drifted']:.2f}), score PSI {monitor['psi']:.4f}, "
            f"KS {monitor['ks']:.4f}, data-quality flags: {flags}"
        )
        print(f"\ntarget: under {TARGET_SECONDS:.0f} s and under {TARGET_GIB:.0f} GiB")
        passed = True
        for name, (result, why) in measured.items():
            passed = verdict(label(name), result, why) and passed
        if args.keep:
            print(f"\nkept {folder}")
        return 0 if passed else 1
    finally:
        if "postgres" in urls and not args.keep:
            drop_postgres_database(urls["postgres"])
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def label(source: str) -> str:
    return f"monitor, window from {source}" if source == "Parquet" else f"monitor, log on {source}"


if __name__ == "__main__":
    raise SystemExit(main())
