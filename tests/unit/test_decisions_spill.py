"""Spill files: decisions saved to disk read back exactly as they were."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import loanops.outcomes  # noqa: F401  (its table is part of Base.metadata and of the migrations)
from loanops.decisions.spill import load_spill
from tests.factories import make_decision


def test_the_spill_round_trip_keeps_every_field(tmp_path: Path) -> None:
    from loanops.decisions.spill import write_spill

    decisions = [
        make_decision(1, source="batch", job_id="job-1", reasons=[]),
        make_decision(2, decided_at=datetime(2026, 1, 1, 8, tzinfo=timezone(timedelta(hours=3)))),
    ]
    path = write_spill(tmp_path, decisions)

    loaded = load_spill(path)

    assert loaded == decisions
    assert all(d.decided_at.utcoffset() == timedelta(0) for d in loaded)
