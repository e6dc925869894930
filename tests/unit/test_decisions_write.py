"""Idempotent writes on SQLite: a decision is stored once, however often it is sent."""

from __future__ import annotations

import random
import threading

from sqlalchemy import Engine

import loanops.outcomes  # noqa: F401  (its table is part of Base.metadata and of the migrations)
from loanops.decisions.read import count_decisions
from loanops.decisions.write import write_decisions
from tests.factories import make_decisions


def test_n_decisions_make_n_rows_and_rewriting_them_adds_none(engine: Engine) -> None:
    batch = make_decisions(1_234)

    assert write_decisions(engine, batch) == 1_234
    assert count_decisions(engine) == 1_234

    assert write_decisions(engine, batch) == 0  # a redelivered chunk
    assert write_decisions(engine, random.Random(1).sample(batch, 500)) == 0
    # Half old, half new: only the new ones count.
    assert write_decisions(engine, make_decisions(400, start=1_034)) == 200
    assert write_decisions(engine, []) == 0
    assert count_decisions(engine) == 1_434


def test_concurrent_overlapping_writes_store_each_decision_once(engine: Engine) -> None:
    batch = make_decisions(2_000)
    results: list[int] = []

    def write(seed: int) -> None:
        shuffled = random.Random(seed).sample(batch, len(batch))
        results.append(write_decisions(engine, shuffled))

    threads = [threading.Thread(target=write, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [0, 0, 2_000]
    assert count_decisions(engine) == 2_000
