"""The promotion log: every gate decision and every deploy outcome, append-only, in MLflow.

Each decision, pass or fail, is a run of its own in the promotions experiment, so the log is
append-only and readable in the MLflow UI as well as through `history()`. With maker-checker on,
a passed gate adds two: `awaiting_approval` when it starts to wait, then the answer (approver,
reason, time) as `promoted` or `rejected`. So is every deploy
outcome (a version rolled out, or rolled back with the alias moved back): `deploy_history()`
reads those. A run's tag `loanops.record_complete` is written last, and a retry with the same key
returns the record already there, so neither a cut-short run nor a retried one adds a record.
"""

from __future__ import annotations

import getpass
import hashlib
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from loanops.approval import Approval, LiveComparison
from loanops.promotion import GateDecision
from loanops.registry import ensure_experiment
from loanops.settings import Settings

RECORD_KIND_TAG = "loanops.record_kind"
"""Tells the promotion log's kinds of run apart: `gate` decisions and `deploy` outcomes (and
the `live_comparison` runs that `live_comparison()` reads)."""


@dataclass(frozen=True)
class DecisionRecord:
    """One gate decision as stored: who, what, when, both versions' metrics and why."""

    decided_at: str
    decided_by: str
    model_name: str
    outcome: str
    challenger_version: str
    champion_version: str | None
    reasons: list[str]
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    policy: dict[str, float]
    gate_data_sha256: str
    decision_id: str = ""
    run_id: str = ""
    approval: str | None = None
    """Maker-checker only: `awaiting`, `approved`, `rejected` or `timed_out`; None when off."""
    requested_by: str | None = None
    approver: str | None = None
    approval_reason: str | None = None
    approval_decided_at: str | None = None


