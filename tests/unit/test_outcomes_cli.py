"""`loanops outcomes load`: a file of delayed labels into the outcomes table, or one clear error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.app import app
from loanops.decisions.database import create_engine_for, migrate
from loanops.decisions.write import write_decisions
from tests.factories import make_decision

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LOANOPS_HOME", str(tmp_path))
    url = f"sqlite:///{tmp_path / 'decisions.db'}"
    migrate(url)
    engine = create_engine_for(url)
    write_decisions(
        engine,
        [
            make_decision(i, start=T0, step=timedelta(hours=1), request_id=f"req-{i}")
            for i in range(3)
        ],
    )
    engine.dispose()
    return tmp_path


def test_a_file_of_known_ids_is_recorded(home: Path) -> None:
    path = home / "outcomes.csv"
    pd.DataFrame({"request_id": ["req-0", "req-1"], "defaulted": [1, 0]}).to_csv(path, index=False)

    result = CliRunner().invoke(app, ["outcomes", "load", str(path)])

    assert result.exit_code == 0, result.output
    assert "recorded 2 of 2 outcomes" in result.output


def test_an_unknown_id_refuses_the_file_with_one_line(home: Path) -> None:
    path = home / "outcomes.csv"
    pd.DataFrame({"request_id": ["req-0", "req-404"], "defaulted": [1, 0]}).to_csv(
        path, index=False
    )

    result = CliRunner().invoke(app, ["outcomes", "load", str(path)])

    assert result.exit_code == 1
    assert "refused all 2 outcomes" in result.output
    assert "req-404" in result.output
    assert "Traceback" not in result.output

    skipped = CliRunner().invoke(app, ["outcomes", "load", str(path), "--skip-unknown"])
    assert skipped.exit_code == 0, skipped.output
    assert "recorded 1 of 2 outcomes" in skipped.output


def test_a_malformed_row_is_named_by_number(home: Path) -> None:
    path = home / "outcomes.csv"
    path.write_text("request_id,defaulted\nreq-0,1\nreq-1,maybe\n")

    result = CliRunner().invoke(app, ["outcomes", "load", str(path)])

    assert result.exit_code == 1
    assert "row 2, defaulted: 'maybe' is not one of 0, 1, true, false" in result.output
    assert "Traceback" not in result.output
