"""Alembic environment of the batch-job tables.

`serving.batch.database.migrate` runs it with an open connection in ``config.attributes``; Alembic
commands given `serving.batch.database.alembic_config` without one connect to the URL in the
config, else to the configured decision log's database. Only the batch-job tables are compared,
and the version lives in its own table, so the decision log's chain is never touched.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from loanops.decisions.database import create_engine_for
from loanops.settings import get_settings
from serving.batch.database import VERSION_TABLE
from serving.batch.tables import BatchBase

config = context.config
target_metadata = BatchBase.metadata


def _ours(name: str | None, type_: str, parent_names: Any) -> bool:
    return type_ != "table" or name in target_metadata.tables


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_name=_ours,
        # SQLite alters tables by copying them; batch mode lets later revisions do that.
        render_as_batch=connection.dialect.name == "sqlite",
    )


def run_migrations_offline() -> None:
    """Emit the SQL instead of running it (``alembic upgrade --sql``)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or get_settings().decision_db_url,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the given connection, or on a new engine."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine_for(
        config.get_main_option("sqlalchemy.url") or get_settings().decision_db_url
    )
    try:
        with engine.connect() as new_connection:
            _configure(new_connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