def operator() -> str:
    """Who is running this process, for the record; a container user may have no name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def decision_id(model_name: str, challenger_version: str, flow_run_id: str | None) -> str:
    """The same id for every retry of one gate run, so a retry cannot append a duplicate."""
    basis = f"{model_name}:{challenger_version}:{flow_run_id or datetime.now(UTC).isoformat()}"
    return hashlib.sha256(basis.encode()).hexdigest()[:32]


def _scores(scores: Any) -> dict[str, float]:
    return {
        "roc_auc": scores.roc_auc,
        "ece": scores.ece,
        "mean_pd": scores.mean_pd,
        "default_rate": scores.default_rate,
        "pd_variance": scores.pd_variance,
        "calibration_z": scores.calibration_z,
        "rows": float(scores.rows),
        "positives": float(scores.positives),
        **scores.metrics,
    }


def record_decision(
    client: MlflowClient,
    settings: Settings,
    decision: GateDecision,
    *,
    decided_by: str,
    gate_data_sha256: str,
    decision_key: str,
    approval: Approval | None = None,
) -> DecisionRecord:
    """Append a decision to the promotion log, once per `decision_key`.

    The record is a run in the promotions experiment: tags to filter on, both versions'
    metrics, the policy, and `decision.json`. The tag `loanops.record_complete` is written last,
    so a run cut short is never read as a decision. A retry with the same key finds the
    complete record and returns it instead of writing a second one.

    With an `approval` (maker-checker), the outcome is the approval's: `awaiting_approval`, or
    `promoted` only when a second person approved; the approval is added to the reasons.
    """
    experiment_id = ensure_experiment(client, settings.gate.experiment_name, settings)
    existing = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`loanops.decision_id` = '{decision_key}' "
            "and tags.`loanops.record_complete` = 'true'"
        ),
        max_results=1,
    )
    if existing:
        return DecisionRecord(
            **mlflow.artifacts.load_dict(f"runs:/{existing[0].info.run_id}/decision.json")
        )
    champion = decision.champion
    record = DecisionRecord(
        decided_at=datetime.now(UTC).isoformat(timespec="seconds"),
        decided_by=decided_by,
        model_name=settings.model_name,
        outcome=decision.outcome if approval is None else approval.outcome,
        challenger_version=decision.challenger.version,
        champion_version=decision.champion_version,
        reasons=[*decision.reasons, *([approval.sentence()] if approval else [])],
        challenger_metrics=_scores(decision.challenger),
        champion_metrics=_scores(champion) if champion else None,
        policy=asdict(decision.policy),
        gate_data_sha256=gate_data_sha256,
        decision_id=decision_key,
        approval=approval.status if approval else None,
        requested_by=approval.requested_by if approval else None,
        approver=approval.approver if approval else None,
        approval_reason=approval.reason if approval else None,
        approval_decided_at=approval.decided_at if approval else None,
    )
    run_name = f"v{record.challenger_version} {record.outcome}"
    if record.champion_version:
        run_name += f" vs v{record.champion_version}"
    run = client.create_run(
        experiment_id,
        run_name=run_name,
        tags={
            "loanops.model_name": record.model_name,
            "loanops.decision_id": decision_key,
            "loanops.outcome": record.outcome,
            "loanops.challenger_version": record.challenger_version,
            "loanops.champion_version": record.champion_version or "",
            "loanops.decided_by": decided_by,
            RECORD_KIND_TAG: "gate",
            "mlflow.note.content": "\n".join(record.reasons),
            **({"loanops.approval": approval.status} if approval else {}),
            **({"loanops.approver": approval.approver} if approval and approval.approver else {}),
        },
    )
    run_id = run.info.run_id
    client.log_batch(
        run_id,
        metrics=[
            Metric(f"{side}_{name}", value, 0, 0)
            for side, metrics in (
                ("challenger", record.challenger_metrics),
                ("champion", record.champion_metrics or {}),
            )
            for name, value in metrics.items()
        ],
        params=[Param(f"policy_{name}", str(value)) for name, value in record.policy.items()],
    )
    stored = DecisionRecord(**{**asdict(record), "run_id": run_id})
    client.log_dict(run_id, asdict(stored), "decision.json")
    client.set_tag(run_id, "loanops.record_complete", "true")
    client.set_terminated(run_id)
    return stored


def tag_version_with_decision(
    client: MlflowClient, settings: Settings, record: DecisionRecord
) -> None:
    """Show a version's latest gate decision on the version itself; the log keeps them all."""
    for key, value in {
        "gate.outcome": record.outcome,
        "gate.reasons": "; ".join(record.reasons),
        "gate.decided_at": record.decided_at,
        "gate.record_run_id": record.run_id,
    }.items():
        client.set_model_version_tag(settings.model_name, record.challenger_version, key, value)


def live_comparison(
    client: MlflowClient, settings: Settings, version: str
) -> LiveComparison | None:
    """The newest live comparison recorded for a version, or None when there is none.

    What is looked for: a run in the promotions experiment tagged `loanops.record_kind` =
    `live_comparison`, `loanops.model_name` = the model, `loanops.challenger_version` = the
    version and `loanops.record_complete` = `true`; its metrics are the headline numbers. No
    flow writes these yet; a compare flow that records its results this way has them shown in
    the approval request.
    """
    experiment = client.get_experiment_by_name(settings.gate.experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.`{RECORD_KIND_TAG}` = 'live_comparison' "
            f"and tags.`loanops.model_name` = '{settings.model_name}' "
            f"and tags.`loanops.challenger_version` = '{version}' "
            "and tags.`loanops.record_complete` = 'true'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    return LiveComparison(run_id=runs[0].info.run_id, metrics=dict(runs[0].data.metrics))


def _complete_records(client: MlflowClient, settings: Settings) -> list[Any]:
    """Every complete run of the promotion log on the configured model, oldest first."""
    experiment = client.get_experiment_by_name(settings.gate.experiment_name)
    if experiment is None:
        return []
    runs: list[Any] = client.search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.`loanops.model_name` = '{settings.model_name}' "
            "and tags.`loanops.record_complete` = 'true'"
        ),
        order_by=["attributes.start_time ASC"],
        max_results=10_000,
    )
    return runs


