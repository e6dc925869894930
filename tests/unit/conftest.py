"""Fixtures of the decision-log tests: a migrated SQLite database in `tmp_path` and a writer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from loanops.decisions.database import create_engine_for, migrate
from serving.decision_log.batching import BatchingWriter


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    # The parent folder does not exist yet: create_engine_for makes it.
    return f"sqlite:///{tmp_path / 'state' / 'decisions.db'}"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    migrate(db_url)
    engine = create_engine_for(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def decision_log(engine: Engine, tmp_path: Path) -> Iterator[BatchingWriter]:
    log = BatchingWriter(engine, batch_size=100, flush_seconds=0.05, spill_dir=tmp_path / "spill")
    log.start()
    yield log
    log.close(timeout=5)
