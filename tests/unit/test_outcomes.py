"""Outcomes on SQLite: the migration, validation, all-or-nothing recording, files and the join.

Every test runs against a real SQLite file in `tmp_path`, migrated to head, holding decisions
written the way the serving tier writes them.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import ValidationError
from sqlalchemy import Engine

from loanops.decisions.database import alembic_config, create_engine_for, migrate
from loanops.decisions.table import Base
from loanops.decisions.write import write_decisions
from loanops.outcome_files import OutcomeFileError, load_outcomes_file
from loanops.outcomes import (
    Outcome,
    OutcomeRecord,
    OutcomeReport,
    read_labelled,
    record_outcomes,
)
from tests.factories import (
    OBSERVED,
    OUTCOMES_DECIDED_FROM,
    outcome_decision,
    request_id_of,
)


def outcome(i: int, defaulted: bool = False, **fields: Any) -> Outcome:
    return Outcome(request_id=request_id_of(i), defaulted=defaulted, **fields)


def stored(engine: Engine) -> dict[str, tuple[Any, ...]]:
    """Every stored outcome: request id -> (defaulted, observed_at, recorded_at, source)."""
    table = OutcomeRecord.__table__
    with engine.connect() as connection:
        rows = connection.execute(sa.select(table)).all()
    return {row.request_id: (row.defaulted, row.observed_at, row.recorded_at, row.source)
            for row in rows}  # fmt: skip


@pytest.fixture
def engine(engine: Engine) -> Engine:
    """The unit tier's migrated decision log (tests/unit/conftest.py), holding 20 decisions."""
    write_decisions(engine, [outcome_decision(i) for i in range(20)])
    return engine


# --- the migration ---------------------------------------------------------------------------


