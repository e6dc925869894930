"""Challenger scoring off the request path: a bounded queue drained on the event loop.

In shadow the applicant gets the champion's answer at once; the challenger's score only joins
the decision record. A request hands its champion decision here, and the queue drains in short
turns of the event loop between requests, each decision scored with the challenger and recorded
as one paired decision. The request that submitted it has written its answer by then: the first
turn runs once that request's task yields to the loop.

The drain is on the loop rather than on a thread because scoring is pure Python and holds the
GIL: a thread would not run beside the requests, only take turns with them, and each hand-off of
the GIL between two busy threads could keep a request waiting for milliseconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from loanops.decisions.record import Decision
from serving.challenger import ChallengerHolder
from serving.model import LoadedModel, Scored

logger = logging.getLogger(__name__)

# bench/api.py at concurrency 1 with a shadow challenger (logreg, quiet), three 10 s runs each:
# a drain thread gave p99 6.8-7.5 ms at 1,310-1,420 req/s; this loop drain 2.4-2.6 ms at
# 1,860-2,000 req/s. At concurrency 8, up to 8 decisions per call: 2,310-2,490 req/s, against
# 1,900-2,410 one at a time and 1,680-1,960 on the thread.
_TURN_SECONDS: Final = 0.0005
"""How long one drain turn may keep the loop before the requests waiting on it go first; every
turn scores at least one call's worth."""
_PER_CALL: Final = 8
"""Most decisions scored in one call: the challenger's fixed cost per call is shared, and a call
stays short enough for one turn."""


def _by_model(
    items: Sequence[tuple[LoadedModel, Decision]],
) -> Iterator[tuple[LoadedModel, list[Decision]]]:
    """Runs of consecutive items with the same model, in order (the alias may move mid-queue)."""
    for _, run in itertools.groupby(items, key=lambda item: id(item[0])):
        taken = list(run)
        yield taken[0][0], [decision for _, decision in taken]


def reasons_of(scored: Scored) -> list[dict[str, Any]]:
    return [{"code": r.code, "text": r.text, "impact": r.impact} for r in scored.reasons]


def paired(champion: Decision, challenger: LoadedModel, scored: Scored) -> Decision:
    """The champion's decision with the challenger's score beside it."""
    return dataclasses.replace(
        champion,
        challenger_version=challenger.version,
        challenger_threshold=challenger.threshold,
        challenger_probability=scored.probability,
        challenger_decision=scored.decision,
        challenger_reasons=reasons_of(scored),
    )


class ShadowScorer:
    """Scores champion decisions with the challenger on the event loop, then records them.

    `submit` is called on the loop's thread (the scoring routes run there); everything else
    happens in the loop's callbacks. A decision whose challenger is no longer the one attached
    when its turn comes (it failed, or the alias moved) is recorded champion-only.
    """

    def __init__(
        self,
        holder: ChallengerHolder,
        record: Callable[[Decision], None],
        *,
        top_reasons: int,
        max_queued: int = 10_000,
        on_overflow: Callable[[], None] = lambda: None,
    ) -> None:
        self._holder = holder
        self._record = record
        self._top_reasons = top_reasons
        self._max_queued = max_queued
        self._on_overflow = on_overflow
        self._queue: deque[tuple[LoadedModel, Decision]] = deque()
        self._turn_scheduled = False
        self._closed = False
        self.overflowed = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(self, challenger: LoadedModel, champion: Decision) -> None:
        """Queue `champion` for scoring by `challenger`; recorded champion-only when the queue
        is full (counted) or the scorer is closed."""
        if self._closed:
            self._record(champion)
            return
        if len(self._queue) >= self._max_queued:
            self.overflowed += 1
            self._on_overflow()
            self._record(champion)
            return
        self._queue.append((challenger, champion))
        if not self._turn_scheduled:
            self._turn_scheduled = True
            asyncio.get_running_loop().call_soon(self._turn)

    def close(self) -> None:
        """Score and record everything queued, at once; later decisions go champion-only."""
        self._closed = True
        while self._queue:
            self._score_next_call()

    def _turn(self) -> None:
        self._turn_scheduled = False
        ends = time.perf_counter() + _TURN_SECONDS
        while self._queue:
            self._score_next_call()
            if time.perf_counter() >= ends:
                break
        if self._queue:
            self._turn_scheduled = True
            asyncio.get_running_loop().call_soon(self._turn)

    def _score_next_call(self) -> None:
        taken = [self._queue.popleft() for _ in range(min(_PER_CALL, len(self._queue)))]
        for model, decisions in _by_model(taken):
            self._score(model, decisions)

    def _score(self, model: LoadedModel, decisions: Sequence[Decision]) -> None:
        if self._holder.current is not model:
            for decision in decisions:
                self._record_or_log(decision)
            return
        try:
            scored = model.score([d.inputs for d in decisions], top_reasons=self._top_reasons)
        except Exception as error:  # a broken challenger must not lose a decision
            self._holder.scoring_failed(model, error)
            for decision in decisions:
                self._record_or_log(decision)
            return
        for decision, one in zip(decisions, scored, strict=True):
            self._record_or_log(paired(decision, model, one))

    def _record_or_log(self, decision: Decision) -> None:
        # Raising here would end this turn, and delay every decision queued behind this one.
        try:
            self._record(decision)
        except Exception:  # e.g. the log closed under us; nothing to hand it to
            logger.exception("cannot record decision %s", decision.request_id)
