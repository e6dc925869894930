"""Paired decision records on a real PostgreSQL: the same round trip as on SQLite."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from tests.paired_decisions import check_old_segments_read_as_champion, check_paired_round_trip

pytestmark = pytest.mark.integration


def test_paired_decisions_round_trip_on_postgres(engine: Engine) -> None:
    check_paired_round_trip(engine)


def test_segments_without_paired_columns_read_as_the_champion_on_postgres(engine: Engine) -> None:
    check_old_segments_read_as_champion(engine)