def test_the_migration_creates_exactly_the_declared_tables_and_downgrades(db_url: str) -> None:
    migrate(db_url)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head == "0005"

    engine = create_engine_for(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            assert context.get_current_revision() == "0005"
            # Base.metadata holds both tables, as importing loanops.outcomes registers its own.
            assert set(Base.metadata.tables) == {"decisions", "outcomes", "decision_segments"}
            assert compare_metadata(context, Base.metadata) == []
        (foreign_key,) = sa.inspect(engine).get_foreign_keys("outcomes")
        assert foreign_key["referred_table"] == "decisions"
        assert foreign_key["constrained_columns"] == ["request_id"]

        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0001")
        assert set(sa.inspect(engine).get_table_names()) == {"alembic_version", "decisions"}
    finally:
        engine.dispose()
    migrate(db_url)  # and back up again
    inspector = sa.inspect(create_engine_for(db_url))
    assert "outcomes" in inspector.get_table_names()


# --- the outcome -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "where", "kind"),
    [
        ({"request_id": "", "defaulted": True}, "request_id", "string_too_short"),
        ({"request_id": "req 1", "defaulted": True}, "request_id", "string_pattern_mismatch"),
        ({"request_id": "x" * 201, "defaulted": True}, "request_id", "string_too_long"),
        ({"request_id": "r", "defaulted": 1}, "defaulted", "bool_type"),
        ({"request_id": "r", "defaulted": "true"}, "defaulted", "bool_type"),
        ({"request_id": "r"}, "defaulted", "missing"),
        ({"request_id": "r", "defaulted": True, "loan_id": "L1"}, "loan_id", "extra_forbidden"),
        (
            {"request_id": "r", "defaulted": True, "observed_at": datetime(2026, 1, 1)},
            "observed_at",
            "timezone_aware",
        ),
        (
            {
                "request_id": "r",
                "defaulted": True,
                "observed_at": datetime.now(UTC) + timedelta(days=1),
            },
            "observed_at",
            "value_error",
        ),
    ],
)
def test_an_outcome_is_validated_strictly(fields: dict[str, Any], where: str, kind: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Outcome(**fields)
    (error,) = caught.value.errors()
    assert error["loc"] == (where,)
    assert error["type"] == kind


def test_an_outcome_keeps_its_time_zone_aware_observation_time() -> None:
    eastern = timezone(timedelta(hours=-5))
    item = Outcome(
        request_id="r-1", defaulted=False, observed_at=datetime(2026, 1, 1, tzinfo=eastern)
    )
    assert item.observed_at == datetime(2026, 1, 1, 5, tzinfo=UTC)


# --- recording -------------------------------------------------------------------------------


def test_outcomes_of_known_decisions_are_recorded(engine: Engine) -> None:
    before = datetime.now(UTC)
    report = record_outcomes(
        engine, [outcome(1, True, observed_at=OBSERVED), outcome(2)], source="file"
    )

    assert report == OutcomeReport(received=2, recorded=2)
    assert report.summary == "recorded 2 of 2 outcomes"
    rows = stored(engine)
    assert set(rows) == {request_id_of(1), request_id_of(2)}
    defaulted, observed_at, recorded_at, source = rows[request_id_of(1)]
    assert defaulted is True
    assert observed_at == OBSERVED  # read back as aware UTC
    assert before <= recorded_at <= datetime.now(UTC)
    assert source == "file"
    assert rows[request_id_of(2)][:2] == (False, None)


def test_unknown_ids_refuse_the_whole_set_and_are_named(engine: Engine) -> None:
    report = record_outcomes(engine, [outcome(1), Outcome(request_id="nope-2", defaulted=True),
                                      Outcome(request_id="nope-1", defaulted=False)])  # fmt: skip

    assert report.refused
    assert report.recorded == 0
    assert report.unknown == ("nope-1", "nope-2")
    assert "2 with no such decision: nope-1, nope-2" in report.summary
    assert stored(engine) == {}, "the known id of a refused set is not written either"


def test_unknown_ids_can_be_skipped_and_are_still_reported(engine: Engine) -> None:
    report = record_outcomes(
        engine, [outcome(1), Outcome(request_id="nope", defaulted=True)], skip_unknown=True
    )

    assert not report.refused
    assert report.recorded == 1
    assert report.unknown == ("nope",)
    assert set(stored(engine)) == {request_id_of(1)}


def test_a_repeated_outcome_is_a_duplicate_reported_not_rewritten(engine: Engine) -> None:
    record_outcomes(engine, [outcome(1, True, observed_at=OBSERVED), outcome(2)], source="file")
    first = stored(engine)

    later = OBSERVED + timedelta(days=30)
    report = record_outcomes(
        engine, [outcome(1, True, observed_at=later), outcome(2), outcome(3)], source="api"
    )

    assert not report.refused
    assert report.recorded == 1
    assert report.duplicates == (request_id_of(1), request_id_of(2))
    rows = stored(engine)
    assert {key: rows[key] for key in first} == first, "stored outcomes are left as they were"
    assert len(rows) == 3


def test_an_id_repeated_within_a_set_with_one_value_is_written_once(engine: Engine) -> None:
    report = record_outcomes(engine, [outcome(1, True), outcome(1, True), outcome(2)])

    assert report == OutcomeReport(received=3, recorded=2, duplicates=(request_id_of(1),))
    assert len(stored(engine)) == 2


def test_a_conflicting_value_refuses_the_whole_set(engine: Engine) -> None:
    record_outcomes(engine, [outcome(1, True)])

    report = record_outcomes(engine, [outcome(1, False), outcome(2), outcome(3)])

    assert report.refused
    assert report.conflicts == (request_id_of(1),)
    assert report.recorded == 0
    assert set(stored(engine)) == {request_id_of(1)}
    assert stored(engine)[request_id_of(1)][0] is True, "the recorded outcome is not overwritten"


def test_both_values_for_one_id_within_a_set_are_a_conflict(engine: Engine) -> None:
    report = record_outcomes(engine, [outcome(1, True), outcome(2), outcome(1, False)])

    assert report.refused
    assert report.conflicts == (request_id_of(1),)
    assert report.duplicates == ()
    assert stored(engine) == {}


def test_conflicts_refuse_even_when_unknown_ids_are_skipped(engine: Engine) -> None:
    record_outcomes(engine, [outcome(1, True)])

    report = record_outcomes(
        engine, [outcome(1, False), Outcome(request_id="nope", defaulted=True), outcome(2)],
        skip_unknown=True,
    )  # fmt: skip

    assert report.refused
    assert (report.conflicts, report.unknown) == ((request_id_of(1),), ("nope",))
    assert set(stored(engine)) == {request_id_of(1)}


def test_an_empty_set_records_nothing(engine: Engine) -> None:
    assert record_outcomes(engine, []) == OutcomeReport(received=0, recorded=0)


def test_an_unknown_source_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="source"):
        record_outcomes(engine, [outcome(1)], source="email")  # type: ignore[arg-type]


