"""What a crossed monitoring threshold does: request retraining, with its numbers on record.

`LOANOPS_RETRAIN_TRIGGER` picks how. `event` emits `loanops.retrain.requested`, which the
`retrain-on-drift` deployment in prefect.yaml is triggered by: the cluster's way. `subflow`
also emits it, then runs `retrain` inside the current flow: the local way, with no deployments.
`off` only logs and emits. Either way the new candidate still has to pass the promotion gate.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger
from prefect.events import emit_event

from flows.retrain import RetrainResult
from loanops.settings import Settings

RETRAIN_EVENT = "loanops.retrain.requested"


@dataclass(frozen=True)
class TriggerOutcome:
    """The request, and the retrain run when it ran here."""

    source: str
    reasons: list[str]
    event_id: str | None
    retrain: RetrainResult | None


def request_retraining(
    settings: Settings, source: str, reasons: list[str], numbers: dict[str, float]
) -> TriggerOutcome:
    """Log why, emit the retraining event, and retrain here when so configured.

    Args:
        settings: the run's settings; `retrain_trigger` decides what happens.
        source: what crossed a threshold: `monitor` or `performance`.
        reasons: each crossed threshold, in words with its numbers.
        numbers: the run's headline metrics, carried in the event's payload.
    """
    logger = get_run_logger()
    logger.warning("retraining requested by %s: %s", source, "; ".join(reasons))
    event = emit_event(
        event=RETRAIN_EVENT,
        resource={
            "prefect.resource.id": f"loanops.model.{settings.model_name}",
            "prefect.resource.name": settings.model_name,
        },
        payload={"source": source, "reasons": reasons, "metrics": numbers},
    )
    retrain = None
    if settings.monitor.retrain_trigger == "subflow":
        from flows.retrain import retrain_flow

        retrain = retrain_flow()
    return TriggerOutcome(source, reasons, str(event.id) if event else None, retrain)
