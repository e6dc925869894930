"""Unit-tier fixtures: an environment without LOANOPS_ variables, and a decision log on SQLite.

The decision-log fixtures give a migrated SQLite database in `tmp_path` and a writer on it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from loanops.decisions.database import create_engine_for, migrate
from loanops.settings import get_settings
from serving.decision_log.batching import BatchingWriter


@pytest.fixture
def no_loanops_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No LOANOPS_ variable from the caller's shell, no `.env` file, and a fresh settings cache."""
    for name in list(os.environ):
        if name.upper().startswith("LOANOPS_"):
            monkeypatch.delenv(name)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


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
