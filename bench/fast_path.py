"""Compiled fast path against the scikit-learn pipeline: single-row latency and batch throughput.

For each model family this fits a fixed configuration on lending_club as the training flow does
(split → fit → calibrate), compiles it with `CompiledScorer.compile`, checks that both give the
same probabilities on the test split, then times:

- one application: `score_rows([row])` against `predict_proba` on a ready-made one-row frame
  (which leaves out building that frame, so the pipeline's figure is, if anything, flattering);
- one application and its reasons: `score_rows` on 1 + n_features rows, what the explainer asks;
- a 10,000-row batch: `score_frame(frame)` against `predict_proba(schema.to_frame(frame))`.

    OMP_NUM_THREADS=1 .venv/bin/python bench/fast_path.py [--calls 2000] [--batch-rows 10000]

Timings run under one BLAS/OpenMP thread (threadpoolctl), as serving does.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from threadpoolctl import threadpool_limits

from loanops.data import load_dataset
from loanops.evaluate import CostMatrix
from loanops.features import split_frame
from loanops.schema import FeatureSchema
from loanops.settings import ModelFamily, Settings, TrainingSettings
from loanops.train import TrainedModel, fit
from serving.scorer.compiled import CompiledScorer

DATASET = "lending_club"
# The behaviour tests' fixed configurations (tests/model/fitting.py): good, and quick to fit.
CONFIGS: dict[ModelFamily, dict[str, Any]] = {
    "logreg": {"C": 0.015, "log_amounts": True},
    "hist_gbt": {
        "learning_rate": 0.1,
        "max_leaf_nodes": 15,
        "min_samples_leaf": 50,
        "l2_regularization": 1.0,
    },
}
SEED = 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compiled fast path against the pipeline: latency and throughput."
    )
    parser.add_argument("--calls", type=int, default=2000, help="single-row calls per scorer")
    parser.add_argument("--batch-rows", type=int, default=10_000, help="rows in the batch")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each batch")
    return parser.parse_args(argv)


def latencies_us(score: Callable[[int], object], calls: int) -> np.ndarray:
    """Wall time of `score(i)` for i in range(calls), in microseconds, after a warm-up."""
    for i in range(min(calls, 50)):
        score(i)
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        score(i)
        times[i] = time.perf_counter() - start
    return times * 1e6


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def percentiles(times: np.ndarray) -> tuple[float, float]:
    p50, p99 = np.percentile(times, [50, 99])
    return float(p50), float(p99)


def bench_family(
    trained: TrainedModel, schema: FeatureSchema, frame: pd.DataFrame, args: argparse.Namespace
) -> None:
    """Print one family's agreement, latencies and throughput; `frame` holds the test rows."""
    model = trained.model
    start = time.perf_counter()
    scorer = CompiledScorer.compile(model, schema)
    compile_ms = (time.perf_counter() - start) * 1e3

    test_X = schema.to_frame(frame)
    rows = test_X.to_dict("records")
    expected = model.predict_proba(test_X)[:, 1]
    gap_frame = np.max(np.abs(scorer.score_frame(test_X) - expected))
    gap_rows = np.max(np.abs(np.concatenate([scorer.score_rows([r]) for r in rows]) - expected))
    print(f"\n{trained.family}: compiled in {compile_ms:.0f} ms (verification included)")
    print(
        f"  max |compiled - pipeline| on {len(rows)} test rows: score_frame {gap_frame:.2e}, "
        f"score_rows {gap_rows:.2e}"
    )

    one_row_frames = [test_X.iloc[[i]] for i in range(min(len(test_X), args.calls))]
    n = len(one_row_frames)
    pipeline_one = latencies_us(lambda i: model.predict_proba(one_row_frames[i % n]), args.calls)
    compiled_one = latencies_us(lambda i: scorer.score_rows([rows[i % len(rows)]]), args.calls)
    width = 1 + len(schema.features)
    groups = [rows[i : i + width] for i in range(0, len(rows) - width, width)]
    compiled_reasons = latencies_us(lambda i: scorer.score_rows(groups[i % len(groups)]), 500)
    pipe_p50, pipe_p99 = percentiles(pipeline_one)
    comp_p50, comp_p99 = percentiles(compiled_one)
    reas_p50, reas_p99 = percentiles(compiled_reasons)
    line(f"one application, {args.calls} calls", "p50 µs", "p99 µs")
    line("  pipeline predict_proba", f"{pipe_p50:.1f}", f"{pipe_p99:.1f}")
    line("  compiled score_rows([row])", f"{comp_p50:.1f}", f"{comp_p99:.1f}")
    line(
        "  ratio pipeline / compiled", f"{pipe_p50 / comp_p50:.0f}x", f"{pipe_p99 / comp_p99:.0f}x"
    )
    line(f"  compiled score_rows, {width} rows", f"{reas_p50:.1f}", f"{reas_p99:.1f}")

    rng = np.random.default_rng(SEED)
    batch = frame.iloc[rng.integers(0, len(frame), args.batch_rows)].reset_index(drop=True)
    pipeline_s = best_seconds(lambda: model.predict_proba(schema.to_frame(batch)), args.repeats)
    compiled_s = best_seconds(lambda: scorer.score_frame(batch), args.repeats)
    line(f"{len(batch)} rows, best of {args.repeats}", "ms", "rows/s")
    line(
        "  pipeline to_frame + predict", f"{pipeline_s * 1e3:.1f}", f"{len(batch) / pipeline_s:.0f}"
    )
    line("  compiled score_frame", f"{compiled_s * 1e3:.1f}", f"{len(batch) / compiled_s:.0f}")
    line("  ratio pipeline / compiled", f"{pipeline_s / compiled_s:.1f}x", "")


def line(label: str, *columns: str) -> None:
    print(f"  {label:<36}" + "".join(f"{column:>11}" for column in columns))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(training=TrainingSettings(dataset=DATASET))
    loaded = load_dataset(DATASET)
    splits = split_frame(
        loaded.frame,
        loaded.schema,
        test_size=settings.training.test_size,
        validation_size=settings.training.validation_size,
        seed=SEED,
    )
    test_frame = loaded.frame.loc[splits.test.X.index]
    costs = CostMatrix(settings.training.cost_false_approve, settings.training.cost_false_decline)
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    print(
        f"fast path bench: {DATASET}, scikit-learn {sklearn.__version__}, "
        f"OMP_NUM_THREADS={omp}, one thread via threadpoolctl"
    )
    with threadpool_limits(limits=1):
        for family, params in CONFIGS.items():
            trained = fit(
                loaded.schema, family, params, splits.train, splits.validation, costs, SEED
            )
            bench_family(trained, loaded.schema, test_frame, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
