"""The decision log: every scoring decision the serving tier makes, kept in a SQL database.

The API records each decision through a `DecisionLog`, a background writer that batches them so
that the request path only appends to a queue. Batch workers write whole chunks at once with
`write_decisions`, which is idempotent by `request_id`, so a redelivered chunk adds nothing.
Monitoring reads a time window back as a DataFrame with `read_decisions`.

The table lives in SQLite (the embedded default, in WAL mode) or PostgreSQL, and its schema is
managed by the Alembic environment shipped in `loanops/migrations`; `migrate` brings a database
to the latest revision and is safe to call from several processes at start-up.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson
from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Double,
    Engine,
    Index,
    Insert,
    MetaData,
    Select,
    String,
    Table,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    import pandas as pd
    from alembic.config import Config

__all__ = [
    "DECISIONS",
    "META_COLUMNS",
    "READ_BATCH_ROWS",
    "SOURCES",
    "Base",
    "ColumnKind",
    "Decision",
    "DecisionLog",
    "DecisionRecord",
    "InputKind",
    "alembic_config",
    "count_decisions",
    "create_engine_for",
    "input_columns",
    "load_spill",
    "migrate",
    "read_decisions",
    "read_frame",
    "window_filter",
    "write_decisions",
]

logger = logging.getLogger(__name__)

DECISIONS: Final = frozenset({"approve", "decline"})
"""The values `Decision.decision` may take."""
SOURCES: Final = frozenset({"api", "batch"})
"""The values `Decision.source` may take."""

MIGRATIONS_DIR: Final = Path(__file__).with_name("migrations")

# An input key equal to one of those columns is read back under this prefix.
_COLLISION_PREFIX: Final = "input_"

_SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
_POSTGRES_CONNECT_TIMEOUT_S: Final = 10
# Execution option read by the SQLite `begin` hook: DEFERRED, IMMEDIATE or EXCLUSIVE.
_SQLITE_BEGIN: Final = "loanops_sqlite_begin"
# Key of the PostgreSQL advisory lock that serialises concurrent `migrate` calls.
_MIGRATION_LOCK_KEY: Final = 0x6C6F616E6F7073  # "loanops"

_BACKOFF_START_S: Final = 0.1
_BACKOFF_MAX_S: Final = 5.0
# How long `close` waits for the writer beyond its own timeout before it spills regardless.
_CLOSE_GRACE_S: Final = 2.0


# --- the record ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """One scoring decision, as the serving tier made it.

    Attributes:
        request_id: Unique id of the request (one per scored application); the primary key.
        decided_at: When the decision was made; timezone-aware (stored and read back in UTC).
        model_name: Registered model name.
        model_version: Registered model version that scored.
        threshold: Probability at or above which the application is declined.
        inputs: The validated application, JSON-able (numbers, strings, None).
        probability: The model's default probability.
        decision: ``"approve"`` or ``"decline"``.
        reasons: Adverse-action reasons, ``[{"code": ..., "text": ..., "impact": float}]``; may
            be empty.
        source: ``"api"`` or ``"batch"``.
        job_id: The batch job that made the decision, if any.
    """

    request_id: str
    decided_at: datetime
    model_name: str
    model_version: str
    threshold: float
    inputs: Mapping[str, Any]
    probability: float
    decision: str
    reasons: Sequence[Mapping[str, Any]]
    source: str = "api"
    job_id: str | None = None

    def __post_init__(self) -> None:
        if not self.request_id:
            raise ValueError("request_id must be non-empty")
        if self.decided_at.tzinfo is None or self.decided_at.utcoffset() is None:
            raise ValueError("decided_at must be timezone-aware")
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {sorted(DECISIONS)}, not {self.decision!r}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {sorted(SOURCES)}, not {self.source!r}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must lie in [0, 1], not {self.probability!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], not {self.threshold!r}")


# --- the table -------------------------------------------------------------------------------


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp, stored in UTC and always read back as aware UTC.

    PostgreSQL keeps it as ``timestamptz``. SQLite has no time zones, so the value is stored as
    naive UTC text, whose fixed-width format sorts and compares in time order.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware datetime to UTC (naive UTC for SQLite); refuse a naive one."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("decision log timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return the stored timestamp as an aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


_JSON = JSON().with_variant(postgresql.JSONB(), "postgresql")


class Base(DeclarativeBase):
    """Declarative base of the decision log's tables (the Alembic target metadata)."""

    # Named constraints, so later revisions (SQLite batch mode included) can refer to them.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class DecisionRecord(Base):
    """A row of the ``decisions`` table; see `Decision` for the meaning of each column."""

    __tablename__ = "decisions"
    __table_args__ = (
        Index("ix_decisions_decided_at", "decided_at"),
        Index("ix_decisions_model_decided_at", "model_name", "model_version", "decided_at"),
    )

    request_id: Mapped[str] = mapped_column(String, primary_key=True)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)
    model_name: Mapped[str] = mapped_column(String)
    model_version: Mapped[str] = mapped_column(String)
    threshold: Mapped[float] = mapped_column(Double)
    inputs: Mapped[dict[str, Any]] = mapped_column(_JSON)
    probability: Mapped[float] = mapped_column(Double)
    decision: Mapped[str] = mapped_column(String)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(_JSON)
    source: Mapped[str] = mapped_column(String)
    job_id: Mapped[str | None] = mapped_column(String)


