"""Alembic environment of the batch-job tables (see `loanops.decisions.migration_env`).

Only the batch-job tables are compared, and the version lives in its own table, so the decision
log's chain is never touched.
"""

from __future__ import annotations

from loanops.decisions.migration_env import run_environment
from serving.batch.database import VERSION_TABLE
from serving.batch.tables import BatchBase

run_environment(BatchBase.metadata, version_table=VERSION_TABLE)
