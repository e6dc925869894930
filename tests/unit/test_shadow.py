"""Shadow scoring's queue, drained on the event loop: answers first, turns that let requests in,
and neither a full queue, a failing challenger nor a failing log loses a decision.

Each test submits from a coroutine, as the scoring routes do, so nothing is scored before it
yields to the loop: what sits in the queue, and what overflows it, is fixed until then.
"""

from __future__ import annotations

import asyncio
import time
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

pytestmark = pytest.mark.asyncio

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
    """A `record` that keeps what it is given, raises for chosen requests, and can take time."""

    def __init__(self, refuse: frozenset[str] = frozenset(), seconds_each: float = 0.0) -> None:
        self.records: list[Decision] = []
        self.refused: list[str] = []
        self._refuse = refuse
        self._seconds_each = seconds_each

    def record(self, decision: Decision) -> None:
        if self._seconds_each:
            time.sleep(self._seconds_each)
        if decision.request_id in self._refuse:
            self.refused.append(decision.request_id)
            raise RuntimeError(f"the log refuses {decision.request_id}")
        self.records.append(decision)

    def by_id(self) -> dict[str, Decision]:
        ids = [d.request_id for d in self.records]
        assert len(ids) == len(set(ids)), f"recorded twice: {ids}"
        return {d.request_id: d for d in self.records}


def scorer_for(holder: ChallengerHolder, log: Log, **kwargs: Any) -> ShadowScorer:
    return ShadowScorer(holder, log.record, top_reasons=4, **kwargs)


async def drained(scorer: ShadowScorer, turns: int = 1000) -> None:
    """Let the loop run until the scorer's queue is empty."""
    for _ in range(turns):
        if not scorer.queued:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{scorer.queued} decisions still queued after {turns} turns")


def is_paired(recorded: Decision, model: LoadedModel) -> bool:
    return (
        recorded.challenger_version == model.version and recorded.challenger_probability is not None
    )


def is_champion_only(recorded: Decision) -> bool:
    return recorded.challenger_version is None and recorded.challenger_probability is None


async def test_submitting_scores_nothing_until_the_request_yields_then_every_decision_is_paired(
    model: LoadedModel,
) -> None:
    log = Log()
    scorer = scorer_for(holding(model), log)
    for i in range(3):
        scorer.submit(model, decision(i))
    # The submitting coroutine (a request writing its answer) has not yielded yet.
    assert log.records == [] and scorer.queued == 3

    await drained(scorer)

    recorded = log.by_id()
    assert list(recorded) == [decision(i).request_id for i in range(3)]
    for i in range(3):
        one = recorded[decision(i).request_id]
        assert is_paired(one, model)
        (own,) = model.score([decision(i).inputs], top_reasons=4)
        assert one.challenger_probability == own.probability
        assert one.probability == decision(i).probability  # the champion's, unchanged


async def test_a_turn_lets_waiting_callbacks_in_before_the_queue_is_drained(
    model: LoadedModel,
) -> None:
    # Each record takes 2 ms, longer than a turn may keep the loop: the first call's decisions
    # end the first turn, and a callback that was waiting (a request) runs before the second.
    log = Log(seconds_each=0.002)
    scorer = scorer_for(holding(model), log)
    for i in range(40):
        scorer.submit(model, decision(i))
    seen_by_a_request: list[int] = []
    asyncio.get_running_loop().call_soon(lambda: seen_by_a_request.append(len(log.records)))

    await drained(scorer)

    assert len(seen_by_a_request) == 1 and 0 < seen_by_a_request[0] < 40
    assert len(log.by_id()) == 40


async def test_a_full_queue_records_the_overflow_champion_only_and_close_drains_the_rest(
    model: LoadedModel,
) -> None:
    log = Log()
    overflows: list[None] = []
    scorer = scorer_for(
        holding(model), log, max_queued=2, on_overflow=lambda: overflows.append(None)
    )
    queued = [decision(1), decision(2)]
    overflowed = [decision(3), decision(4), decision(5)]
    for one in queued + overflowed:
        scorer.submit(model, one)
    # The overflow was recorded by the submitting request, at once; the queue waits.
    assert [d.request_id for d in log.records] == [d.request_id for d in overflowed]

    scorer.close()  # before any turn ran: close scores the queue itself
    after_close = decision(6)
    scorer.submit(model, after_close)
    await asyncio.sleep(0)

    recorded = log.by_id()
    assert set(recorded) == {decision(i).request_id for i in range(1, 7)}
    for one in queued:
        assert is_paired(recorded[one.request_id], model)
    for one in [*overflowed, after_close]:
        assert is_champion_only(recorded[one.request_id])
        assert recorded[one.request_id] == one
    assert scorer.overflowed == 3
    assert len(overflows) == 3


async def test_a_record_that_raises_loses_that_decision_only(model: LoadedModel) -> None:
    refused = decision(1)
    log = Log(refuse=frozenset({refused.request_id}))
    scorer = scorer_for(holding(model), log)
    for i in (0, 1, 2, 3):
        scorer.submit(model, decision(i))

    await drained(scorer)

    recorded = log.by_id()
    assert log.refused == [refused.request_id]
    assert set(recorded) == {decision(i).request_id for i in (0, 2, 3)}
    assert all(is_paired(d, model) for d in recorded.values())


async def test_a_challenger_that_raises_is_detached_and_the_decisions_behind_it_go_champion_only(
    model: LoadedModel,
) -> None:
    # An application without `dti` makes the challenger raise (KeyError); the log then refuses
    # that decision too, and the drain must still go on to the next.
    without_dti = {k: v for k, v in APPLICATIONS[1].items() if k != "dti"}
    unscorable = make_decision(1, model_version="3", inputs=without_dti, reasons=[])
    log = Log(refuse=frozenset({unscorable.request_id}))
    holder = holding(model)
    scorer = scorer_for(holder, log)
    scorer.submit(model, decision(0))
    await drained(scorer)
    # Scored in one call: the challenger raises for the call, and both go champion-only.
    scorer.submit(model, unscorable)
    scorer.submit(model, decision(2))
    await drained(scorer)
    scorer.submit(model, decision(3))  # the route would no longer pass it, but one was in flight
    await drained(scorer)

    recorded = log.by_id()
    assert log.refused == [unscorable.request_id]
    assert set(recorded) == {decision(i).request_id for i in (0, 2, 3)}
    assert is_paired(recorded[decision(0).request_id], model)
    assert is_champion_only(recorded[decision(2).request_id])
    assert is_champion_only(recorded[decision(3).request_id])
    assert holder.state == "failed"
    assert holder.last_error is not None and holder.last_error.stage == "score"
