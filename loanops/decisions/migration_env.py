"""What an Alembic `env.py` of ours runs: one body for every migration chain in the database.

The decision log's chain (`loanops/migrations/`) and the batch-job tables' chain
(`serving/batch/migrations/`) share one database. Each compares only its own tables and keeps
its version in a table of its own, so neither chain ever proposes to drop the other's tables.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from loanops.decisions.database import create_engine_for
from loanops.settings import get_settings


def run_environment(target_metadata: MetaData, *, version_table: str = "alembic_version") -> None:
    """Run the migrations of the chain whose `env.py` calls this, online or offline.

    Online, it uses the connection `migrate` put in ``config.attributes``; without one, it
    connects to the URL in the config, else to the configured decision log's database.

    Args:
        target_metadata: The chain's own tables.
        version_table: Where the chain records its revision.
    """
    config = context.config

    def ours(name: str | None, type_: str, parent_names: Any) -> bool:
        return type_ != "table" or name in target_metadata.tables

    def url() -> str:
        return config.get_main_option("sqlalchemy.url") or get_settings().decision_db_url

    def run_on(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table=version_table,
            include_name=ours,
            # SQLite alters tables by copying them; batch mode lets later revisions do that.
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()

    if context.is_offline_mode():  # `alembic upgrade --sql`: emit the SQL instead of running it
        context.configure(
            url=url(),
            target_metadata=target_metadata,
            version_table=version_table,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    engine = create_engine_for(url())
    try:
        with engine.connect() as new_connection:
            run_on(new_connection)
    finally:
        engine.dispose()
