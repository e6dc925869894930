"""Challenger scoring off the request path: a bounded queue and one thread that drains it.

In shadow the applicant gets the champion's answer at once; the challenger's score only joins
the decision record. A request hands its champion decision here, and one thread scores the
queued applications in batches with the challenger and records each as one paired decision.
`DecisionLogProcess.record` takes a lock and never blocks, so the thread calls it directly.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

from loanops.decisions.record import Decision
from serving.challenger import ChallengerHolder
from serving.model import LoadedModel, Scored

logger = logging.getLogger(__name__)

_BATCH: Final = 64
_STOP: Final = object()


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
    """Scores champion decisions with the challenger in a background thread, then records them."""

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
        self._on_overflow = on_overflow
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queued)
        self._thread = threading.Thread(target=self._drain, name="challenger-shadow", daemon=True)
        self.overflowed = 0
        self._thread.start()

    def submit(self, challenger: LoadedModel, champion: Decision) -> None:
        """Queue `champion` for scoring by `challenger`; recorded champion-only when full."""
        try:
            self._queue.put_nowait((challenger, champion))
        except queue.Full:
            self.overflowed += 1
            self._on_overflow()
            self._record(champion)

    def close(self, timeout: float = 30) -> None:
        """Score and record everything queued, then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _drain(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            items = [first]
            stop = False
            while len(items) < _BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                items.append(item)
            # One batch per challenger version: the alias may have moved between items.
            by_model: dict[int, tuple[LoadedModel, list[Decision]]] = {}
            for model, decision in items:
                by_model.setdefault(id(model), (model, []))[1].append(decision)
            for model, decisions in by_model.values():
                self._score(model, decisions)
            if stop:
                return

    def _score(self, model: LoadedModel, decisions: Sequence[Decision]) -> None:
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
        # Raising here would end the thread, and with it every decision queued behind this one.
        try:
            self._record(decision)
        except Exception:  # e.g. the log closed under us; nothing to hand it to
            logger.exception("cannot record decision %s", decision.request_id)
