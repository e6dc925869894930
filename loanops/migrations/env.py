"""Alembic environment of the decision log.

`loanops.decisions.database.migrate` runs it with an open connection in ``config.attributes``;
Alembic commands given `loanops.decisions.database.alembic_config` without one connect to the URL
in the config, else to the configured decision log (``LOANOPS_DATABASE_URL`` or SQLite under
``home``).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

import loanops.outcomes  # noqa: F401  (registers the outcomes table on Base.metadata)
from loanops.decisions.database import create_engine_for
from loanops.decisions.table import Base
from loanops.settings import get_settings

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite alters tables by copying them; batch mode lets later revisions do that.
        render_as_batch=connection.dialect.name == "sqlite",
    )


def run_migrations_offline() -> None:
    """Emit the SQL instead of running it (``alembic upgrade --sql``)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or get_settings().decision_db_url,
        target_metadata=target_metadata,
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
