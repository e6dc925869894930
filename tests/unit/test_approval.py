"""Maker-checker's pure half and its record: who may answer, what they read, what is stored.

The record tests write to MLflow on SQLite in `tmp_path`, the store `loanops` embeds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.entities import Metric
from pydantic import ValidationError

from flows.approval import ApprovalInput
from loanops import promotion_log, registry
from loanops.approval import Answer, Approval, LiveComparison, refusal, request_description
from loanops.promotion import decide
from loanops.settings import Settings
from tests.factories import gate_policy, gate_scores

MAKER = ("alice", "0f5c9a1e-run-id", "brave-otter")


@pytest.mark.parametrize(
    ("answer", "approver", "reason", "refused"),
    [
        ("approve", "bob", "", None),
        ("approve", "alice", "looks fine", "alice started this promotion and cannot approve it"),
        ("approve", "  Alice ", "", "Alice started this promotion and cannot approve it"),
        ("approve", "0f5c9a1e-run-id", "", "started this promotion and cannot approve it"),
        ("approve", "brave-otter", "", "started this promotion and cannot approve it"),
        ("reject", "alice", "withdrawn: wrong data", None),
        ("reject", "bob", "", "a rejection must give a reason"),
        ("reject", "bob", "   ", "a rejection must give a reason"),
        ("approve", " ", "", "the approver must be named"),
    ],
)
def test_who_may_answer(answer: Answer, approver: str, reason: str, refused: str | None) -> None:
    found = refusal(answer, approver, reason, MAKER)
    if refused is None:
        assert found is None
    else:
        assert found is not None and refused in found


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("awaiting", "awaiting_approval"),
        ("approved", "promoted"),
        ("rejected", "rejected"),
        ("timed_out", "rejected"),
    ],
)
def test_only_an_approval_promotes(status: str, outcome: str) -> None:
    approval = Approval(status=status, requested_by="alice", approver="bob")  # type: ignore[arg-type]
    assert approval.outcome == outcome


def test_the_request_shows_the_gate_and_the_live_comparison_numbers() -> None:
    challenger = gate_scores(roc_auc=0.7312, ece=0.0123, version="3", rows=1971)
    decision = decide(challenger, gate_scores(roc_auc=0.7201, version="2"), gate_policy())

    text = request_description(
        "loan-default",
        decision,
        requested_by="alice",
        timeout_seconds=600,
        live=LiveComparison(run_id="abc123", metrics={"live_auc_change": -0.0042}),
    )

    assert "loan-default v3" in text and "Requested by **alice**" in text
    assert "| challenger v3 | 0.7312 | 0.0123 |" in text
    assert "| champion v2 | 0.7201 |" in text
    assert "1,971" in text and "600 s" in text
    assert all(f"- {reason}" in text for reason in decision.reasons)
    assert "Live comparison (MLflow run abc123)" in text
    assert "| live_auc_change | -0.0042 |" in text


def test_the_request_says_when_there_is_no_live_comparison() -> None:
    decision = decide(gate_scores(version="1"), None, gate_policy())
    text = request_description(
        "loan-default", decision, requested_by="alice", timeout_seconds=60, live=None
    )
    assert "No live comparison has been recorded" in text
    assert "champion v" not in text


def test_the_input_model_is_the_form_prefect_shows() -> None:
    schema = ApprovalInput.model_json_schema()
    assert schema["required"] == ["decision", "approver"]
    assert schema["properties"]["decision"]["enum"] == ["approve", "reject"]
    answer = ApprovalInput(decision="reject", approver="bob", reason="too soon")
    assert answer.model_dump(mode="json") == {
        "decision": "reject",
        "approver": "bob",
        "reason": "too soon",
    }
    described = ApprovalInput.with_initial_data(description="numbers")
    assert described._description == "numbers"


@pytest.mark.parametrize(
    "fields",
    [
        {"decision": "maybe", "approver": "bob"},
        {"decision": "approve", "approver": ""},
        {"decision": "approve", "approver": "   "},
        {"decision": "approve"},
    ],
)
def test_the_input_model_refuses_what_is_no_answer(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        ApprovalInput(**fields)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_the_wait_and_the_answer_are_appended_with_the_approver(settings: Settings) -> None:
    client = registry.connect(settings)
    decision = decide(gate_scores(version="1"), None, gate_policy())
    waiting = Approval(status="awaiting", requested_by="alice")
    answered = Approval(
        status="approved",
        requested_by="alice",
        approver="bob",
        reason="card reviewed",
        decided_at="2026-12-07T14:00:00+00:00",
    )

    for key, approval in (("k-wait", waiting), ("k-answer", answered), ("k-answer", answered)):
        promotion_log.record_decision(
            client,
            settings,
            decision,
            decided_by="alice via prefect flow run r1",
            gate_data_sha256="0" * 64,
            decision_key=key,
            approval=approval,
        )

    records = promotion_log.history(client, settings)
    assert [(r.outcome, r.approval) for r in records] == [
        ("awaiting_approval", "awaiting"),
        ("promoted", "approved"),
    ]
    done = records[1]
    assert (done.requested_by, done.approver, done.approval_reason) == (
        "alice",
        "bob",
        "card reviewed",
    )
    assert done.approval_decided_at == "2026-12-07T14:00:00+00:00"
    assert done.reasons[-1] == "approved by bob: card reviewed"
    assert list(done.reasons[:-1]) == list(decision.reasons)


def test_without_maker_checker_the_record_is_as_before(settings: Settings) -> None:
    client = registry.connect(settings)
    decision = decide(gate_scores(version="1"), None, gate_policy())

    stored = promotion_log.record_decision(
        client,
        settings,
        decision,
        decided_by="alice",
        gate_data_sha256="0" * 64,
        decision_key="k",
    )

    assert stored.outcome == "promoted" and stored.reasons == list(decision.reasons)
    assert (stored.approval, stored.approver, stored.approval_decided_at) == (None, None, None)
    tags = client.get_run(stored.run_id).data.tags
    assert "loanops.approval" not in tags


def test_a_timeout_is_recorded_as_a_rejection(settings: Settings) -> None:
    client = registry.connect(settings)
    decision = decide(gate_scores(version="4"), None, gate_policy())
    timed_out = Approval(
        status="timed_out", requested_by="alice", reason="waited 60 s", decided_at="t"
    )

    stored = promotion_log.record_decision(
        client,
        settings,
        decision,
        decided_by="alice",
        gate_data_sha256="0" * 64,
        decision_key="k",
        approval=timed_out,
    )

    assert (stored.outcome, stored.approval, stored.approver) == ("rejected", "timed_out", None)
    assert "no one approved in time" in stored.reasons[-1]


def test_the_newest_live_comparison_of_the_version_is_found(settings: Settings) -> None:
    client = registry.connect(settings)
    experiment = registry.ensure_experiment(client, settings.gate.experiment_name, settings)
    assert promotion_log.live_comparison(client, settings, "3") is None

    def comparison(version: str, auc_change: float, started: int, complete: bool = True) -> str:
        run = client.create_run(
            experiment,
            start_time=1_800_000_000_000 + started,
            tags={
                promotion_log.RECORD_KIND_TAG: "live_comparison",
                "loanops.model_name": settings.model_name,
                "loanops.challenger_version": version,
                **({"loanops.record_complete": "true"} if complete else {}),
            },
        )
        client.log_batch(run.info.run_id, metrics=[Metric("auc_change", auc_change, 0, 0)])
        return str(run.info.run_id)

    comparison("3", -0.01, started=1)
    newest = comparison("3", 0.002, started=2)
    comparison("3", 0.5, started=3, complete=False)
    comparison("2", 0.9, started=4)

    found = promotion_log.live_comparison(client, settings, "3")

    assert found is not None and found.run_id == newest
    assert dict(found.metrics) == {"auc_change": 0.002}
    # A live comparison is not a gate decision: the history leaves it out.
    assert promotion_log.history(client, settings) == []
