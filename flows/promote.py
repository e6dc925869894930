"""Promote: score challenger and champion on the same frozen data → gate → record → move aliases.

The second half of `retrain`. The decision is appended to the promotion log before any alias
moves, so production never changes without a record; a failed gate leaves every alias where it
was. With maker-checker on (`LOANOPS_PROMOTION_MAKER_CHECKER`), a passed gate is recorded as
`awaiting_approval` and the run pauses for a second person (flows/approval.py); the aliases move
only on an approval, and the answer is recorded before they do.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from sklearn.metrics import brier_score_loss, roc_auc_score

from flows.approval import wait_for_approval
from flows.common import TRACKING_RETRIES, settings_for
from loanops import card, promotion_log, registry
from loanops.approval import Approval, LiveComparison
from loanops.data import frame_sha256
from loanops.directions import direction_effects
from loanops.evaluate import expected_calibration_error
from loanops.fairness import adverse_impact
from loanops.promotion import (
    Comparison,
    GateDecision,
    GatePolicy,
    GateScores,
    PromotionError,
    decide,
    refuse,
)
from loanops.schema import FeatureSchema, Segment
from loanops.settings import Settings

CHAMPION_DATA = "the champion's test split"


@dataclass(frozen=True)
class PromotionResult:
    """The gate's outcome and where the aliases point afterwards."""

    outcome: str
    challenger_version: str
    champion_version: str | None
    production_version: str | None
    reasons: tuple[str, ...]
    record_run_id: str | None
    approval: str | None = None
    """Maker-checker only: `approved`, `rejected` or `timed_out`; None when it is off."""
    approver: str | None = None


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
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise PromotionError(f"{settings.model_name} v{version} does not exist") from error
    champion = registry.version_by_alias(client, settings.model_name, settings.production_alias)
    return challenger, champion


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def load_gate_data(settings: Settings, version: ModelVersion) -> pd.DataFrame:
    """A version's frozen test split, as logged by its training run."""
    client = registry.connect(settings)
    with tempfile.TemporaryDirectory() as tmp:
        return registry.gate_data(client, version, Path(tmp))


def gate_scores(
    version: ModelVersion,
    model: Any,
    schema: FeatureSchema,
    frame: pd.DataFrame,
    *,
    threshold: float,
    segments: Sequence[Segment],
    min_group_rows: int,
) -> GateScores:
    """A version's gate metrics, direction effects and adverse impact on one frozen test set.

    Adverse impact is judged at the version's own threshold, on the `segments` given (the
    challenger's declarations, for both versions, so that they are judged alike).
    """
    X = schema.to_frame(frame)
    y = schema.labels(frame)

    def pd_of(features: pd.DataFrame) -> np.ndarray:
        return np.asarray(model.predict_proba(features)[:, 1])

    p = pd_of(X)
    directions = direction_effects(pd_of, X, schema)
    impacts, unchecked = adverse_impact(
        frame, p < threshold, segments, min_group_rows=min_group_rows
    )
    return GateScores(
        version=str(version.version),
        roc_auc=float(roc_auc_score(y, p)),
        ece=expected_calibration_error(y, p),
        mean_pd=float(p.mean()),
        pd_variance=float(np.mean(p * (1 - p))),
        default_rate=float(y.mean()),
        rows=len(y),
        positives=int(y.sum()),
        metrics={
            "brier": float(brier_score_loss(y, p)),
            **{f"direction_{e.feature}": e.mean_change for e in directions},
            **{i.metric_name: i.ratio for i in impacts},
        },
        directions=directions,
        adverse_impact=impacts,
        unchecked=unchecked,
    )


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def fair_lending_segments(settings: Settings, version: ModelVersion) -> tuple[Segment, ...]:
    """The segments a version's schema declares for fair-lending review."""
    schema = registry.model_card(registry.connect(settings), version).schema
    return schema.segments_for("fair_lending")


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def score(
    settings: Settings,
    version: ModelVersion,
    frames: dict[str, pd.DataFrame],
    segments: Sequence[Segment],
) -> dict[str, GateScores]:
    """A version's gate metrics on each named test set, loading the model once; adverse impact
    is judged on `segments`."""
    client = registry.connect(settings)
    card = registry.model_card(client, version)
    schema = card.schema
    model = registry.load_model(settings.model_name, str(version.version))
    return {
        name: gate_scores(
            version,
            model,
            schema,
            frame,
            threshold=card.threshold,
            segments=segments,
            min_group_rows=settings.gate.min_group_rows,
        )
        for name, frame in frames.items()
    }


