"""A job's challenger: the version that shadows it, and why it stopped if it failed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: a job submitted before, or with no challenger attached, is the champion's alone.
    with op.batch_alter_table("batch_jobs") as table:
        table.add_column(sa.Column("challenger_version", sa.String(), nullable=True))
        table.add_column(sa.Column("challenger_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batch_jobs") as table:
        table.drop_column("challenger_error")
        table.drop_column("challenger_version")
