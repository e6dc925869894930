"""How close training gets to the limit: tuned test AUC against the generator's ground truth.

The synthetic generator knows each loan's true probability of default (`pd_true`), so the AUC
of `pd_true` on the frozen test rows is the best any model can reach there. This bench runs the
production `train` path without MLflow or Prefect (load → validate → split → tune → fit and
calibrate → score the test split), scores `pd_true` on exactly the same test rows as the
baseline, and passes when the tuned AUC is within `AUC_GAP_TARGET` of it.

    .venv/bin/python bench/synthetic_auc.py [--rows 200000] [--seed 42] [--trials 20] [--folds 3]

Exits 0 on PASS, 1 on FAIL, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError
from sklearn.metrics import brier_score_loss, roc_auc_score

from loanops.data import load_dataset
from loanops.evaluate import CostMatrix
from loanops.features import split_frame
from loanops.settings import Settings, TrainingSettings
from loanops.train import fit
from loanops.tune import tune
from loanops.validation import validate_training_frame

DATASET = "synthetic"
AUC_GAP_TARGET = 0.01
"""Acceptance: ground-truth AUC minus tuned AUC on the same test rows is at most this."""

DEFAULT_ROWS = 200_000
DEFAULT_SEED = 42
# Budget measured to finish in about three minutes on 2 cores at 200k rows (bench/README.md).
DEFAULT_TRIALS = 20
DEFAULT_FOLDS = 3
DEFAULT_BOOTSTRAP = 200


@dataclass(frozen=True)
class Scored:
    """One scorer's test-split figures."""

    name: str
    auc: float
    mean_pd: float | None = None
    brier: float | None = None


def probabilities(name: str, y: np.ndarray, p: np.ndarray) -> Scored:
    return Scored(name, float(roc_auc_score(y, p)), float(p.mean()), float(brier_score_loss(y, p)))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Tuned test AUC against the ground-truth AUC on the synthetic data."
    )
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows to generate")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="data, split and search")
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help="Optuna trial budget")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="CV folds per trial")
    parser.add_argument(
        "--timeout", type=float, default=None, help="Optuna time budget in seconds (default none)"
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_BOOTSTRAP,
        help="paired bootstrap resamples for the gap's interval; 0 skips it",
    )
    return parser.parse_args(argv)


