"""The decision log's database: engines for SQLite and PostgreSQL, and the schema migrations.

The table lives in SQLite (the embedded default, in WAL mode) or PostgreSQL, and its schema is
managed by the Alembic environment shipped in `loanops/migrations`; `migrate` brings a database
to the latest revision and is safe to call from several processes at start-up.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson
from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import StaticPool
from tenacity import retry, retry_if_exception, stop_after_delay, wait_fixed

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR: Final = Path(__file__).parent.parent / "migrations"

_SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
_POSTGRES_CONNECT_TIMEOUT_S: Final = 10
# Execution option read by the SQLite `begin` hook: DEFERRED, IMMEDIATE or EXCLUSIVE.
_SQLITE_BEGIN: Final = "loanops_sqlite_begin"
# Key of the PostgreSQL advisory lock that serialises concurrent `migrate` calls.
_MIGRATION_LOCK_KEY: Final = 0x6C6F616E6F7073  # "loanops"


def json_default(value: Any) -> Any:
    """Encode what orjson does not know natively: missing markers and Decimal-like numbers."""
    pandas = sys.modules.get("pandas")  # only loaded if the caller uses it, e.g. for pd.NA
    if pandas is not None and (value is pandas.NA or value is pandas.NaT):
        return None
    if hasattr(value, "__float__"):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def json_dumps(value: Any) -> str:
    """JSON as the log stores it; NaN and infinities become null (JSONB cannot hold them).

    Raises:
        TypeError: The value holds something JSON cannot represent.
    """
    return orjson.dumps(value, default=json_default, option=orjson.OPT_SERIALIZE_NUMPY).decode()


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


def _database_is_locked(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)


@retry(
    retry=retry_if_exception(_database_is_locked),
    stop=stop_after_delay(_SQLITE_BUSY_TIMEOUT_MS / 1000),
    wait=wait_fixed(0.01),
    reraise=True,
)
def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """Switch the database file to WAL mode (a persistent setting), once.

    The switch needs an exclusive lock, and SQLite answers "database is locked" at once,
    without waiting out the busy timeout, when two connections race for it, as the API and
    the workers do on a fresh file; so it is retried here.
    """
    if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        cursor.execute("PRAGMA journal_mode = WAL")


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
        "json_serializer": json_dumps,
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


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a write transaction, committed on exit (rolled back on error).

    On SQLite the write lock is taken up front (``BEGIN IMMEDIATE``): a deferred transaction
    that has to upgrade its lock gets SQLITE_BUSY at once instead of waiting out the busy
    timeout. The connection keeps the row count of an executemany (``preserve_rowcount``):
    psycopg sums it, but SQLAlchemy drops the sum for INSERTs unless asked to keep it.
    """
    with engine.connect() as connection:
        connection.execution_options(preserve_rowcount=True, **{_SQLITE_BEGIN: "IMMEDIATE"})
        with connection.begin():
            yield connection
