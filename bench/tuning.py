"""Tuning shared across workers: trials per minute with 1 and 2 workers on one Optuna study.

    .venv/bin/python bench/tuning.py [--rows 200000] [--trials 12] [--folds 3]
                                     [--families logreg] [--database-url URL]

For each worker count the bench makes a fresh study in a scratch PostgreSQL database and a
training run in a scratch MLflow store (also PostgreSQL, so that both workers log to it at
once), then starts that many production workers, `python -m cli tune-worker RUN_ID --worker I`,
each on one thread, on the synthetic data at `--rows` rows, with the same trial budget. The
throughput is finished trials over the span from the first trial's start to the last trial's
end, read from the study itself, so that process start-up (imports, drawing the data) is left
out of both; the wall time of each run is printed beside it. One model family keeps the trials
alike in cost across the two runs, whose samplers draw different configurations.

PASS when 2 workers reach at least `SPEEDUP_TARGET` times the trials per minute of 1, and the
two studies' best CV AUCs differ by no more than `AUC_NOISE` (the spread of fold AUCs is
printed beside it). Exits 0 on PASS, 1 on FAIL, 2 on bad arguments. The scratch databases are
dropped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import psycopg
from mlflow import MlflowClient
from optuna.trial import TrialState
from psycopg import sql
from sqlalchemy.engine import make_url

from loanops.data import load_training_data
from loanops.settings import Settings
from loanops.tune_workers import study_name, worker_command, worker_environment

SPEEDUP_TARGET = 1.7
AUC_NOISE = 0.002
"""Best CV AUC of the 2-worker study within this of the 1-worker study's."""
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
WORKER_TIMEOUT_SECONDS = 1800


@dataclass(frozen=True)
class Measured:
    workers: int
    trials: int
    span_seconds: float
    wall_seconds: float
    best_auc: float
    best_fold_spread: float

    @property
    def per_minute(self) -> float:
        return 60.0 * self.trials / self.span_seconds


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Trials per minute with 1 and 2 workers.")
    parser.add_argument("--rows", type=int, default=200_000, help="synthetic rows")
    parser.add_argument("--trials", type=int, default=12, help="trial budget of each study")
    parser.add_argument("--folds", type=int, default=3, help="CV folds per trial")
    parser.add_argument("--families", default="logreg", help="comma-separated model families")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="a PostgreSQL server to make scratch databases on",
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def scratch_database(server_url: str, purpose: str) -> Iterator[str]:
    name = f"loanops_bench_{purpose}_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(server_url, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def measure(settings: Settings, workers: int, storage_url: str, folder: Path) -> Measured:
    training = settings.training
    loaded = load_training_data(
        training.dataset, rows=training.dataset_rows, seed=training.seed, data_path=None
    )
    client = MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment(settings.experiment_name)
    )
    run_id = client.create_run(
        experiment_id,
        run_name=f"bench-{workers}-workers",
        tags={"loanops.dataset_sha256": loaded.sha256},
    ).info.run_id
    environment = worker_environment(settings)
    started = time.perf_counter()
    processes = []
    for worker in range(workers):
        log = (folder / f"{workers}-workers-{worker}.log").open("ab")
        processes.append(
            subprocess.Popen(
                worker_command(run_id, worker, None),
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    codes = [p.wait(timeout=WORKER_TIMEOUT_SECONDS) for p in processes]
    wall = time.perf_counter() - started
    if any(codes):
        logs = "\n".join(p.read_text()[-2000:] for p in sorted(folder.glob(f"{workers}-*.log")))
        raise RuntimeError(f"a worker failed ({codes}):\n{logs}")
    study = optuna.load_study(study_name=study_name(run_id), storage=storage_url)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    first = min(t.datetime_start for t in done if t.datetime_start is not None)
    last = max(t.datetime_complete for t in done if t.datetime_complete is not None)
    best = study.best_trial
    folds = best.user_attrs["fold_aucs"]
    return Measured(
        workers=workers,
        trials=len(done),
        span_seconds=(last - first).total_seconds(),
        wall_seconds=wall,
        best_auc=float(best.value or 0.0),
        best_fold_spread=float(max(folds) - min(folds)),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rows < 1000 or args.trials < 2 or args.folds < 2:
        print("error: --rows >= 1000, --trials >= 2 and --folds >= 2", file=sys.stderr)
        return 2
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    with (
        tempfile.TemporaryDirectory(prefix="loanops-bench-tuning-") as tmp,
        scratch_database(args.database_url, "mlflow") as mlflow_url,
    ):
        folder = Path(tmp)
        results = []
        for workers in (1, 2):
            with scratch_database(args.database_url, "optuna") as storage_url:
                os.environ.update(
                    {
                        "LOANOPS_HOME": str(folder / "home"),
                        "LOANOPS_TRACKING_URI": mlflow_url,
                        "LOANOPS_TUNE_STORAGE_URL": storage_url,
                        "LOANOPS_TUNE_WORKERS": str(workers),
                        "LOANOPS_DATASET": "synthetic",
                        "LOANOPS_DATASET_ROWS": str(args.rows),
                        "LOANOPS_TUNE_TRIALS": str(args.trials),
                        "LOANOPS_CV_FOLDS": str(args.folds),
                        "LOANOPS_MODEL_FAMILIES": str(families).replace("'", '"'),
                    }
                )
                print(f"… {workers} worker(s), {args.trials} trials", flush=True)
                results.append(measure(Settings(), workers, storage_url, folder))
    one, two = results
    speedup = two.per_minute / one.per_minute
    auc_gap = abs(two.best_auc - one.best_auc)
    print()
    print(
        f"tuning bench: synthetic {args.rows:,} rows, {args.trials} trials, {args.folds} folds, "
        f"families {','.join(families)}, one thread per worker, {os.cpu_count()} cores"
    )
    header = ("workers", "trials", "span s", "trials/min", "wall s", "best AUC")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (7, 6, 8, 10, 8, 9), strict=True)))
    for m in results:
        print(
            f"{m.workers:>7} {m.trials:>6} {m.span_seconds:8.1f} {m.per_minute:10.2f} "
            f"{m.wall_seconds:8.1f} {m.best_auc:9.4f}"
        )
    speed_ok = speedup >= SPEEDUP_TARGET
    auc_ok = auc_gap <= AUC_NOISE
    print(
        f"speed-up 2 vs 1 workers: {speedup:.2f}x (target >= {SPEEDUP_TARGET}) "
        f"{'PASS' if speed_ok else 'FAIL'}"
    )
    print(
        f"best CV AUC gap: {auc_gap:.4f} (target <= {AUC_NOISE}; the best trial's fold spread "
        f"is {one.best_fold_spread:.4f}) {'PASS' if auc_ok else 'FAIL'}"
    )
    return 0 if speed_ok and auc_ok else 1


if __name__ == "__main__":
    sys.exit(main())
