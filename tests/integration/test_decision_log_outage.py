"""PostgreSQL unreachable for 20 s under load: the backlog shows, readiness says so, none is lost.

A real `loanops serve` writes its decision log to PostgreSQL through a loopback proxy that the
test pauses (the shared server itself is never stopped) while a bounded load of predictions
runs. While paused, `/metrics` must show the writer's backlog rising, `/readyz` must answer 503
naming it, and past the memory bound the backlog must move to overflow files on disk. Once the
proxy resumes, every answered decision must be in the database exactly once and the API ready.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from loanops.decisions.database import create_engine_for, migrate
from loanops.decisions.table import DECISIONS_TABLE
from tests.factories import synthetic_applications
from tests.integration.api_fixtures import api_settings
from tests.integration.serving_fixtures import (
    ServingModel,
    serving_model,  # noqa: F401  (a fixture)
)
from tests.integration.tcp_proxy import tcp_proxy
from tests.integration.test_api_server import KEY, loanops_serve
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

OUTAGE_S = 20.0
READY_BACKLOG = 200
MEMORY_BACKLOG = 600
MAX_REQUESTS = 20_000
"""Bounds the load: at most this many predictions, whatever the timing."""


class Load:
    """Predictions posted one after another from a thread, about `rate` a second, until `stop`."""

    def __init__(self, url: str, rate: float = 80.0) -> None:
        self._url = url
        self._pause = 1.0 / rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.request_ids: list[str] = []
        self.refused = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        rows = synthetic_applications(200)
        with httpx.Client(base_url=self._url, headers=KEY, timeout=30) as client:
            for i in range(MAX_REQUESTS):
                if self._stop.is_set():
                    return
                response = client.post("/v1/predict", json=rows[i % len(rows)])
                if response.status_code == 200:
                    self.request_ids.append(response.json()["request_id"])
                else:
                    self.refused += 1
                time.sleep(self._pause)


def backlog(client: httpx.Client) -> dict[str, float]:
    """The `loanops_decision_log_backlog` gauge from /metrics, by where the decisions wait."""
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "loanops_decision_log_backlog":
            return {sample.labels["where"]: sample.value for sample in family.samples}
    raise AssertionError("no loanops_decision_log_backlog in /metrics")


def test_an_unreachable_database_shows_as_backlog_then_every_decision_lands_once(
    serving_model: ServingModel,  # noqa: F811
    database_url: str,
    tmp_path: Path,
) -> None:
    migrate(database_url)
    target = make_url(database_url)
    with tcp_proxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
        proxied = target.set(host="127.0.0.1", port=proxy.port)
        settings = api_settings(
            serving_model.settings(),
            tmp_path,
            decision_log={
                "database_url": proxied.render_as_string(hide_password=False),
                "ready_backlog": READY_BACKLOG,
                "memory_backlog": MEMORY_BACKLOG,
            },
        )
        with loanops_serve(settings, tmp_path) as server:
            client = server.client
            load = Load(server.url)
            load.start()
            try:
                wait_for(lambda: len(load.request_ids) >= 100, timeout=60, what="the load")
                assert client.get("/readyz").status_code == 200

                proxy.pause()
                paused_until = time.monotonic() + OUTAGE_S
                wait_for(
                    lambda: client.get("/readyz").status_code == 503,
                    timeout=OUTAGE_S / 2,
                    what="/readyz to say the log is behind",
                )
                detail = client.get("/readyz").json()["detail"]
                assert "decision log is behind" in detail
                peak = {"memory": 0.0, "disk": 0.0}
                while time.monotonic() < paused_until:
                    for where, value in backlog(client).items():
                        peak[where] = max(peak[where], value)
                    time.sleep(0.5)
                assert peak["memory"] + peak["disk"] > READY_BACKLOG
                # Past the memory bound the backlog goes to disk instead of growing memory.
                assert peak["memory"] <= MEMORY_BACKLOG + 200
                assert peak["disk"] > 0
                assert client.get("/readyz").status_code == 503

                proxy.resume()
                time.sleep(2)
            finally:
                proxy.resume()
                load.stop()
            wait_for(
                lambda: sum(backlog(client).values()) == 0,
                timeout=120,
                what="the backlog to drain",
            )
            assert client.get("/readyz").status_code == 200
            answered = list(load.request_ids)

    assert len(answered) > 100 + READY_BACKLOG
    engine = create_engine_for(database_url)
    try:
        with engine.connect() as connection:
            stored = connection.execute(select(DECISIONS_TABLE.c.request_id)).scalars().all()
            total = connection.execute(select(func.count()).select_from(DECISIONS_TABLE))
            assert total.scalar_one() == len(answered)
    finally:
        engine.dispose()
    assert sorted(stored) == sorted(answered)
    assert not list((tmp_path / "storage" / "unsaved-decisions").glob("*.jsonl"))
