"""Retrain: train → promote. Scheduled weekly in prefect.yaml; also what `make demo` runs."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow

from flows.promote import PromotionResult, promote_flow
from flows.train import TrainResult, train_flow


@dataclass(frozen=True)
class RetrainResult:
    """The new version, and what the gate made of it."""

    training: TrainResult
    promotion: PromotionResult


@flow(name="retrain")
def retrain_flow(
    dataset: str | None = None,
    rows: int | None = None,
    seed: int | None = None,
    trials: int | None = None,
    timeout_seconds: float | None = None,
    data_path: str | None = None,
) -> RetrainResult:
    """Train a candidate on fresh data, then gate it against the production champion.

    Args:
        dataset: dataset name (default: settings).
        rows: rows to draw or subsample.
        seed: seed for the split, the search and the model.
        trials: Optuna trial budget.
        timeout_seconds: Optuna time budget.
        data_path: train on this CSV or Parquet file, which must follow the dataset's schema.
    """
    training = train_flow(
        dataset=dataset,
        rows=rows,
        seed=seed,
        trials=trials,
        timeout_seconds=timeout_seconds,
        data_path=data_path,
    )
    promotion = promote_flow(version=training.version, model_name=training.model_name)
    return RetrainResult(training=training, promotion=promotion)
