"""A declared dataset whose rows come from a SQL query, on a real PostgreSQL database of the
test's own (dropped after it); the URL comes from the settings, never from the file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy

from loanops.data import load_dataset
from loanops.data.declaration import DeclarationError
from loanops.settings import get_settings

pytestmark = pytest.mark.integration

DECLARATION = """\
name: tape
source:
  query: select amount, term, defaulted from loans where amount > 0 order by id
target:
  name: defaulted
  positive: 1
  negative: 0
features:
  - name: amount
    kind: float
    description: Amount borrowed.
    risk: increasing
    reason: Amount is high
  - name: term
    kind: category
    description: Term in months.
    categories: ["36", "60"]
    reason: Term is long
"""

LOANS = pd.DataFrame(
    {
        "id": [1, 2, 3, 4],
        "amount": [1000, 2500, -1, 1800],
        "term": ["36", "60", "36", "60"],
        "defaulted": [1, 0, 0, 0],
    }
)


@pytest.fixture
def declaration(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, str]]:
    engine = sqlalchemy.create_engine(database_url)
    try:
        LOANS.to_sql("loans", engine, index=False)
    finally:
        engine.dispose()
    monkeypatch.setenv("LOANOPS_SOURCE_DATABASE_URL", database_url)
    get_settings.cache_clear()
    path = tmp_path / "tape.yaml"
    path.write_text(DECLARATION)
    yield path, database_url
    get_settings.cache_clear()


def test_a_query_source_reads_its_rows_from_the_configured_database(
    declaration: tuple[Path, str],
) -> None:
    path, url = declaration

    loaded = load_dataset(str(path))

    assert loaded.frame["amount"].tolist() == [1000.0, 2500.0, 1800.0]
    assert loaded.frame["amount"].dtype == "float64"
    assert loaded.frame["term"].tolist() == ["36", "60", "60"]
    assert loaded.schema.labels(loaded.frame).tolist() == [1, 0, 0]
    assert loaded.source.startswith("sql: select amount")
    assert url not in path.read_text()


def test_a_failing_query_is_refused_at_its_line_with_the_databases_reason(
    declaration: tuple[Path, str],
) -> None:
    path, _ = declaration
    path.write_text(DECLARATION.replace("from loans", "from no_such_table"))

    with pytest.raises(DeclarationError) as raised:
        load_dataset(str(path))

    assert raised.value.line == 3 and raised.value.field == "source.query"
    assert raised.value.rule.startswith("the query failed: ")
    assert "no_such_table" in raised.value.rule