def test_sets_larger_than_one_lookup_are_checked_in_full(db_url: str) -> None:
    migrate(db_url)
    engine = create_engine_for(db_url)
    try:
        write_decisions(engine, [outcome_decision(i) for i in range(12_000)])
        items = [outcome(i, i % 7 == 0) for i in range(12_000)]
        items.append(Outcome(request_id="nope", defaulted=True))

        refused = record_outcomes(engine, items)
        assert refused.unknown == ("nope",)
        assert refused.refused

        report = record_outcomes(engine, items[:-1])
        assert report.recorded == 12_000
        again = record_outcomes(engine, items[:-1])
        assert (again.recorded, len(again.duplicates)) == (0, 12_000)
    finally:
        engine.dispose()


def test_concurrent_writers_of_the_same_ids_record_each_once(db_url: str) -> None:
    migrate(db_url)
    engines = [create_engine_for(db_url) for _ in range(4)]
    try:
        write_decisions(engines[0], [outcome_decision(i) for i in range(500)])
        items = [outcome(i, i % 5 == 0) for i in range(500)]
        reports: list[OutcomeReport] = []
        errors: list[BaseException] = []

        def write(engine: Engine) -> None:
            try:
                reports.append(record_outcomes(engine, items))
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=write, args=(engine,)) for engine in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        assert errors == []
        assert sorted(report.recorded for report in reports) == [0, 0, 0, 500]
        assert all(len(r.duplicates) == 500 for r in reports if r.recorded == 0)
        assert len(stored(engines[0])) == 500
    finally:
        for engine in engines:
            engine.dispose()


# --- reading ---------------------------------------------------------------------------------


def test_read_labelled_joins_outcomes_to_their_decisions_in_a_window(engine: Engine) -> None:
    write_decisions(engine, [outcome_decision(i, model_version="4") for i in range(20, 25)])
    record_outcomes(
        engine, [outcome(i, i % 2 == 0, observed_at=OBSERVED) for i in (3, 5, 6, 21, 22)]
    )

    frame = read_labelled(
        engine,
        OUTCOMES_DECIDED_FROM + timedelta(hours=4),
        OUTCOMES_DECIDED_FROM + timedelta(hours=22),
    )

    assert list(frame["request_id"]) == [request_id_of(5), request_id_of(6), request_id_of(21)]
    assert list(frame["defaulted"]) == [False, True, False]
    assert frame["defaulted"].dtype == bool
    assert str(frame["decided_at"].dtype) == "datetime64[ns, UTC]"
    assert str(frame["observed_at"].dtype) == "datetime64[ns, UTC]"
    assert (frame["observed_at"] == pd.Timestamp(OBSERVED)).all()
    assert set(frame["outcome_source"]) == {"api"}
    assert list(frame["loan_amnt"]) == [1_005, 1_006, 1_021]
    assert frame["probability"].dtype == "float64"
    columns = list(frame.columns)
    assert columns.index("outcome_source") < columns.index("loan_amnt")

    version_4 = read_labelled(engine, model_version="4")
    assert list(version_4["request_id"]) == [request_id_of(21), request_id_of(22)]
    assert list(read_labelled(engine, model_name="other").columns)[:2] == [
        "request_id",
        "decided_at",
    ]
    assert read_labelled(engine, model_name="other").empty


