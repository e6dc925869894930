"""The promote flow's wait for a second person, and the CLI's way to answer it.

With maker-checker on, `promote` calls `wait_for_approval` once the gate has passed: the flow run
pauses (Prefect's `pause_flow_run` with `wait_for_input`, so the Prefect UI shows the form and
the gate's numbers) until someone answers or the timeout passes. `loanops models approve` and
`models reject` find the paused run by its tags (`waiting_promotions`) and resume it with the
same `ApprovalInput` the UI submits (`answer`).

The pause blocks the flow's process rather than suspending it: a suspended run restarts from a
deployment, and `loanops promote` and `make demo` run flows in-process, without one.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from prefect import get_client, get_run_logger
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from prefect.input.actions import create_flow_run_input, read_flow_run_input
from prefect.runtime import flow_run
from prefect.states import Running
from pydantic import Field, ValidationError

from loanops.approval import Approval, LiveComparison, refusal, request_description
from loanops.promotion import GateDecision
from loanops.settings import Settings

AWAITING_TAG = "loanops-awaiting-approval"
REQUEST_KEY = "loanops-approval-request"
"""The flow run input holding who asked and until when, for the CLI to read before answering."""


class ApprovalInput(RunInput):
    """A second person's answer to a promotion waiting for approval: the Prefect UI's form."""

    decision: Literal["approve", "reject"] = Field(
        description="`approve` moves the aliases; `reject` leaves every alias where it is."
    )
    approver: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"\S",
        description="Who decides; not the person who started the promotion.",
    )
    reason: str = Field(default="", max_length=2000, description="Why; a rejection must give one.")


def tags_for(model_name: str, version: str) -> list[str]:
    """The tags that mark a promotion of `model_name` v`version` as waiting for approval."""
    return [AWAITING_TAG, f"loanops-model:{model_name}", f"loanops-version:{version}"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def maker_identities(requested_by: str) -> tuple[str, ...]:
    """Who started the current promotion: the person, the flow run (id and name), and the run
    that started it as a subflow (a `retrain`), when there is one."""
    return tuple(
        identity
        for identity in (
            requested_by,
            flow_run.get_id(),
            flow_run.get_name(),
            flow_run.get_parent_flow_run_id(),
        )
        if identity
    )


def publish_request(settings: Settings, version: str, requested_by: str) -> None:
    """Tag the current flow run as waiting, and store who asked, for the CLI to find."""
    run_id = UUID(flow_run.get_id())
    deadline = datetime.now(UTC) + timedelta(seconds=settings.gate.approval_timeout_seconds)
    create_flow_run_input(
        key=REQUEST_KEY,
        value={
            "model_name": settings.model_name,
            "version": version,
            "requested_by": requested_by,
            "maker": list(maker_identities(requested_by)),
            "deadline": deadline.isoformat(timespec="seconds"),
        },
        flow_run_id=run_id,
    )
    with get_client(sync_client=True) as client:
        tags = client.read_flow_run(run_id).tags
        client.update_flow_run(
            run_id, tags=sorted({*tags, *tags_for(settings.model_name, version)})
        )


def wait_for_approval(
    settings: Settings,
    decision: GateDecision,
    *,
    requested_by: str,
    live: LiveComparison | None,
) -> Approval:
    """Pause the current flow run until a second person answers, or the timeout passes.

    An answer that cannot stand (a self-approval from the UI, a rejection without a reason)
    re-pauses the run until the same deadline instead of ending it: the maker's mistake must
    not cost the checker their turn, and it moves nothing. The timeout returns `timed_out`.
    """
    logger = get_run_logger()
    gate = settings.gate
    maker = maker_identities(requested_by)
    publish_request(settings, decision.challenger.version, requested_by)
    description = request_description(
        settings.model_name,
        decision,
        requested_by=requested_by,
        timeout_seconds=gate.approval_timeout_seconds,
        live=live,
    )
    deadline = time.monotonic() + gate.approval_timeout_seconds
    note = ""
    while (remaining := math.ceil(deadline - time.monotonic())) > 0:
        logger.warning(
            "v%s waits for approval by someone other than %s (%s s left)",
            decision.challenger.version,
            requested_by,
            remaining,
        )
        form = ApprovalInput.with_initial_data(description=note + description)
        try:
            given: Any = pause_flow_run(
                wait_for_input=form, timeout=remaining, poll_interval=gate.approval_poll_seconds
            )
        except FlowPauseTimeout:
            break
        except ValidationError as error:
            note = f"**Refused:** the answer was not valid ({error.error_count()} errors).\n\n"
            logger.warning("refused an invalid answer: %s", error)
            continue
        refused = refusal(given.decision, given.approver, given.reason, maker)
        if refused is not None:
            note = f"**Refused:** {refused}.\n\n"
            logger.warning("refused %s's %s: %s", given.approver, given.decision, refused)
            continue
        status: Literal["approved", "rejected"] = (
            "approved" if given.decision == "approve" else "rejected"
        )
        return Approval(
            status=status,
            requested_by=requested_by,
            approver=given.approver.strip(),
            reason=given.reason.strip(),
            decided_at=_now(),
        )
    _back_to_running_after_timeout()
    return Approval(
        status="timed_out",
        requested_by=requested_by,
        reason=f"waited {gate.approval_timeout_seconds} s",
        decided_at=_now(),
    )


def _back_to_running_after_timeout() -> None:
    """Put the current flow run back to Running once its pause has expired.

    Prefect fails a run whose pause expired as soon as it leaves Paused, before the flow could
    record the rejection. Past the deadline the server refuses every resume, so no answer can
    arrive any more; forcing Running lets the flow record the timeout and finish.
    """
    run_id = UUID(flow_run.get_id())
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
        if state is not None and state.is_paused():
            client.set_flow_run_state(run_id, Running(), force=True)


def waiting_promotions(model_name: str, version: str) -> list[FlowRun]:
    """The paused flow runs waiting for approval of `model_name` v`version`."""
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=tags_for(model_name, version)),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
            )
        )


def maker_of(run: FlowRun) -> tuple[str, ...]:
    """Every identity of who started a waiting promotion, as its flow stored them."""
    stored: Any = read_flow_run_input(REQUEST_KEY, flow_run_id=run.id) or {}
    return (*(str(identity) for identity in stored.get("maker", [])), str(run.id), run.name)


def answer(run: FlowRun, given: ApprovalInput) -> None:
    """Resume a waiting promotion with an answer, as the Prefect UI's form does."""
    resume_flow_run(run.id, run_input=given.model_dump(mode="json"))


def settled_state(run_id: UUID, *, timeout: float, interval: float = 0.5) -> FlowRun:
    """The flow run once it has acted on an answer: finished, or paused again (refused).

    Returns the run as it stands at `timeout` if it is still working by then.
    """
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            state = run.state
            if state is not None and (state.is_final() or state.is_paused()):
                return run
            if time.monotonic() >= deadline:
                return run
            time.sleep(interval)