_TABLE: Table = Base.metadata.tables[DecisionRecord.__tablename__]
_COLUMNS = _TABLE.c


# --- engine and schema -----------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    """Encode what orjson does not know natively: missing markers and Decimal-like numbers."""
    pandas = sys.modules.get("pandas")  # only loaded if the caller uses it, e.g. for pd.NA
    if pandas is not None and (value is pandas.NA or value is pandas.NaT):
        return None
    if hasattr(value, "__float__"):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _json_dumps(value: Any) -> str:
    # NaN and infinities become null: neither JSON nor PostgreSQL's JSONB can hold them.
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from the sqlite3 module, which skips it before DDL; `_sqlite_on_begin`
    # emits it instead, so migrations are transactional and writers can BEGIN IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        # In WAL mode NORMAL survives a process crash; a power cut may undo the last commits.
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """Switch the database file to WAL mode (a persistent setting), once.

    The switch needs an exclusive lock, and SQLite answers "database is locked" at once,
    without waiting out the busy timeout, when two connections race for it, as the API and
    the workers do on a fresh file; so it is retried here.
    """
    if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        return
    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_on_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get(_SQLITE_BEGIN, "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


def create_engine_for(url: str) -> Engine:
    """Create the SQLAlchemy engine for a decision-log database.

    SQLite runs in WAL mode with a busy timeout, so the API, workers and readers can share one
    file; its parent folder is created here if missing. PostgreSQL connections are pinged before
    use and time out on connect. Either way JSON goes through orjson, and statement parameters
    are kept out of error messages, since inputs may be personal data.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:////var/lib/loanops/decisions.db`` or
            ``postgresql://user@host/db`` (psycopg 3).

    Returns:
        A new engine; the caller owns it and should `dispose()` it when done.
    """
    parsed = make_url(url)
    options: dict[str, Any] = {
        "hide_parameters": True,
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
    }
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
        if in_memory:
            # One shared connection, or every pooled connection would see its own database.
            options |= {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        elif not parsed.query.get("uri"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, **options)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if backend == "postgresql" and "connect_timeout" not in parsed.query:
        options["connect_args"] = {"connect_timeout": _POSTGRES_CONNECT_TIMEOUT_S}
    return create_engine(parsed, pool_pre_ping=True, **options)


def alembic_config(url: str | None = None) -> Config:
    """Build the Alembic configuration of the decision log, without an ``alembic.ini``.

    Useful for Alembic commands beyond `migrate`, e.g. writing a new revision::

        from alembic import command
        command.revision(alembic_config(url), message="add x", autogenerate=True)

    Args:
        url: Database the commands work on when no connection is passed in
            ``config.attributes["connection"]``; defaults to the configured decision log.

    Returns:
        An ``alembic.config.Config`` whose script location is the packaged ``migrations``.
    """
    from alembic.config import Config  # imported here: only start-up and tooling need it

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url is not None:
        # ConfigParser interpolation would read '%' in a password as a reference.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url_or_engine: str | Engine) -> None:
    """Upgrade the decision-log database to the latest revision (``alembic upgrade head``).

    Safe to call from several processes at once (the API and each worker at start-up): on
    PostgreSQL the upgrade runs in one transaction under an advisory lock, on SQLite in one
    ``BEGIN IMMEDIATE`` transaction (with the busy timeout of `create_engine_for`), so
    a second caller waits, then finds the database at head and does nothing.

    Args:
        url_or_engine: Database URL, or an engine (best one from `create_engine_for`).
    """
    from alembic import command  # imported here: only start-up and tooling need it

    owned = isinstance(url_or_engine, str)
    engine = create_engine_for(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        config = alembic_config()
        with engine.connect() as connection:
            connection.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    # Held until commit; a concurrent caller waits here, then sees head.
                    connection.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
    finally:
        if owned:
            engine.dispose()


# --- writing ---------------------------------------------------------------------------------


def _row(decision: Decision) -> dict[str, Any]:
    inputs = decision.inputs
    return {
        "request_id": decision.request_id,
        "decided_at": decision.decided_at,
        "model_name": decision.model_name,
        "model_version": decision.model_version,
        "threshold": float(decision.threshold),
        "inputs": inputs if type(inputs) is dict else dict(inputs),
        "probability": float(decision.probability),
        "decision": decision.decision,
        "reasons": [r if type(r) is dict else dict(r) for r in decision.reasons],
        "source": decision.source,
        "job_id": decision.job_id,
    }


def _insert_ignoring_duplicates(dialect_name: str) -> Insert:
    if dialect_name == "postgresql":
        return postgresql.insert(_TABLE).on_conflict_do_nothing(index_elements=["request_id"])
    if dialect_name == "sqlite":
        return sqlite.insert(_TABLE).on_conflict_do_nothing(index_elements=["request_id"])
    raise ValueError(f"the decision log supports SQLite and PostgreSQL, not {dialect_name}")


@contextlib.contextmanager
def _write_transaction(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        # On SQLite, take the write lock up front: a deferred transaction that has to upgrade
        # its lock gets SQLITE_BUSY at once instead of waiting out the busy timeout.
        # preserve_rowcount: psycopg sums an executemany's row counts, but SQLAlchemy drops the
        # sum for INSERTs unless asked to keep it.
        connection.execution_options(preserve_rowcount=True, **{_SQLITE_BEGIN: "IMMEDIATE"})
        with connection.begin():
            yield connection


def write_decisions(engine: Engine, decisions: Iterable[Decision]) -> int:
    """Insert decisions in one transaction, skipping any whose ``request_id`` is already stored.

    Idempotent: writing the same decisions again (a redelivered batch chunk, or a retry after
    an ambiguous failure) inserts nothing more.

    Args:
        engine: Engine of a migrated decision-log database.
        decisions: The decisions to store.

    Returns:
        How many rows were newly inserted.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: The database refused or could not be reached; nothing
            was written.
    """
    rows = [_row(decision) for decision in decisions]
    if not rows:
        return 0
    # One key order for every writer, so two overlapping batches (a redelivered chunk racing
    # its first delivery) wait for each other on PostgreSQL instead of deadlocking.
    rows.sort(key=itemgetter("request_id"))
    with _write_transaction(engine) as connection:
        statement = _insert_ignoring_duplicates(connection.dialect.name)
        # A list of parameter sets runs as one executemany; skipped conflicts are not counted.
        result = connection.execute(statement, rows)
        return int(result.rowcount)


# --- reading ---------------------------------------------------------------------------------

InputKind = Literal["number", "text"]
"""How `read_decisions` reads one input key: as float64, or as text."""
ColumnKind = Literal["datetime", "float", "bool", "text", "json"]
"""How `read_frame` converts one selected column."""

META_COLUMNS: Final[Mapping[str, ColumnKind]] = {
    "request_id": "text",
    "decided_at": "datetime",
    "model_name": "text",
    "model_version": "text",
    "threshold": "float",
    "probability": "float",
    "decision": "text",
    "reasons": "json",
    "source": "text",
    "job_id": "text",
}
"""Columns of `read_decisions` before the inputs, in their order, with their kinds."""
READ_BATCH_ROWS: Final = 100_000
"""Rows fetched and converted at a time when a window is read."""


def window_filter(
    start: datetime | None,
    end: datetime | None,
    model_name: str | None = None,
    model_version: str | None = None,
) -> list[ColumnElement[bool]]:
    """WHERE conditions on the decisions table for a window and, optionally, a model version.

    Raises:
        ValueError: A bound is a naive datetime.
    """
    for bound in (start, end):
        if bound is not None and (bound.tzinfo is None or bound.utcoffset() is None):
            raise ValueError("window bounds must be timezone-aware datetimes")
    conditions: list[ColumnElement[bool]] = []
    if start is not None:
        conditions.append(_COLUMNS.decided_at >= start)
    if end is not None:
        conditions.append(_COLUMNS.decided_at < end)
    if model_name is not None:
        conditions.append(_COLUMNS.model_name == model_name)
    if model_version is not None:
        conditions.append(_COLUMNS.model_version == model_version)
    return conditions


def input_columns(
    inputs: Mapping[str, InputKind] | None, dialect: str = "postgresql"
) -> list[ColumnElement[Any]]:
    """The columns that select the inputs: each key extracted by the database, or whole objects.

    Extracting in SQL spares a Python dict per row, which at a million decisions costs
    gigabytes. PostgreSQL's ``->>`` gives text; SQLite's ``json_extract`` gives each value in its
    JSON type. Neither casts, so a value of the wrong type reaches the caller as logged instead
    of failing the read (PostgreSQL) or silently becoming 0 (SQLite's CAST).
    """
    if inputs is None:
        return [_COLUMNS.inputs]
    if dialect == "sqlite":
        return [
            func.json_extract(_COLUMNS.inputs, f'$."{key}"')
            if '"' not in key
            else _COLUMNS.inputs[key].as_string()
            for key in inputs
        ]
    return [_COLUMNS.inputs[key].as_string() for key in inputs]


def read_frame(
    engine: Engine,
    statement: Select[Any],
    columns: Mapping[str, ColumnKind],
    inputs: Mapping[str, InputKind] | None,
    *,
    batch_rows: int = READ_BATCH_ROWS,
) -> pd.DataFrame:
    """Run a SELECT of `columns` followed by `input_columns(inputs)` into a DataFrame.

    Rows are fetched and converted `batch_rows` at a time, text as categoricals whose strings
    are shared, so memory stays near the size of the result rather than of its Python rows.

    Args:
        engine: Engine of a migrated decision-log database.
        statement: Selects the columns in `columns`' order, then the input columns.
        columns: Name and kind of each leading column.
        inputs: The input keys and their kinds, or None when the statement selects whole input
            objects, which are then expanded into a column per key, in first-seen order.
        batch_rows: Rows per fetch.

    Returns:
        One column per entry of `columns` (datetimes as ``datetime64[ns, UTC]``, floats as
        float64, text as objects), then the inputs: number keys as float64 where every value is
        a number (as objects otherwise, left for the caller to judge), text keys as objects,
        missing values as NaN or None. An input key named like a leading column is renamed
        ``input_<key>``.
    """

    if batch_rows < 1:
        raise ValueError(f"batch_rows must be positive, got {batch_rows}")
    batches: list[pd.DataFrame] = []
    with engine.connect() as connection:
        result = connection.execution_options(yield_per=batch_rows).execute(statement)
        for rows in result.partitions():
            batches.append(_batch_frame(rows, columns, inputs))
    if not batches:
        batches.append(_batch_frame([], columns, inputs))
    return _concat(batches)


def _batch_frame(
    rows: Sequence[Any],
    columns: Mapping[str, ColumnKind],
    inputs: Mapping[str, InputKind] | None,
) -> pd.DataFrame:
    import pandas as pd

    width = len(columns) + (1 if inputs is None else len(inputs))
    values: list[Sequence[Any]] = list(zip(*rows, strict=True)) or [() for _ in range(width)]
    data = {name: _converted(values[i], kind) for i, (name, kind) in enumerate(columns.items())}
    frame = pd.DataFrame(data, index=pd.RangeIndex(len(rows)))
    if inputs is None:
        if not rows:
            return frame
        keyed = pd.DataFrame.from_records(values[-1], index=frame.index)
    else:
        keyed = pd.DataFrame(
            {
                key: _converted(values[len(columns) + i], "float" if kind == "number" else "text")
                for i, (key, kind) in enumerate(inputs.items())
            },
            index=frame.index,
        )
    if keyed.columns.empty:
        return frame
    keyed.columns = [f"{_COLLISION_PREFIX}{key}" if key in columns else key for key in keyed]
    return pd.concat([frame, keyed], axis=1)


def _converted(values: Sequence[Any], kind: ColumnKind) -> pd.Series:
    import pandas as pd

    if kind == "datetime":
        return pd.Series(pd.to_datetime(pd.Series(values, dtype=object), utc=True))
    if kind == "float":
        raw = pd.Series(values, dtype=object)
        try:
            return pd.to_numeric(raw).astype("float64")
        except (ValueError, TypeError):
            return raw  # a value that is not a number: kept as logged
    if kind == "bool":
        return pd.Series(values, dtype="bool")
    if kind == "text" and len(set(values)) * 2 <= len(values):
        # Categoricals share one string object per distinct value; `_concat` restores objects.
        # Mostly-distinct text (ids) gains nothing from it and costs the factorising.
        return pd.Series(pd.Categorical(values))
    return pd.Series(values, dtype=object)


def _concat(batches: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The batches as one frame; a key missing from a batch is NaN there."""
    import pandas as pd
    from pandas.api.types import union_categoricals

    names = list(dict.fromkeys(name for batch in batches for name in batch.columns))
    texts = [
        name
        for name in names
        if all(
            name in batch and isinstance(batch[name].dtype, pd.CategoricalDtype)
            for batch in batches
        )
    ]
    frame = pd.concat([batch.drop(columns=texts) for batch in batches], ignore_index=True)
    for name in texts:
        merged = pd.Series(union_categoricals([batch[name] for batch in batches])).astype(object)
        frame[name] = merged.where(merged.notna(), None)
    return frame[names]


def read_decisions(
    engine: Engine,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    model_name: str | None = None,
    model_version: str | None = None,
    inputs: Mapping[str, InputKind] | None = None,
    reasons: bool = True,
    batch_rows: int = READ_BATCH_ROWS,
) -> pd.DataFrame:
    """Read the decisions of a time window, one row each, oldest first.

    Args:
        engine: Engine of a migrated decision-log database.
        start: Earliest ``decided_at`` included (timezone-aware); None for no lower bound.
        end: First ``decided_at`` excluded (timezone-aware); None for no upper bound.
        model_name: Keep only this model's decisions.
        model_version: Keep only this model version's decisions.
        inputs: Read only these input keys, extracted by the database, as numbers or text; a
            million decisions then fit in about a gigabyte. None reads every key there is.
        reasons: Include the ``reasons`` column (a list per row, the costliest column after
            the inputs).
        batch_rows: Rows fetched and converted at a time.

    Returns:
        The columns of `META_COLUMNS` (less ``reasons`` if not asked for), then one column per
        input key (as `read_frame` describes). Ordered by ``decided_at``, then ``request_id``.

    Raises:
        ValueError: A bound is a naive datetime.
    """
    columns = {name: kind for name, kind in META_COLUMNS.items() if reasons or name != "reasons"}
    statement = (
        select(*(_COLUMNS[name] for name in columns), *input_columns(inputs, engine.dialect.name))
        .where(*window_filter(start, end, model_name, model_version))
        .order_by(_COLUMNS.decided_at, _COLUMNS.request_id)
    )
    return read_frame(engine, statement, columns, inputs, batch_rows=batch_rows)


def count_decisions(
    engine: Engine,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    model_name: str | None = None,
    model_version: str | None = None,
) -> int:
    """Count the decisions of a time window, with the same filters as `read_decisions`.

    Args:
        engine: Engine of a migrated decision-log database.
        start: Earliest ``decided_at`` included (timezone-aware); None for no lower bound.
        end: First ``decided_at`` excluded (timezone-aware); None for no upper bound.
        model_name: Count only this model's decisions.
        model_version: Count only this model version's decisions.

    Returns:
        The number of decisions.
    """
    statement = select(func.count()).select_from(_TABLE)
    statement = statement.where(*window_filter(start, end, model_name, model_version))
    with engine.connect() as connection:
        return int(connection.execute(statement).scalar_one())


# --- spill files -----------------------------------------------------------------------------


def _spill_line(decision: Decision) -> bytes:
    record = _row(decision)
    record["decided_at"] = decision.decided_at.astimezone(UTC).isoformat()
    return orjson.dumps(
        record, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
    )


def _write_spill(folder: Path, decisions: Sequence[Decision]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"decisions-spill-{stamp}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
    # Owner-only: the inputs may be personal data.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.writelines(_spill_line(decision) for decision in decisions)
        file.flush()
        os.fsync(file.fileno())
    return path


def load_spill(path: Path) -> list[Decision]:
    """Read back the decisions a `DecisionLog` spilled when its database was unreachable.

    Replay them with ``write_decisions(engine, load_spill(path))``; as that skips decisions
    already stored, replaying twice, or a file holding some that did reach the database, is
    harmless.

    Args:
        path: A ``decisions-spill-*.jsonl`` file.

    Returns:
        The decisions, in the order they were recorded.
    """
    decisions = []
    with path.open("rb") as file:
        for line in file:
            if line.strip():
                record = orjson.loads(line)
                record["decided_at"] = datetime.fromisoformat(record["decided_at"])
                decisions.append(Decision(**record))
    return decisions


# --- the background writer -------------------------------------------------------------------


def _holds_nul(value: Any) -> bool:
    """Whether a string in ``value`` (nested in dicts and lists too) holds a NUL character."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(item) for item in value)
    return False


def _describe(error: BaseException) -> str:
    """Name an error without its parameters or detail lines, which may quote personal data."""
    cause = getattr(error, "orig", None) or error
    lines = str(cause).strip().splitlines()
    first = lines[0][:300] if lines else ""
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


class DecisionLog:
    """Background, batched writer: record() never blocks the request path in normal operation.

    `record` appends to an in-memory queue. A daemon thread takes up to ``batch_size``
    decisions at a time, waiting at most ``flush_seconds`` for a batch to fill, and writes
    each with `write_decisions`. When the database fails it keeps the batch, logs a warning and
    retries with backoff (0.1 s doubling to 5 s) until it succeeds or the log is closed; as
    the write is idempotent, a retried batch never duplicates rows. If ``max_pending`` decisions
    are waiting, `record` blocks until there is room rather than dropping any.

    `close` writes what is left; if the database is still failing when its timeout runs out,
    it saves the remaining decisions to a JSONL file in ``spill_dir`` (see `load_spill`) and
    logs an error naming it.

    Typical use::

        log = DecisionLog(engine, spill_dir=settings.storage_path / "decision-spill")
        log.start()
        log.record(decision)  # per request
        log.close()  # at shutdown
    """

    def __init__(
        self,
        engine: Engine,
        *,
        batch_size: int = 500,
        flush_seconds: float = 0.25,
        max_pending: int = 100_000,
        spill_dir: Path | None = None,
    ) -> None:
        """Prepare the log; nothing runs until `start`.

        Args:
            engine: Engine of a migrated decision-log database.
            batch_size: Most decisions written in one transaction.
            flush_seconds: Longest a decision waits for its batch to fill.
            max_pending: Decisions held in memory before `record` blocks.
            spill_dir: Folder for the spill file of `close`; defaults to
                ``<tempdir>/loanops-decision-spill``. Pass a persistent folder in production.

        Raises:
            ValueError: A size or duration is not positive.
        """
        if batch_size < 1 or max_pending < 1:
            raise ValueError("batch_size and max_pending must be at least 1")
        if not flush_seconds > 0:
            raise ValueError("flush_seconds must be positive")
        self._engine = engine
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._max_pending = max_pending
        self._spill_dir = spill_dir or Path(tempfile.gettempdir()) / "loanops-decision-spill"

        self._lock = threading.Lock()
        self._wake_writer = threading.Condition(self._lock)  # items, flush or close
        self._room = threading.Condition(self._lock)  # the queue shrank
        self._progress = threading.Condition(self._lock)  # decisions were settled
        self._queue: deque[Decision] = deque()
        self._in_flight: list[Decision] = []
        self._recorded = 0
        self._settled = 0  # written or spilled
        self._written = 0
        self._failures = 0
        self._last_error: str | None = None
        self._flush_waiters = 0
        self._closing = False
        self._closed = False
        self._close_deadline = math.inf
        self._thread: threading.Thread | None = None

    # --- counters

    @property
    def saturated(self) -> bool:
        """True when `record` would block: the writer is `max_pending` decisions behind."""
        return len(self._queue) >= self._max_pending

    @property
    def pending(self) -> int:
        """Decisions recorded but not yet written (queued or in the batch being written)."""
        with self._lock:
            return self._recorded - self._settled

    @property
    def written(self) -> int:
        """Decisions written so far (including any the database already held)."""
        with self._lock:
            return self._written

    @property
    def failures(self) -> int:
        """Failed write attempts so far."""
        with self._lock:
            return self._failures

    @property
    def last_error(self) -> str | None:
        """The most recent write error, without parameters; None if none happened."""
        with self._lock:
            return self._last_error

    # --- lifecycle

    def start(self) -> None:
        """Start the writer thread (a daemon); calling it again does nothing.

        Raises:
            RuntimeError: The log is closed.
        """
        with self._lock:
            if self._closed or self._closing:
                raise RuntimeError("the decision log is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="decision-log-writer", daemon=True
                )
                self._thread.start()

    def record(self, decision: Decision) -> None:
        """Queue a decision for writing.

        Returns at once unless ``max_pending`` decisions are waiting, in which case it blocks
        until the writer makes room.

        Args:
            decision: The decision to store.

        Raises:
            TypeError: Its inputs or reasons cannot be encoded as JSON.
            ValueError: It holds a NUL character, which PostgreSQL cannot store.
            RuntimeError: The log is closed (or was closed while this call waited for room).
        """
        # Fail here, in the caller, rather than as a batch the writer retries forever.
        row = _row(decision)
        _json_dumps((row["inputs"], row["reasons"]))
        if _holds_nul(row):
            raise ValueError("decisions may not hold NUL characters, which PostgreSQL refuses")
        with self._lock:
            while len(self._queue) >= self._max_pending and not self._closing:
                self._room.wait()
            if self._closing:
                raise RuntimeError("the decision log is closed")
            self._queue.append(decision)
            self._recorded += 1
            if len(self._queue) == 1 or len(self._queue) >= self._batch_size:
                self._wake_writer.notify()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every decision recorded before this call is written.

        Args:
            timeout: Most seconds to wait; None waits as long as it takes.

        Raises:
            TimeoutError: Some are still pending after ``timeout`` (e.g. the database is down).
            RuntimeError: Decisions are pending but the writer was never started.
        """
        with self._lock:
            target = self._recorded
            if self._settled >= target:
                return
            if self._thread is None:
                raise RuntimeError("the decision log was not started")
            self._flush_waiters += 1
            self._wake_writer.notify()
            try:
                done = self._progress.wait_for(lambda: self._settled >= target, timeout)
            finally:
                self._flush_waiters -= 1
            if not done:
                raise TimeoutError(
                    f"{target - self._settled} decisions still pending after {timeout} s; "
                    f"last error: {self._last_error}"
                )

    def close(self, timeout: float = 30) -> None:
        """Write everything pending, then stop the writer; calling it again does nothing.

        If the decisions cannot all be written within ``timeout`` seconds, the rest go to a
        JSONL file in ``spill_dir`` and an ERROR names it, so that none is lost.

        Args:
            timeout: Most seconds to keep retrying the database before spilling.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._close_deadline = time.monotonic() + timeout
            thread = self._thread
            pending = self._recorded - self._settled
            self._wake_writer.notify_all()
            self._room.notify_all()
        if thread is None and pending:
            # Never started: run the writer now, under the same deadline.
            thread = threading.Thread(target=self._run, name="decision-log-writer", daemon=True)
            with self._lock:
                self._thread = thread
            thread.start()
        if thread is not None:
            thread.join(timeout + _CLOSE_GRACE_S)
        with self._lock:
            # The writer has stopped, or is stuck in a database call: either way what is left
            # goes to disk. If that call does succeed after all, the spill file holds decisions
            # the database has too, and replaying it (idempotent) adds nothing.
            remaining = [*self._in_flight, *self._queue]
            self._queue.clear()
            self._in_flight = []
            self._settled = self._recorded
            self._closed = True
            self._progress.notify_all()
        if remaining:
            self._spill(remaining)

    def _spill(self, decisions: list[Decision]) -> None:
        try:
            path = _write_spill(self._spill_dir, decisions)
        except OSError as error:
            logger.error(
                "Decision log: could not write %d decisions to the database (%s) or to a spill "
                "file in %s (%s); they are lost",
                len(decisions),
                self._last_error,
                self._spill_dir,
                error,
            )
            return
        logger.error(
            "Decision log: could not write %d decisions to the database (%s); saved them to %s. "
            "Replay with write_decisions(engine, load_spill(path)).",
            len(decisions),
            self._last_error,
            path,
        )

    # --- the writer thread

    def _next_batch(self) -> list[Decision] | None:
        """Wait for a batch to fill (or time out); None once closing and drained."""
        with self._lock:
            while not self._queue and not self._closing:
                self._wake_writer.wait()
            if not self._queue:
                return None
            gather_until = time.monotonic() + self._flush_seconds
            while (
                len(self._queue) < self._batch_size
                and not self._closing
                and not self._flush_waiters
            ):
                remaining = gather_until - time.monotonic()
                if remaining <= 0:
                    break
                self._wake_writer.wait(remaining)
            size = min(self._batch_size, len(self._queue))
            self._in_flight = [self._queue.popleft() for _ in range(size)]
            self._room.notify_all()
            return self._in_flight

    def _pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``; wake early when close() starts, to retry under its deadline."""
        with self._lock:
            closing = self._closing
            until = time.monotonic() + seconds
            while self._closing is closing:
                left = until - time.monotonic()
                if left <= 0:
                    return
                self._wake_writer.wait(left)

    def _run(self) -> None:
        backoff = _BACKOFF_START_S
        batch: list[Decision] | None = None
        while True:
            if batch is None:
                batch = self._next_batch()
                if batch is None:
                    return
            try:
                write_decisions(self._engine, batch)
            except Exception as error:  # any failure: keep the batch and retry
                with self._lock:
                    if self._closed:  # close() gave up on us and spilled the batch
                        return
                    self._failures += 1
                    self._last_error = _describe(error)
                    left = self._close_deadline - time.monotonic()
                # Never the inputs: only the error's class and first line.
                logger.warning(
                    "Decision log: writing %d decisions failed (%s); retrying in %.1f s",
                    len(batch),
                    self._last_error,
                    min(backoff, max(left, 0.0)),
                )
                if left <= 0:
                    return  # closing and out of time: close() spills what is left
                self._pause(min(backoff, left))
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            backoff = _BACKOFF_START_S
            with self._lock:
                if self._closed:
                    return
                self._in_flight = []
                self._written += len(batch)
                self._settled += len(batch)
                self._progress.notify_all()
            batch = None


# --- the writer in a process of its own ------------------------------------------------------

_FRAME_HEADER: Final = 4
"""Bytes of the big-endian length before each encoded decision on the writer's stdin."""
_RESTART_WAIT_S = 0.5


def _decision_from_line(line: bytes) -> Decision:
    record = orjson.loads(line)
    record["decided_at"] = datetime.fromisoformat(record["decided_at"])
    return Decision(**record)


def _frames(stream: Any) -> Iterator[bytes]:
    """Length-prefixed frames from a binary stream, until it ends."""
    while header := stream.read(_FRAME_HEADER):
        if len(header) < _FRAME_HEADER:
            return  # the sender died mid-frame: nothing complete follows
        body = stream.read(int.from_bytes(header, "big"))
        if body is None or len(body) < int.from_bytes(header, "big"):
            return
        yield body


def write_from_stdin(arguments: Sequence[str] | None = None) -> None:
    """The writer process (`python -m loanops.decisions URL ...`): a `DecisionLog` fed by stdin.

    It runs until its stdin ends: when the server closes it, or when the server dies. SIGTERM
    and SIGINT are ignored, so that a stray signal does not drop what it holds before the
    server has handed everything over.
    """
    import argparse
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parser = argparse.ArgumentParser(prog="python -m loanops.decisions")
    parser.add_argument("url")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--flush-seconds", type=float, default=0.25)
    parser.add_argument("--max-pending", type=int, default=100_000)
    parser.add_argument("--spill-dir", type=Path, default=None)
    options = parser.parse_args(arguments)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    engine = create_engine_for(options.url)
    log = DecisionLog(
        engine,
        batch_size=options.batch_size,
        flush_seconds=options.flush_seconds,
        max_pending=options.max_pending,
        spill_dir=options.spill_dir,
    )
    log.start()
    try:
        for line in _frames(sys.stdin.buffer):
            decision = _decision_from_line(line)
            try:
                log.record(decision)
            except (TypeError, ValueError) as error:
                folder = options.spill_dir or Path(tempfile.gettempdir()) / "loanops-decision-spill"
                path = _write_spill(folder, [decision])
                logger.error("a decision the log refused (%s) went to %s", _describe(error), path)
    finally:
        log.close()
        engine.dispose()


class DecisionLogProcess:
    """A `DecisionLog` in a child process, for a server whose own thread must not wait on it.

    In the API, a writer thread shares the interpreter lock with the event loop: on 2 cores its
    SQLAlchemy and SQLite work fell behind at about 2,000 decisions a second while the API
    answered 3,000, and each batch it wrote stalled the requests in flight. Here `record` only
    encodes the decision (which also checks that it can be stored) and queues the bytes; a
    sender thread pipes them to `python -m loanops.decisions`, which does the rest on another
    core and imports nothing but this module. `close` ends the pipe and waits for the child to
    write or spill everything. A child that dies is restarted, with an ERROR: what it held in
    memory is lost, as with a killed server.
    """

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 500,
        flush_seconds: float = 0.25,
        max_pending: int = 100_000,
        spill_dir: Path | None = None,
    ) -> None:
        """Prepare the log; nothing runs until `start`.

        Args:
            url: Database URL of a migrated decision log.
            batch_size: Most decisions written in one transaction.
            flush_seconds: Longest a decision waits for its batch to fill.
            max_pending: Decisions not yet handed to the child before `saturated` says so.
            spill_dir: Folder for decisions that cannot be written by the time of `close`.
        """
        self._command = [
            sys.executable, "-m", "loanops.decisions", url,
            "--batch-size", str(batch_size), "--flush-seconds", str(flush_seconds),
            "--max-pending", str(max_pending),
            *(["--spill-dir", str(spill_dir)] if spill_dir else []),
        ]  # fmt: skip
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._queue: deque[bytes] = deque()
        self._child: subprocess.Popen[bytes] | None = None
        self._sender: threading.Thread | None = None
        self._closing = False
        self._restarts = 0

    @property
    def pending(self) -> int:
        """Decisions recorded but not yet handed to the child."""
        return len(self._queue)

    @property
    def saturated(self) -> bool:
        """True when `max_pending` decisions wait for the child: it is not keeping up."""
        return len(self._queue) >= self._max_pending

    @property
    def restarts(self) -> int:
        """How often the child died and was started again."""
        return self._restarts

    @property
    def pid(self) -> int | None:
        """The child's process id, while it runs."""
        return self._child.pid if self._child else None

    def start(self) -> None:
        """Start the child and the thread that feeds it."""
        with self._lock:
            if self._closing:
                raise RuntimeError("the decision log is closed")
            if self._sender is not None:
                return
            self._child = self._spawn()
            self._sender = threading.Thread(target=self._send, name="decision-log-sender")
            self._sender.start()

    def record(self, decision: Decision) -> None:
        """Queue a decision for the child; never blocks.

        Raises:
            TypeError: Its inputs or reasons cannot be encoded as JSON.
            RuntimeError: The log is closed or was never started.
        """
        line = _spill_line(decision)
        with self._lock:
            if self._closing or self._sender is None:
                raise RuntimeError("the decision log is not running")
            self._queue.append(len(line).to_bytes(_FRAME_HEADER, "big") + line)
            if len(self._queue) == 1:
                self._ready.notify()

    def close(self, timeout: float = 60) -> None:
        """Hand everything to the child, end its input and wait for it; idempotent.

        Args:
            timeout: Most seconds to wait; the child itself retries the database for 30 s
                before it spills.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._ready.notify()
            sender = self._sender
        if sender is None:
            return
        sender.join(timeout)
        child = self._child
        if child is None:
            return
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.error("the decision-log writer (pid %d) did not finish; killing it", child.pid)
            child.kill()
            child.wait()

    def _spawn(self) -> subprocess.Popen[bytes]:
        # A session of its own: a signal to the server's process group (Ctrl-C, a supervisor
        # stopping the group) must not reach the writer before the server has handed it all.
        return subprocess.Popen(
            self._command, stdin=subprocess.PIPE, close_fds=True, start_new_session=True
        )

    def _send(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._ready.wait()
                if not self._queue:  # closing, and everything handed over
                    break
                frames = list(self._queue)
            data = b"".join(frames)
            if not self._deliver(data):
                continue  # the child was replaced; send the same frames again
            with self._lock:
                for _ in frames:
                    self._queue.popleft()
        child = self._child
        if child is not None and child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()

    def _deliver(self, data: bytes) -> bool:
        child = self._child
        assert child is not None and child.stdin is not None
        try:
            child.stdin.write(data)
            child.stdin.flush()
            return True
        except (BrokenPipeError, ValueError, OSError):
            child.wait()
            self._restarts += 1
            logger.error(
                "the decision-log writer exited with code %s; starting another; decisions it "
                "had not yet written are lost",
                child.returncode,
            )
            time.sleep(_RESTART_WAIT_S)
            self._child = self._spawn()
            return False


if __name__ == "__main__":
    write_from_stdin()
