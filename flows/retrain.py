"""Retrain: train → promote, then → deploy when a cluster is configured.

Scheduled weekly in prefect.yaml; also what `make demo` runs. With `LOANOPS_DEPLOY_TARGET`
left at `none` (the default, and every local run) it stops at the registry and touches no
cluster; set to `kubernetes` (the manifests' ConfigMap does) it rolls out what it promoted.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow

from flows.common import settings_for
from flows.deploy.flow import DeployResult, deploy_flow
from flows.promote import PromotionResult, promote_flow
from flows.train import TrainResult, train_flow


@dataclass(frozen=True)
class RetrainResult:
    """The new version, what the gate made of it, and its rollout when there was one."""

    training: TrainResult
    promotion: PromotionResult
    deployment: DeployResult | None = None


@flow(name="retrain")
def retrain_flow(
    dataset: str | None = None,
    rows: int | None = None,
    seed: int | None = None,
    trials: int | None = None,
    timeout_seconds: float | None = None,
    data_path: str | None = None,
    requested_by: str | None = None,
) -> RetrainResult:
    """Train a candidate on fresh data, gate it against the production champion, and roll it
    out when it takes production and a cluster is configured.

    Args:
        dataset: dataset name (default: settings).
        rows: rows to draw or subsample.
        seed: seed for the split, the search and the model.
        trials: Optuna trial budget.
        timeout_seconds: Optuna time budget.
        data_path: train on this CSV or Parquet file, which must follow the dataset's schema.
        requested_by: who asks for the promotion; with maker-checker on, they cannot approve it
            (default: the OS user running the flow).
    """
    training = train_flow(
        dataset=dataset,
        rows=rows,
        seed=seed,
        trials=trials,
        timeout_seconds=timeout_seconds,
        data_path=data_path,
    )
    promotion = promote_flow(
        version=training.version, model_name=training.model_name, requested_by=requested_by
    )
    deployment = None
    settings = settings_for(model_name=training.model_name)
    # Only a version that just took production is rolled out; a refused one changed nothing.
    if settings.kube.deploy_target == "kubernetes" and promotion.outcome == "promoted":
        deployment = deploy_flow(
            version=promotion.challenger_version, model_name=training.model_name
        )
    return RetrainResult(training=training, promotion=promotion, deployment=deployment)