def test_an_input_named_like_an_outcome_column_is_read_under_a_prefix(engine: Engine) -> None:
    write_decisions(engine, [outcome_decision(100, inputs={"defaulted": "no", "loan_amnt": 5})])
    record_outcomes(engine, [outcome(100, True)])

    frame = read_labelled(engine, OUTCOMES_DECIDED_FROM + timedelta(hours=100))

    assert frame.loc[0, "defaulted"]
    assert frame.loc[0, "input_defaulted"] == "no"


def test_read_labelled_refuses_naive_bounds(engine: Engine) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        read_labelled(engine, datetime(2026, 1, 1))


# --- files -----------------------------------------------------------------------------------


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_csv_file_accepts_the_usual_spellings_of_a_flag(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "outcomes.csv",
        "loan_id,request_id,defaulted,observed_at\n"
        "L-1,req-000001,1,2026-06-01T00:00:00Z\n"
        "L-2,req-000002, 0 ,2026-06-01\n"
        "L-3,req-000003,TRUE,\n"
        "L-4,req-000004,false,2026-06-01T01:00:00+01:00\n",
    )

    outcomes = load_outcomes_file(path)

    assert [(o.request_id, o.defaulted) for o in outcomes] == [
        (request_id_of(1), True),
        (request_id_of(2), False),
        (request_id_of(3), True),
        (request_id_of(4), False),
    ]
    assert [o.observed_at for o in outcomes] == [OBSERVED, OBSERVED, None, OBSERVED]


def test_a_byte_order_mark_before_the_header_is_not_part_of_a_column_name(
    tmp_path: Path,
) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfrequest_id,defaulted\r\nreq-000001,1\r\n")

    assert load_outcomes_file(path) == [Outcome(request_id=request_id_of(1), defaulted=True)]


def test_a_bad_csv_lists_every_bad_row_by_number(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "bad.csv",
        "request_id,defaulted,observed_at\n"
        "req-000001,1,\n"  # row 1: fine
        "req-000002,yes,\n"  # row 2: not a flag
        ",0,\n"  # row 3: no id
        "req-000004,2,2026-06-01T00:00:00\n"  # row 4: not a flag, and a naive time
        "req-000005,0,next week\n"  # row 5: not a time
        "req 6,0,\n"  # row 6: space in the id
        "req-000007,1,2999-01-01T00:00:00Z\n"  # row 7: in the future
        "req-000008,,\n",  # row 8: no flag
    )

    with pytest.raises(OutcomeFileError) as caught:
        load_outcomes_file(path)

    problems = {(p.row, p.column) for p in caught.value.problems}
    assert problems == {
        (2, "defaulted"),
        (3, "request_id"),
        (4, "defaulted"),
        (4, "observed_at"),
        (5, "observed_at"),
        (6, "request_id"),
        (7, "observed_at"),
        (8, "defaulted"),
    }
    message = str(caught.value)
    assert message.startswith("bad.csv: 7 bad rows: row 2, defaulted: 'yes' is not one of 0, 1")
    assert "row 4, observed_at: 2026-06-01T00:00:00 has no time zone" in message
    assert "row 7, observed_at: observed_at lies in the future" in message


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("no-id.csv", "loan_id,defaulted\nL-1,1\n", "request_id: no such column"),
        ("no-flag.csv", "request_id,observed_at\nreq-000001,\n", "defaulted: no such column"),
        ("header-only.csv", "request_id,defaulted\n", "no data rows"),
        ("empty.csv", "", "cannot be read as CSV"),
        ("ragged.csv", "request_id,defaulted\nreq-1,1\nreq-2,0,extra,more\n", "cannot be read"),
        ("outcomes.xlsx", "request_id,defaulted\n", "unknown format '.xlsx'"),
        ("broken.parquet", "this is not parquet", "cannot be read as PARQUET"),
    ],
)
def test_a_malformed_file_is_refused_with_one_clear_line(
    tmp_path: Path, name: str, content: str, words: str
) -> None:
    path = write_csv(tmp_path / name, content)

    with pytest.raises(OutcomeFileError) as caught:
        load_outcomes_file(path)

    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_outcomes_file(tmp_path / "nope.csv")