def history(client: MlflowClient, settings: Settings) -> list[DecisionRecord]:
    """Every complete gate decision on the configured model, oldest first."""
    return [
        DecisionRecord(**mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/decision.json"))
        for run in _complete_records(client, settings)
        # Records written before the kind tag existed are all gate decisions.
        if run.data.tags.get(RECORD_KIND_TAG, "gate") == "gate"
    ]


@dataclass(frozen=True)
class DeployRecord:
    """One deploy outcome as stored: which version, where, what became of it and why."""

    deployed_at: str
    deployed_by: str
    model_name: str
    outcome: str
    """`deployed`; `rolled_back` when a rollout failed or timed out and was undone;
    `rollback_failed` when a Deployment could not be put back."""
    version: str
    previous_version: str | None
    """The champion before `version`: what the production alias goes back to on a rollback."""
    production_version: str | None
    """Where the production alias points once the deploy is over."""
    namespace: str
    rollouts: dict[str, str]
    """Per Deployment, the last word on its rollout (and rollback)."""
    reasons: list[str]
    deploy_id: str = ""
    run_id: str = ""


def deploy_id(model_name: str, version: str, flow_run_id: str | None) -> str:
    """The same id for every retry of one deploy run, so a retry cannot append a duplicate."""
    basis = f"deploy:{model_name}:{version}:{flow_run_id or datetime.now(UTC).isoformat()}"
    return hashlib.sha256(basis.encode()).hexdigest()[:32]


def record_deploy(
    client: MlflowClient, settings: Settings, record: DeployRecord, *, deploy_key: str
) -> DeployRecord:
    """Append a deploy outcome to the promotion log, once per `deploy_key`.

    Stored like a gate decision: a run in the promotions experiment with tags to filter on and
    `deploy.json`, marked complete last. The version also carries its latest deploy outcome as
    tags, as it carries its gate outcome.
    """
    experiment_id = ensure_experiment(client, settings.gate.experiment_name, settings)
    existing = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`loanops.deploy_id` = '{deploy_key}' and tags.`loanops.record_complete` = 'true'"
        ),
        max_results=1,
    )
    if existing:
        return DeployRecord(
            **mlflow.artifacts.load_dict(f"runs:/{existing[0].info.run_id}/deploy.json")
        )
    run = client.create_run(
        experiment_id,
        run_name=f"v{record.version} {record.outcome.replace('_', ' ')}",
        tags={
            "loanops.model_name": record.model_name,
            "loanops.deploy_id": deploy_key,
            "loanops.outcome": record.outcome,
            "loanops.version": record.version,
            "loanops.previous_version": record.previous_version or "",
            "loanops.decided_by": record.deployed_by,
            "loanops.namespace": record.namespace,
            RECORD_KIND_TAG: "deploy",
            "mlflow.note.content": "\n".join(record.reasons),
        },
    )
    run_id = run.info.run_id
    stored = DeployRecord(**{**asdict(record), "deploy_id": deploy_key, "run_id": run_id})
    client.log_dict(run_id, asdict(stored), "deploy.json")
    client.set_tag(run_id, "loanops.record_complete", "true")
    client.set_terminated(run_id, status="FINISHED" if record.outcome == "deployed" else "FAILED")
    for key, value in {
        "deploy.outcome": stored.outcome,
        "deploy.deployed_at": stored.deployed_at,
        "deploy.record_run_id": run_id,
    }.items():
        client.set_model_version_tag(settings.model_name, stored.version, key, value)
    return stored


def deploy_history(client: MlflowClient, settings: Settings) -> list[DeployRecord]:
    """Every complete deploy outcome on the configured model, oldest first."""
    return [
        DeployRecord(**mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/deploy.json"))
        for run in _complete_records(client, settings)
        if run.data.tags.get(RECORD_KIND_TAG) == "deploy"
    ]