class Clock:
    """Wall time per phase, in order."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        print(f"… {name}", flush=True)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = time.perf_counter() - start

    @property
    def total(self) -> float:
        return sum(self.phases.values())


def paired_gap_interval(
    y: np.ndarray, p_truth: np.ndarray, p_model: np.ndarray, *, samples: int, seed: int
) -> tuple[float, float]:
    """95 % percentile interval of AUC(truth) - AUC(model), resampling the test rows together."""
    rng = np.random.default_rng(seed)
    gaps = []
    n = len(y)
    for _ in range(samples):
        idx = rng.integers(0, n, n)
        gaps.append(roc_auc_score(y[idx], p_truth[idx]) - roc_auc_score(y[idx], p_model[idx]))
    lo, hi = np.percentile(gaps, [2.5, 97.5])
    return float(lo), float(hi)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        # The production defaults (split shares, costs, families), with the bench's overrides.
        settings = Settings(
            training=TrainingSettings(
                dataset=DATASET,
                dataset_rows=args.rows,
                seed=args.seed,
                tune_trials=args.trials,
                cv_folds=args.folds,
                tune_timeout_seconds=args.timeout,
            )
        )
    except ValidationError as error:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in error.errors())
        print(f"error: {problems}", file=sys.stderr)
        return 2
    if args.bootstrap < 0:
        print("error: --bootstrap must be >= 0", file=sys.stderr)
        return 2

    print(
        f"synthetic AUC bench: rows={args.rows} seed={args.seed} trials={args.trials} "
        f"folds={args.folds} timeout={args.timeout} "
        f"families={','.join(settings.training.model_families)}"
    )
    clock = Clock()

    with clock.phase("generate"):
        loaded = load_dataset(
            settings.training.dataset,
            rows=settings.training.dataset_rows,
            seed=settings.training.seed,
        )
        validate_training_frame(
            loaded.frame,
            loaded.schema,
            min_positives=settings.training.validation_min_positives,
            unknown_category_tolerance=settings.training.validation_unknown_category_tolerance,
        )
        splits = split_frame(
            loaded.frame,
            loaded.schema,
            test_size=settings.training.test_size,
            validation_size=settings.training.validation_size,
            seed=settings.training.seed,
        )

    with clock.phase("tune"):
        development = splits.development
        best = tune(
            development.X,
            development.y,
            loaded.schema,
            families=settings.training.model_families,
            n_trials=settings.training.tune_trials,
            timeout_seconds=settings.training.tune_timeout_seconds,
            folds=settings.training.cv_folds,
            seed=settings.training.seed,
        )

    with clock.phase("fit"):
        costs = CostMatrix(
            false_approve=settings.training.cost_false_approve,
            false_decline=settings.training.cost_false_decline,
        )
        trained = fit(
            loaded.schema,
            best.family,
            best.params,
            splits.train,
            splits.validation,
            costs,
            settings.training.seed,
        )

    with clock.phase("score"):
        y = splits.test.y
        p_model = trained.predict_pd(splits.test.X)
        # split_frame keeps the frame's index on X, so this picks exactly the test rows.
        test_rows = loaded.frame.loc[splits.test.X.index]
        if not np.array_equal(test_rows[loaded.schema.target.name].to_numpy(), y):
            raise RuntimeError("test labels do not line up with the frame; index was not kept")
        p_truth = test_rows["pd_true"].to_numpy()
        # Sub-grades sort A1 < ... < G5, safest to riskiest: the lender's own ranking.
        grade_rank = np.unique(test_rows["sub_grade"].astype(str), return_inverse=True)[1]
        # Each family's best configuration, fitted and scored like the winner.
        runners_up = []
        for family in settings.training.model_families:
            done = [t for t in best.trials if t.family == family and t.state == "COMPLETE"]
            if family == best.family or not done:
                continue
            top = max(done, key=lambda t: t.cv_roc_auc or 0.0)
            other = fit(
                loaded.schema,
                family,
                top.params,
                splits.train,
                splits.validation,
                costs,
                settings.training.seed,
            )
            runners_up.append(probabilities(f"best {family}", y, other.predict_pd(splits.test.X)))
        scored = [
            probabilities("ground truth (pd_true)", y, p_truth),
            probabilities(f"tuned {best.family}", y, p_model),
            *runners_up,
            Scored("lender sub_grade rank", float(roc_auc_score(y, grade_rank))),
            Scored("no skill", 0.5),
        ]
        interval = (
            paired_gap_interval(
                y, p_truth, p_model, samples=args.bootstrap, seed=settings.training.seed
            )
            if args.bootstrap
            else None
        )

    truth, model = scored[0], scored[1]
    gap = truth.auc - model.auc
    ratio = model.auc / truth.auc
    passed = gap <= AUC_GAP_TARGET

    print()
    print(
        f"data: {len(loaded.frame)} rows, default rate {loaded.frame['default'].mean():.4f}; "
        f"train {len(splits.train)}, validation {len(splits.validation)}, "
        f"test {len(splits.test)} ({splits.test.positives} defaults)"
    )
    print(
        f"search: {len(best.trials)} trials ({best.n_complete} complete, {best.n_pruned} pruned); "
        f"best {best.family} {best.params}"
    )
    print(f"  CV AUC {best.cv_roc_auc:.4f} ± {best.cv_roc_auc_std:.4f} on the development split")
    for family in settings.training.model_families:
        done = [t for t in best.trials if t.family == family and t.state == "COMPLETE"]
        top = max((t.cv_roc_auc or 0.0 for t in done), default=float("nan"))
        print(f"  {family:<9} {len(done):>2} complete, best CV AUC {top:.4f}")
    print()
    print(f"{'test split scorer':<26} {'AUC':>7} {'/ truth':>8} {'mean PD':>8} {'Brier':>8}")
    for row in scored:
        mean_pd = f"{row.mean_pd:8.4f}" if row.mean_pd is not None else f"{'':>8}"
        brier = f"{row.brier:8.5f}" if row.brier is not None else f"{'':>8}"
        line = f"{row.name:<26} {row.auc:7.4f} {row.auc / truth.auc:8.4f} {mean_pd} {brier}"
        print(line.rstrip())
    print()
    print(f"tuned AUC          {model.auc:.4f}")
    print(f"ground-truth AUC   {truth.auc:.4f}")
    gap_line = f"gap                {gap:+.4f} (target <= {AUC_GAP_TARGET})"
    if interval is not None:
        gap_line += f", paired bootstrap 95 % [{interval[0]:+.4f}, {interval[1]:+.4f}]"
    print(gap_line)
    print(f"ratio tuned/truth  {ratio:.4f}")
    print()
    print("time: " + ", ".join(f"{name} {secs:.1f}s" for name, secs in clock.phases.items()))
    print(f"total {clock.total:.1f}s")
    verdict = "PASS" if passed else "FAIL"
    print(f"{verdict}: gap {gap:.4f} {'<=' if passed else '>'} {AUC_GAP_TARGET}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
