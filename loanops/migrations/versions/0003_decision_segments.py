"""Columnar segments of the decision log, and the existing decisions carried over into them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import sqlalchemy as sa
from alembic import op

from loanops.decisions.database import json_dumps
from loanops.decisions.segments import segment_rows
from loanops.decisions.table import SEGMENTS_TABLE, UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Existing decisions are carried over this many at a time, one segment per model version each.
_CARRY_ROWS = 100_000

_OLD = sa.table(
    "decisions",
    sa.column("request_id", sa.String()),
    sa.column("decided_at", UTCDateTime()),
    sa.column("model_name", sa.String()),
    sa.column("model_version", sa.String()),
    sa.column("threshold", sa.Double()),
    sa.column("inputs", sa.JSON()),
    sa.column("probability", sa.Double()),
    sa.column("decision", sa.String()),
    sa.column("reasons", sa.JSON()),
    sa.column("source", sa.String()),
    sa.column("job_id", sa.String()),
)


def upgrade() -> None:
    op.create_table(
        "decision_segments",
        sa.Column("segment_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("segment_id", name=op.f("pk_decision_segments")),
    )
    op.create_index(
        "ix_decision_segments_model_last_at",
        "decision_segments",
        ["model_name", "model_version", "last_at"],
    )
    op.create_index("ix_decision_segments_last_at", "decision_segments", ["last_at"])
    _carry_over(op.get_bind())


def _carry_over(connection: sa.Connection) -> None:
    """Every stored decision into segments, in time order, in the migration's transaction."""
    statement = (
        sa.select(_OLD)
        .order_by(_OLD.c.decided_at, _OLD.c.request_id)
        .execution_options(yield_per=_CARRY_ROWS)
    )
    result = connection.execute(statement)
    for rows in result.partitions():
        meta: dict[str, list[object]] = {
            "request_id": [],
            "decided_at": [],
            "threshold": [],
            "probability": [],
            "decision": [],
            "reasons": [],
            "source": [],
            "job_id": [],
        }
        lines: list[bytes] = []
        models: list[tuple[str, str]] = []
        for row in rows:
            for name in meta:
                meta[name].append(row._mapping[name])
            meta["reasons"][-1] = json_dumps(_loaded(row.reasons))
            lines.append(json_dumps(_loaded(row.inputs)).encode())
            models.append((row.model_name, row.model_version))
        segments = segment_rows(meta, lines, models)
        if segments:
            connection.execute(SEGMENTS_TABLE.insert(), segments)


def _loaded(value: object) -> object:
    # The JSON column type decodes already on both databases; text is left for an older driver.
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def downgrade() -> None:
    op.drop_index("ix_decision_segments_last_at", table_name="decision_segments")
    op.drop_index("ix_decision_segments_model_last_at", table_name="decision_segments")
    op.drop_table("decision_segments")