def training_fingerprint(client: MlflowClient, version: ModelVersion) -> tuple[str, ...]:
    """Data, code and configuration a version came from; equal fingerprints mean a clone."""
    card = registry.model_card(client, version)
    commit = version.tags.get("loanops.git_commit", "unknown")
    return (
        card.dataset_sha256,
        commit,
        card.family,
        json.dumps(card.params, sort_keys=True),
        f"{card.threshold:.12g}",
    )


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def precheck(settings: Settings, challenger: ModelVersion, champion: ModelVersion) -> str | None:
    """Why the two versions cannot or need not be compared, or None when they can."""
    client = registry.connect(settings)
    challenger_card = registry.model_card(client, challenger)
    champion_card = registry.model_card(client, champion)
    if challenger_card.schema.input_contract() != champion_card.schema.input_contract():
        return (
            f"champion v{champion.version} takes different inputs, so the two cannot be scored "
            "on the same data; a change of inputs is promoted by hand"
        )
    fingerprint = training_fingerprint(client, challenger)
    if "unknown" not in fingerprint[1] and "dirty" not in fingerprint[1]:
        if fingerprint == training_fingerprint(client, champion):
            return (
                f"v{challenger.version} was trained on the same data with the same code and "
                f"configuration as champion v{champion.version}; promoting it would change "
                "nothing and push a different model out of the previous alias"
            )
    return None


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def record(
    settings: Settings,
    decision: GateDecision,
    gate_sha256: str,
    requested_by: str,
    approval: Approval | None = None,
) -> promotion_log.DecisionRecord:
    """Append the decision to the promotion log; a retry finds it instead of adding another.

    With maker-checker, one run appends two records, the wait and the answer, each with a key
    of its own.
    """
    client = registry.connect(settings)
    run_id = flow_run.get_id()
    stage = ""
    if approval is not None:
        stage = "/awaiting" if approval.status == "awaiting" else "/answer"
    return promotion_log.record_decision(
        client,
        settings,
        decision,
        decided_by=f"{requested_by} via prefect flow run {run_id}" if run_id else requested_by,
        gate_data_sha256=gate_sha256,
        decision_key=promotion_log.decision_id(
            settings.model_name,
            decision.challenger.version,
            f"{run_id}{stage}" if run_id else None,
        ),
        approval=approval,
    )


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def show_on_version(settings: Settings, entry: promotion_log.DecisionRecord) -> None:
    """Show a decision on the version, without carrying anything out (a wait for approval)."""
    promotion_log.tag_version_with_decision(registry.connect(settings), settings, entry)


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def find_live_comparison(settings: Settings, version: str) -> LiveComparison | None:
    """The live comparison recorded for the version, shown to whoever approves it."""
    return promotion_log.live_comparison(registry.connect(settings), settings, version)


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def apply(
    settings: Settings,
    entry: promotion_log.DecisionRecord,
    challenger: ModelVersion,
    champion: ModelVersion | None,
) -> None:
    """Move the aliases if the record says promoted, and show the decision on the version.

    The record, not the gate, decides: with maker-checker a passed gate promotes only once
    approved.
    """
    client = registry.connect(settings)
    if entry.outcome == "promoted":
        registry.move_aliases(client, settings, challenger, champion)
    # The record was written first; this marks that what it says has been carried out.
    client.set_tag(entry.run_id, "loanops.applied", "true")
    promotion_log.tag_version_with_decision(client, settings, entry)


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def log_model_card(settings: Settings, version: ModelVersion) -> str:
    """Build the version's model card, gate decision included, and log it with the version."""
    client = registry.connect(settings)
    version = client.get_model_version(version.name, str(version.version))  # with its gate tags
    built = card.build_card(
        client,
        version,
        bootstrap_samples=settings.training.bootstrap_samples,
        seed=settings.training.seed,
    )
    return card.log_card(client, version, built)


