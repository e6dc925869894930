"""The batch-rows counter reads the job store's database without ever holding up a scrape."""

from __future__ import annotations

import threading
import time

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from serving.metrics import Metrics


def batch_rows(metrics: Metrics) -> float:
    text = generate_latest(metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        if family.name == "loanops_batch_rows_processed":
            return float(family.samples[0].value)
    raise AssertionError("no loanops_batch_rows_processed in the scrape")


def test_registering_the_counter_reads_no_database() -> None:
    reads: list[int] = []

    def rows_processed() -> int:
        reads.append(1)
        return 7

    Metrics().watch_batch_rows(rows_processed)
    assert reads == []


def test_a_scrape_reports_what_the_store_says() -> None:
    figures = iter([120, 300])
    metrics = Metrics()
    metrics.watch_batch_rows(lambda: next(figures))

    assert batch_rows(metrics) == 120
    assert batch_rows(metrics) == 300


def test_a_database_that_hangs_does_not_hold_up_the_scrape() -> None:
    answered = threading.Event()
    release = threading.Event()
    figures = iter([50])

    def rows_processed() -> int:
        if answered.is_set():
            release.wait(timeout=30)  # a database that stopped answering
            return 80
        answered.set()
        return next(figures)

    metrics = Metrics()
    metrics.watch_batch_rows(rows_processed)
    assert batch_rows(metrics) == 50
    try:
        started = time.monotonic()
        assert batch_rows(metrics) == 50  # the last figure read
        assert batch_rows(metrics) == 50  # and no second read piles up behind the first
        assert time.monotonic() - started < 5
    finally:
        release.set()
