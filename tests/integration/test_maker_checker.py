"""Maker-checker end to end: `loanops promote` waits in its own process on a real `prefect server`
while `loanops models approve` / `reject` answer from others; MLflow is a real `mlflow server` on
PostgreSQL.

The module trains v1 and promotes it with maker-checker off, then trains v2 (both in the test's
own process); each test gates v2 against champion v1. The approval test moves the aliases, so it
comes last in the file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.input.actions import read_flow_run_input
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.approval import ApprovalInput, answer, settled_state, waiting_promotions
from flows.train import TrainResult, train_flow
from loanops import promotion_log, registry
from loanops.settings import Settings
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

LOANOPS = Path(sys.executable).parent / "loanops"


@dataclass(frozen=True)
class Stack:
    env: dict[str, str]
    settings: Settings
    api_url: str
    logs: Path


def loanops(
    env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOANOPS), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def train(env: dict[str, str], api_url: str, *, seed: int) -> TrainResult:
    """`loanops train --rows 4000 --trials 2` in this process, which has its modules loaded.

    The CLI's own output is tested in test_cli.py; here a process of its own would only add
    its start (about 7 s, importing MLflow, Prefect and scikit-learn) to each version.
    """
    # Prefect read its settings when it was imported: PREFECT_API_URL alone would not reach it.
    with pytest.MonkeyPatch.context() as patch, temporary_settings({PREFECT_API_URL: api_url}):
        for name, value in env.items():
            if name.startswith("LOANOPS_"):
                patch.setenv(name, value)
        return train_flow(rows=4000, seed=seed, trials=2)


@pytest.fixture(scope="module")
def stack(
    prefect_server: tuple[str, dict[str, str]],
    mlflow_server_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Stack:
    """v1 in production (promoted with maker-checker off), v2 trained, maker-checker on."""
    api_url, prefect_env = prefect_server
    home = tmp_path_factory.mktemp("maker-checker-home")
    model_name = f"loan-default-mc-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        **prefect_env,
        "LOANOPS_HOME": str(home),
        "LOANOPS_TRACKING_URI": mlflow_server_url,
        "LOANOPS_MODEL_NAME": model_name,
        # The smallest budget that trains a model clearing the gate: the approval is tested,
        # not the search or the card's intervals.
        "LOANOPS_BOOTSTRAP_SAMPLES": "100",
        "LOANOPS_CV_FOLDS": "2",
        "LOANOPS_MODEL_FAMILIES": '["logreg"]',
        # This tests the approval path, not the gate's margins: v2 need only clear the floors.
        "LOANOPS_PROMOTION_AUC_TOLERANCE": "0.1",
        "LOANOPS_PROMOTION_ADVERSE_IMPACT_TOLERANCE": "1.0",
        "LOANOPS_PROMOTION_MAKER_CHECKER": "true",
        "LOANOPS_PROMOTION_APPROVAL_POLL_SECONDS": "1",
        "COLUMNS": "250",
    }
    first = train(env, api_url, seed=7)
    # With maker-checker off, promotion is as it always was: no wait, no approval.
    promoted = loanops({**env, "LOANOPS_PROMOTION_MAKER_CHECKER": "false"}, "promote")
    assert promoted.returncode == 0, promoted.stderr
    assert "promotion: promoted" in promoted.stdout
    second = train(env, api_url, seed=8)
    assert (first.version, second.version) == ("1", "2")
    settings = Settings(tracking_uri=mlflow_server_url, model_name=model_name, home=home)
    (record,) = promotion_log.history(registry.connect(settings), settings)
    assert (record.outcome, record.approval, record.approver) == ("promoted", None, None)
    return Stack(env=env, settings=settings, api_url=api_url, logs=home)


@dataclass(frozen=True)
class Waiting:
    """A promotion waiting for approval: its flow run, and where its process writes."""

    run: FlowRun
    output: Path

    def printed(self) -> str:
        return self.output.read_text()


def aliases(stack: Stack) -> dict[str, str]:
    client = registry.connect(stack.settings)
    return {
        alias: str(number)
        for alias, number in client.get_registered_model(stack.settings.model_name).aliases.items()
    }


def last_record(stack: Stack) -> promotion_log.DecisionRecord:
    return promotion_log.history(registry.connect(stack.settings), stack.settings)[-1]


@contextmanager
def promotion(stack: Stack, *args: str) -> Iterator[Waiting]:
    """`loanops promote --version 2` in its own process, yielded once it waits for approval.

    The process must have ended, with exit code 0, when the block ends.
    """
    path = stack.logs / f"promote-{uuid.uuid4().hex[:6]}.out"
    output = path.open("w")
    process = subprocess.Popen(
        [str(LOANOPS), "promote", "--version", "2", *args],
        env=stack.env,
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with temporary_settings({PREFECT_API_URL: stack.api_url}):
            wait_for(
                lambda: bool(waiting_promotions(stack.settings.model_name, "2")),
                timeout=240,
                what="the promotion of v2 to wait for approval",
                interval=1,
                given_up=lambda: None if process.poll() is None else "promote exited",
                details=path.read_text,
            )
            (run,) = waiting_promotions(stack.settings.model_name, "2")
            yield Waiting(run, path)
        assert process.wait(timeout=240) == 0, path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output.close()


def test_self_approval_is_refused_and_a_rejection_leaves_the_aliases(stack: Stack) -> None:
    before = aliases(stack)
    assert before == {"production": "1"}
    nothing = loanops(stack.env, "models", "approve", "2", "--approver", "bob")
    assert nothing.returncode == 1
    assert nothing.stderr.strip().startswith("error: no promotion of")
    assert len(nothing.stderr.strip().splitlines()) == 1

    with promotion(stack) as waiting_run:
        run = waiting_run.run
        assert aliases(stack) == before
        waiting = last_record(stack)
        assert (waiting.outcome, waiting.approval) == ("awaiting_approval", "awaiting")
        assert waiting.requested_by == promotion_log.operator()
        version = registry.connect(stack.settings).get_model_version(stack.settings.model_name, "2")
        assert version.tags["gate.outcome"] == "awaiting_approval"
        # What the Prefect UI shows: the form's schema and, above it, the gate's numbers.
        with temporary_settings({PREFECT_API_URL: stack.api_url}):
            schema: Any = read_flow_run_input("paused-1-schema", flow_run_id=run.id)
            shown: Any = read_flow_run_input("paused-1-description", flow_run_id=run.id)
        assert set(schema["properties"]) == {"decision", "approver", "reason"}
        assert "v2** passed the promotion gate" in shown and "| challenger v2 |" in shown
        assert "| champion v1 |" in shown and "No live comparison" in shown

        # From the shell, the default approver is the OS user: the one who started it.
        mine = loanops(stack.env, "models", "approve", "2")
        assert mine.returncode == 1
        assert "cannot approve it; a second person must" in mine.stderr
        assert len(mine.stderr.strip().splitlines()) == 1

        # Past the CLI, as from the Prefect UI's form: the flow refuses it and waits again.
        with temporary_settings({PREFECT_API_URL: stack.api_url}):
            answer(run, ApprovalInput(decision="approve", approver=promotion_log.operator()))
            again = settled_state(run.id, timeout=60)
            refused_note: Any = read_flow_run_input("paused-2-description", flow_run_id=run.id)
        assert again.state is not None and again.state.is_paused(), again.state
        assert refused_note.startswith("**Refused:**") and "cannot approve it" in refused_note
        assert aliases(stack) == before

        rejected = loanops(
            stack.env,
            "models",
            "reject",
            "2",
            "--approver",
            "carol",
            "--reason",
            "the live comparison is not in yet",
        )
        assert rejected.returncode == 0, rejected.stderr
        assert "rejected (rejected by carol" in rejected.stdout

    assert "promotion: rejected" in waiting_run.printed()
    assert aliases(stack) == before
    record = last_record(stack)
    assert (record.outcome, record.approval, record.approver) == ("rejected", "rejected", "carol")
    assert record.approval_reason == "the live comparison is not in yet"
    assert record.approval_decided_at
    assert record.champion_version == "1"


def test_a_timeout_rejects_and_leaves_the_aliases(stack: Stack) -> None:
    before = aliases(stack)

    result = loanops(
        {**stack.env, "LOANOPS_PROMOTION_APPROVAL_TIMEOUT_SECONDS": "1"},
        "promote",
        "--version",
        "2",
        "--requested-by",
        "alice",
    )

    assert result.returncode == 0, result.stderr
    assert "promotion: rejected" in result.stdout
    assert aliases(stack) == before
    record = last_record(stack)
    assert (record.outcome, record.approval, record.approver) == ("rejected", "timed_out", None)
    assert record.requested_by == "alice"
    assert "no one approved in time" in record.reasons[-1]


def test_an_approval_moves_the_aliases_and_records_the_approver(stack: Stack) -> None:
    with promotion(stack, "--requested-by", "alice") as waiting_run:
        refused = loanops(stack.env, "models", "approve", "2", "--approver", "ALICE")
        assert refused.returncode == 1
        assert "cannot approve it" in refused.stderr
        assert aliases(stack) == {"production": "1"}

        approved = loanops(
            stack.env,
            "models",
            "approve",
            "2",
            "--approver",
            "bob",
            "--reason",
            "card and gate reviewed",
        )
        assert approved.returncode == 0, approved.stderr
        assert "promoted (approved by bob" in approved.stdout

    assert "promotion: promoted" in waiting_run.printed()
    assert aliases(stack) == {"production": "2", "previous": "1"}
    record = last_record(stack)
    assert (record.outcome, record.approval, record.approver) == ("promoted", "approved", "bob")
    assert record.requested_by == "alice"
    assert record.reasons[-1] == "approved by bob: card and gate reviewed"

    history = loanops(stack.env, "models", "history")
    assert history.returncode == 0, history.stderr
    assert "approved by bob" in history.stdout and "card and gate reviewed" in history.stdout
    assert "awaiting (asked by alice)" in history.stdout
