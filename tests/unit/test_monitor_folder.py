"""Report folders of monitor and performance runs: one per run, even within one second."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Self

import pytest
from mlflow.entities.model_registry import ModelVersion

import flows.monitor
from flows.monitor import monitoring_folder
from loanops.settings import Settings


class _FrozenClock(datetime):
    """A `datetime` whose `now` never ticks, so every call falls in the same second."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> Self:
        return cls(2026, 6, 1, 12, 30, 45, tzinfo=UTC)


def test_runs_in_the_same_second_get_folders_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flows.monitor, "datetime", _FrozenClock)
    settings = Settings(home=tmp_path)
    version = ModelVersion(name="loan-default", version="3", creation_timestamp=0)

    folders = [monitoring_folder(settings, version) for _ in range(3)]

    assert len(set(folders)) == 3
    assert all(folder.is_dir() and not any(folder.iterdir()) for folder in folders)
    assert {folder.parent for folder in folders} == {
        settings.storage_path / "monitoring" / "loan-default" / "v3"
    }
    stamp = "20260601T123045Z"
    assert [f.name for f in folders] == [stamp, f"{stamp}-2", f"{stamp}-3"]
