"""The batch-job tables' database: the decision log's, migrated by a chain of their own."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random

from loanops.decisions.database import create_engine_for

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Engine

    from loanops.settings import Settings

logger = logging.getLogger(__name__)

MIGRATIONS_DIR: Final = Path(__file__).with_name("migrations")
VERSION_TABLE: Final = "alembic_version_batch_jobs"
"""Alembic's version table of this chain; the decision log's chain keeps `alembic_version`."""
# Key of the PostgreSQL advisory lock that serialises concurrent `migrate` calls.
_MIGRATION_LOCK_KEY: Final = 0x62617463686A6F62  # "batchjob"


def alembic_config(url: str | None = None) -> Config:
    """The Alembic configuration of the batch-job tables, without an ``alembic.ini``.

    Args:
        url: database the commands work on when no connection is passed in
            ``config.attributes["connection"]``; defaults to the configured decision log's.
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url is not None:
        # ConfigParser interpolation would read '%' in a password as a reference.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


# Two processes that migrate a fresh SQLite file at once: the one that loses the race for the
# write lock gets "database is locked" at once, and on its next try finds the tables at head.
@retry(
    retry=retry_if_exception_type(OperationalError),
    stop=stop_after_attempt(5),
    wait=wait_random(0.05, 0.5),
    reraise=True,
)
def migrate(engine: Engine) -> None:
    """Upgrade the batch-job tables to the latest revision; safe from several processes at once.

    On PostgreSQL the upgrade runs in one transaction under an advisory lock, so a second
    caller waits, then finds the tables at head; on SQLite a caller that loses the race retries.
    """
    from alembic import command

    config = alembic_config()
    with engine.connect() as connection, connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def engine_for(settings: Settings) -> Engine:
    """An engine on the decision log's database with the batch-job tables migrated."""
    engine = create_engine_for(settings.decision_db_url)
    migrate(engine)
    return engine
