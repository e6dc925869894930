"""Shadow scoring's queue and drain thread: a full queue and a failing log lose no decision.

Each test holds the drain thread inside its first `record` call on an event, so what sits in the
queue, and what overflows it, is fixed before the thread moves on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from loanops.data import synthetic as syn
from loanops.decisions.record import Decision
from loanops.model_ref import ModelRef
from serving.challenger import ChallengerHolder
from serving.model import LoadedModel
from serving.shadow import ShadowScorer
from tests.factories import make_decision, synthetic_applications
from tests.loaded_models import compiled_logreg
from tests.waiting import wait_for

SCHEMA = syn.SCHEMA
APPLICATIONS = synthetic_applications(20)


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    """A compiled logistic regression on synthetic loans, as the challenger."""
    return compiled_logreg(1500, "4", row_variants=True, sample_rows=300)


def holding(model: LoadedModel) -> ChallengerHolder:
    """A holder with `model` attached; these tests never ask the registry."""

    def no_registry() -> Any:
        raise AssertionError("the shadow scorer asked the registry")

    holder = ChallengerHolder(
        no_registry, ModelRef("loan-default", alias="challenger"), SCHEMA, poll_seconds=60
    )
    holder.current = model
    return holder


def decision(i: int, **inputs_changed: Any) -> Decision:
    """Champion decision number `i`, on a real synthetic application."""
    inputs = {**APPLICATIONS[i % len(APPLICATIONS)], **inputs_changed}
    return make_decision(i, model_version="3", inputs=inputs, reasons=[])


class Log:
    """A `record` that holds its first caller until `release`, and raises for chosen requests."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.records: list[Decision] = []
        self.refused: list[str] = []
        self.holding = threading.Event()
        self._release = threading.Event()
        self._refuse = refuse
        self._lock = threading.Lock()
        self._first = True

    def record(self, decision: Decision) -> None:
        with self._lock:
            first, self._first = self._first, False
        if first:
            self.holding.set()
            assert self._release.wait(timeout=30), "the test never released the log"
        if decision.request_id in self._refuse:
            self.refused.append(decision.request_id)
            raise RuntimeError(f"the log refuses {decision.request_id}")
        with self._lock:
            self.records.append(decision)

    def release(self) -> None:
        self._release.set()

    def by_id(self) -> dict[str, Decision]:
        ids = [d.request_id for d in self.records]
        assert len(ids) == len(set(ids)), f"recorded twice: {ids}"
        return {d.request_id: d for d in self.records}


@pytest.fixture
def start_scorer() -> Iterator[Callable[..., ShadowScorer]]:
    """Builds shadow scorers, and closes any a test left open."""
    started: list[ShadowScorer] = []

    def start(holder: ChallengerHolder, log: Log, **kwargs: Any) -> ShadowScorer:
        scorer = ShadowScorer(holder, log.record, top_reasons=4, **kwargs)
        started.append(scorer)
        return scorer

    yield start
    for scorer in started:
        scorer.close(timeout=5)


def hold_the_thread(scorer: ShadowScorer, model: LoadedModel, log: Log) -> Decision:
    """Submit one decision and wait until the drain thread is inside `record` with it."""
    first = decision(0)
    scorer.submit(model, first)
    assert log.holding.wait(timeout=30), "the drain thread never recorded"
    return first


def is_paired(recorded: Decision, model: LoadedModel) -> bool:
    return (
        recorded.challenger_version == model.version and recorded.challenger_probability is not None
    )


def is_champion_only(recorded: Decision) -> bool:
    return recorded.challenger_version is None and recorded.challenger_probability is None


def test_a_full_queue_records_the_overflow_champion_only_and_close_drains_the_rest(
    model: LoadedModel, start_scorer: Callable[..., ShadowScorer]
) -> None:
    log = Log()
    overflows: list[None] = []
    scorer = start_scorer(
        holding(model), log, max_queued=2, on_overflow=lambda: overflows.append(None)
    )
    hold_the_thread(scorer, model, log)
    queued = [decision(1), decision(2)]
    overflowed = [decision(3), decision(4), decision(5)]
    for one in queued + overflowed:
        scorer.submit(model, one)
    # The overflow was recorded on the submitting thread, at once; the queue waits.
    assert [d.request_id for d in log.records] == [d.request_id for d in overflowed]

    log.release()
    scorer.close()

    recorded = log.by_id()
    assert set(recorded) == {decision(i).request_id for i in range(6)}
    for i in range(3):
        assert is_paired(recorded[decision(i).request_id], model)
    for one in overflowed:
        assert is_champion_only(recorded[one.request_id])
        assert recorded[one.request_id] == one
    assert scorer.overflowed == 3
    assert len(overflows) == 3


def test_a_record_that_raises_loses_that_decision_only(
    model: LoadedModel, start_scorer: Callable[..., ShadowScorer]
) -> None:
    refused = decision(1)
    log = Log(refuse=frozenset({refused.request_id}))
    scorer = start_scorer(holding(model), log)
    hold_the_thread(scorer, model, log)
    for i in (1, 2, 3):  # one batch: the refused decision and the two after it
        scorer.submit(model, decision(i))
    log.release()
    scorer.close()

    recorded = log.by_id()
    assert log.refused == [refused.request_id]
    assert set(recorded) == {decision(i).request_id for i in (0, 2, 3)}
    assert all(is_paired(d, model) for d in recorded.values())


def test_the_thread_survives_a_challenger_that_raises_and_then_a_record_that_raises(
    model: LoadedModel, start_scorer: Callable[..., ShadowScorer]
) -> None:
    # An application without `dti` makes the challenger raise (KeyError) on its whole batch.
    without_dti = {k: v for k, v in APPLICATIONS[1].items() if k != "dti"}
    unscorable = make_decision(1, model_version="3", inputs=without_dti, reasons=[])
    log = Log(refuse=frozenset({unscorable.request_id}))
    holder = holding(model)
    scorer = start_scorer(holder, log)
    hold_the_thread(scorer, model, log)
    scorer.submit(model, unscorable)
    scorer.submit(model, decision(2))
    log.release()
    # Once that batch is done the thread takes what comes next: scored, if it still runs.
    wait_for(
        lambda: holder.state == "failed" and len(log.records) == 2,
        timeout=30,
        what="the failed batch to be recorded",
    )
    scorer.submit(model, decision(3))
    scorer.close()

    recorded = log.by_id()
    assert log.refused == [unscorable.request_id]
    assert set(recorded) == {decision(i).request_id for i in (0, 2, 3)}
    assert is_champion_only(recorded[decision(2).request_id])
    assert is_paired(recorded[decision(3).request_id], model)
    assert holder.state == "failed"
    assert holder.last_error is not None and holder.last_error.stage == "score"