def test_a_parquet_file_with_typed_columns(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.parquet"
    pd.DataFrame(
        {
            "request_id": [request_id_of(1), request_id_of(2), request_id_of(3)],
            "defaulted": [True, False, True],
            "observed_at": pd.to_datetime(["2026-06-01", "2026-06-01", None], utc=True),
        }
    ).to_parquet(path)

    outcomes = load_outcomes_file(path)

    assert [(o.defaulted, o.observed_at) for o in outcomes] == [
        (True, OBSERVED),
        (False, OBSERVED),
        (True, None),
    ]


def test_parquet_integers_dates_and_naive_timestamps(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    pd.DataFrame(
        {"request_id": [request_id_of(1)], "defaulted": [1], "observed_at": [date(2026, 6, 1)]}
    ).to_parquet(good)
    assert load_outcomes_file(good) == [Outcome(request_id=request_id_of(1), defaulted=True,
                                                observed_at=OBSERVED)]  # fmt: skip

    bad = tmp_path / "bad.parquet"
    pd.DataFrame(
        {
            "request_id": [request_id_of(1), request_id_of(2)],
            "defaulted": [0.5, 1.0],
            "observed_at": pd.to_datetime(["2026-06-01", None]),
        }
    ).to_parquet(bad)
    with pytest.raises(OutcomeFileError) as caught:
        load_outcomes_file(bad)
    assert {(p.row, p.column) for p in caught.value.problems} == {
        (1, "defaulted"),
        (1, "observed_at"),
    }

    numbers = tmp_path / "numbers.parquet"
    pd.DataFrame({"request_id": [1, 2], "defaulted": [0, 1]}).to_parquet(numbers)
    with pytest.raises(OutcomeFileError, match="row 1, request_id: 1 is not text"):
        load_outcomes_file(numbers)


def test_a_batch_row_may_be_named_by_job_id_and_row(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "batch.csv",
        "loan_id,job_id,row,defaulted\nL-9,job1,0,1\nL-8,job1,41,0\nL-7,job1,-1,0\nL-6,,2,0\n",
    )

    with pytest.raises(OutcomeFileError) as caught:
        load_outcomes_file(path)
    assert {(p.row, p.column) for p in caught.value.problems} == {(3, "row"), (4, "job_id")}

    path.write_text("loan_id,job_id,row,defaulted\nL-9,job1,0,1\nL-8,job1,41,0\n")
    assert [o.request_id for o in load_outcomes_file(path)] == ["job1-0", "job1-41"]


def test_a_file_with_unknown_ids_or_duplicates_is_reported_and_half_of_it_never_written(
    engine: Engine, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "outcomes.csv",
        "request_id,defaulted\nreq-000001,1\nreq-000002,0\nreq-999999,1\nreq-000001,1\n",
    )
    outcomes = load_outcomes_file(path)

    report = record_outcomes(engine, outcomes, source="file")

    assert report.refused
    assert (report.unknown, report.duplicates) == (("req-999999",), (request_id_of(1),))
    assert stored(engine) == {}

    report = record_outcomes(engine, outcomes, source="file", skip_unknown=True)
    assert (report.recorded, report.refused) == (2, False)
    assert {key: value[3] for key, value in stored(engine).items()} == {
        request_id_of(1): "file",
        request_id_of(2): "file",
    }