@flow(name="promote")
def promote_flow(
    version: str | None = None, model_name: str | None = None, requested_by: str | None = None
) -> PromotionResult:
    """Gate a challenger version against the production champion.

    Args:
        version: the challenger's version number (default: the newest version).
        model_name: registered model name (default: settings).
        requested_by: who asks for the promotion, for the record; with maker-checker on, they
            cannot approve it (default: the OS user running the flow).
    """
    settings = settings_for(model_name=model_name)
    logger = get_run_logger()
    maker = requested_by or promotion_log.operator()
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

    policy = GatePolicy(
        min_auc=settings.gate.min_auc,
        max_ece=settings.gate.max_ece,
        auc_tolerance=settings.gate.auc_tolerance,
        max_calibration_z=settings.gate.max_calibration_z,
        min_gate_positives=settings.gate.min_gate_positives,
        min_adverse_impact_ratio=settings.gate.min_adverse_impact_ratio,
        adverse_impact_tolerance=settings.gate.adverse_impact_tolerance,
    )
    gate_frame = load_gate_data(settings, challenger)
    gate_sha256 = frame_sha256(gate_frame)
    frames = {"challenger": gate_frame}
    refusal = precheck(settings, challenger, champion) if champion is not None else None
    if champion is not None and refusal is None:
        champion_frame = load_gate_data(settings, champion)
        # The champion's own test split keeps a challenger from choosing its own exam.
        if frame_sha256(champion_frame) != gate_sha256:
            frames[CHAMPION_DATA] = champion_frame
    # Both versions are judged on the challenger's fair-lending declarations, like for like.
    segments = fair_lending_segments(settings, challenger)
    challenger_scores = score(settings, challenger, frames, segments)
    if champion is None:
        decision = decide(challenger_scores["challenger"], None, policy)
    elif refusal is not None:
        decision = refuse(refusal, challenger_scores["challenger"], str(champion.version), policy)
    else:
        champion_scores = score(settings, champion, frames, segments)
        also = [
            Comparison(name, challenger_scores[name], champion_scores[name])
            for name in frames
            if name != "challenger"
        ]
        decision = decide(
            challenger_scores["challenger"], champion_scores["challenger"], policy, also=also
        )

    approval = None
    if decision.promote and settings.gate.maker_checker:
        waiting = Approval(status="awaiting", requested_by=maker)
        show_on_version(settings, record(settings, decision, gate_sha256, maker, waiting))
        live = find_live_comparison(settings, str(challenger.version))
        approval = wait_for_approval(settings, decision, requested_by=maker, live=live)
    entry = record(settings, decision, gate_sha256, maker, approval)
    apply(settings, entry, challenger, champion)
    log_model_card(settings, challenger)
    promoted = entry.outcome == "promoted"
    log: Any = logger.info if promoted else logger.warning
    log("v%s %s: %s", challenger.version, entry.outcome, "; ".join(entry.reasons))
    production = challenger if promoted else champion
    return PromotionResult(
        outcome=entry.outcome,
        challenger_version=str(challenger.version),
        champion_version=str(champion.version) if champion else None,
        production_version=str(production.version) if production else None,
        reasons=tuple(entry.reasons),
        record_run_id=entry.run_id,
        approval=approval.status if approval else None,
        approver=approval.approver if approval else None,
    )
