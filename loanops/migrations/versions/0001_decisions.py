"""The decisions table: one row per scoring decision.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("inputs", _JSON, nullable=False),
        sa.Column("probability", sa.Double(), nullable=False),
        sa.Column("decision", sa.String(), nullable=False),
        sa.Column("reasons", _JSON, nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("job_id", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_decisions")),
    )
    op.create_index("ix_decisions_decided_at", "decisions", ["decided_at"])
    op.create_index(
        "ix_decisions_model_decided_at",
        "decisions",
        ["model_name", "model_version", "decided_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_decisions_model_decided_at", table_name="decisions")
    op.drop_index("ix_decisions_decided_at", table_name="decisions")
    op.drop_table("decisions")
