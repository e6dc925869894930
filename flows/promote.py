"""Promote: score challenger and champion on the same frozen data → gate → move aliases → record.

The second half of `retrain`. A failed gate leaves every alias where it was; pass or fail, the
decision is appended to the promotion log.
"""

from __future__ import annotations

import getpass
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from sklearn.metrics import brier_score_loss, roc_auc_score

from flows.train import TRACKING_RETRIES, settings_for
from loanops import registry
from loanops.data import frame_sha256
from loanops.evaluate import expected_calibration_error
from loanops.promotion import GateDecision, GatePolicy, GateScores, PromotionError, decide
from loanops.settings import Settings


@dataclass(frozen=True)
class PromotionResult:
    """The gate's outcome and where the aliases point afterwards."""

    outcome: str
    challenger_version: str
    champion_version: str | None
    production_version: str | None
    reasons: tuple[str, ...]
    record_run_id: str | None


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def resolve_versions(
    settings: Settings, version: str | None
) -> tuple[ModelVersion, ModelVersion | None]:
    """The challenger (the given or the newest version) and the current champion."""
    client = registry.connect(settings)
    if version is None:
        challenger = registry.latest_version(client, settings.model_name)
        if challenger is None:
            raise PromotionError(f"model {settings.model_name!r} has no versions to promote")
    else:
        try:
            challenger = client.get_model_version(settings.model_name, version)
        except Exception as error:
            raise PromotionError(f"{settings.model_name} v{version} does not exist") from error
    champion = registry.version_by_alias(client, settings.model_name, settings.production_alias)
    return challenger, champion


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def load_gate_data(settings: Settings, challenger: ModelVersion) -> pd.DataFrame:
    """The challenger's frozen test split: the data both versions are judged on."""
    client = registry.connect(settings)
    with tempfile.TemporaryDirectory() as tmp:
        return registry.gate_data(client, challenger, Path(tmp))


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def score(settings: Settings, version: ModelVersion, gate_frame: pd.DataFrame) -> GateScores:
    """A version's gate metrics on the frozen data, using the schema it was trained with."""
    client = registry.connect(settings)
    card = registry.model_card(client, version)
    schema = card.schema
    model = registry.load_model(settings.model_name, version.version)
    X = schema.to_frame(gate_frame)
    y = schema.labels(gate_frame)
    p = model.predict_proba(X)[:, 1]
    return GateScores(
        version=str(version.version),
        roc_auc=float(roc_auc_score(y, p)),
        ece=expected_calibration_error(y, p),
        metrics={"brier": float(brier_score_loss(y, p)), "threshold": card.threshold},
    )


def same_features(settings: Settings, a: ModelVersion, b: ModelVersion) -> bool:
    client = registry.connect(settings)
    return registry.model_card(client, a).schema == registry.model_card(client, b).schema


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def apply_decision(
    settings: Settings,
    decision: GateDecision,
    challenger: ModelVersion,
    champion: ModelVersion | None,
    gate_sha256: str,
) -> str:
    """Move the aliases if the gate passed, then append the decision to the log."""
    client = registry.connect(settings)
    if decision.promote:
        registry.move_aliases(client, settings, challenger, champion)
    run_id = flow_run.get_id()
    decided_by = (
        f"{getpass.getuser()} via prefect flow run {run_id}" if run_id else getpass.getuser()
    )
    record = registry.record_decision(
        client, settings, decision, decided_by=decided_by, gate_data_sha256=gate_sha256
    )
    return record.run_id


@flow(name="promote")
def promote_flow(version: str | None = None, model_name: str | None = None) -> PromotionResult:
    """Gate a challenger version against the production champion.

    Args:
        version: the challenger's version number (default: the newest version).
        model_name: registered model name (default: settings).
    """
    settings = settings_for(model_name=model_name)
    logger = get_run_logger()
    challenger, champion = resolve_versions(settings, version)
    if champion is not None and str(champion.version) == str(challenger.version):
        logger.info("v%s already holds %s", challenger.version, settings.production_alias)
        return PromotionResult(
            outcome="unchanged",
            challenger_version=str(challenger.version),
            champion_version=str(champion.version),
            production_version=str(champion.version),
            reasons=(f"v{challenger.version} is already {settings.production_alias}",),
            record_run_id=None,
        )

    gate_frame = load_gate_data(settings, challenger)
    challenger_scores = score(settings, challenger, gate_frame)
    policy = GatePolicy(
        min_auc=settings.promotion_min_auc,
        max_ece=settings.promotion_max_ece,
        auc_tolerance=settings.promotion_auc_tolerance,
    )
    if champion is not None and not same_features(settings, challenger, champion):
        decision = GateDecision(
            promote=False,
            reasons=(
                f"champion v{champion.version} takes different features, so the two cannot be "
                "scored on the same data; a schema change is promoted by hand",
            ),
            challenger=challenger_scores,
            champion=None,
            policy=policy,
        )
    else:
        champion_scores = score(settings, champion, gate_frame) if champion else None
        decision = decide(challenger_scores, champion_scores, policy)

    record_run_id = apply_decision(
        settings, decision, challenger, champion, frame_sha256(gate_frame)
    )
    log: Any = logger.info if decision.promote else logger.warning
    log("v%s %s: %s", challenger.version, decision.outcome, decision.summary)
    production = challenger if decision.promote else champion
    return PromotionResult(
        outcome=decision.outcome,
        challenger_version=str(challenger.version),
        champion_version=str(champion.version) if champion else None,
        production_version=str(production.version) if production else None,
        reasons=decision.reasons,
        record_run_id=record_run_id,
    )
