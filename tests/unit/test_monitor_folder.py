"""Report folders of monitor and performance runs: one per run, even within one second."""

from __future__ import annotations

from pathlib import Path

from mlflow.entities.model_registry import ModelVersion

from flows.monitor import monitoring_folder
from loanops.settings import Settings


def test_runs_in_the_same_second_get_folders_of_their_own(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    version = ModelVersion(name="loan-default", version="3", creation_timestamp=0)

    folders = [monitoring_folder(settings, version) for _ in range(3)]

    assert len(set(folders)) == 3
    assert all(folder.is_dir() and not any(folder.iterdir()) for folder in folders)
    assert {folder.parent for folder in folders} == {
        settings.storage_path / "monitoring" / "loan-default" / "v3"
    }
    first = folders[0].name
    assert [f.name for f in folders[1:]] == [f"{first}-2", f"{first}-3"] or len(
        {f.name[:16] for f in folders}
    ) > 1  # the clock may tick between calls
