"""Alembic environment of the decision log (see `loanops.decisions.migration_env`)."""

from __future__ import annotations

import loanops.outcomes  # noqa: F401  (registers the outcomes table on Base.metadata)
from loanops.decisions.migration_env import run_environment
from loanops.decisions.table import Base

run_environment(Base.metadata)
