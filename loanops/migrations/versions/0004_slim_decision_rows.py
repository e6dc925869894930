"""Decision rows without their inputs and reasons, each pointing to the segment that holds them.

Every decision is in a segment since 0003, and every read of inputs or reasons now goes there,
so the JSON copies in ``decisions`` go (see `loanops.decisions.bulk`). Existing rows get the id
of the segment that holds them; the time indexes go too, since windows are read from segments.
Downgrading rebuilds the JSON from the segments (a key logged as null and a key never logged
both come back as null).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from loanops.decisions.segments import JSON_PREFIX, TYPED_PREFIX, decode

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_ROWS = sa.table(
    "decisions",
    sa.column("request_id", sa.String()),
    sa.column("inputs", _JSON),
    sa.column("reasons", _JSON),
)
_SEGMENTS = sa.table(
    "decision_segments", sa.column("segment_id", sa.Integer()), sa.column("data", sa.LargeBinary())
)
_TIME_INDEXES = (
    ("ix_decisions_decided_at", ["decided_at"]),
    ("ix_decisions_model_decided_at", ["model_name", "model_version", "decided_at"]),
)


def upgrade() -> None:
    op.add_column("decisions", sa.Column("segment_id", sa.Integer(), nullable=True))
    connection = op.get_bind()
    for segment_id, table in _segments(connection):
        ids = table["request_id"].to_pylist()
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(
                "UPDATE decisions SET segment_id = %s WHERE request_id = ANY(%s)",
                (segment_id, ids),
            )
        else:
            connection.exec_driver_sql(
                "UPDATE decisions SET segment_id = ? "
                "WHERE request_id IN (SELECT value FROM json_each(?))",
                (segment_id, orjson.dumps(ids).decode()),
            )
    for name, _ in _TIME_INDEXES:
        op.drop_index(name, table_name="decisions")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("inputs")
        batch.drop_column("reasons")


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("inputs", _JSON, nullable=True))
        batch.add_column(sa.Column("reasons", _JSON, nullable=True))
    connection = op.get_bind()
    statement = (
        sa.update(_ROWS)
        .where(_ROWS.c.request_id == sa.bindparam("id"))
        .values(inputs=sa.bindparam("logged"), reasons=sa.bindparam("given"))
    )
    for _, table in _segments(connection):
        rows = _json_rows(table)
        if rows:
            connection.execute(statement, rows)
    with op.batch_alter_table("decisions") as batch:
        batch.alter_column("inputs", existing_type=_JSON, nullable=False)
        batch.alter_column("reasons", existing_type=_JSON, nullable=False)
        batch.drop_column("segment_id")
    for name, columns in _TIME_INDEXES:
        op.create_index(name, "decisions", columns)


def _segments(connection: sa.Connection) -> Any:
    """Each stored segment, decoded, one at a time."""
    ids = connection.execute(sa.select(_SEGMENTS.c.segment_id).order_by("segment_id")).scalars()
    for segment_id in list(ids):
        data = connection.execute(
            sa.select(_SEGMENTS.c.data).where(_SEGMENTS.c.segment_id == segment_id)
        ).scalar_one()
        yield segment_id, decode(data)


def _json_rows(table: Any) -> list[dict[str, Any]]:
    """A segment's rows as the JSON columns held them before this revision."""
    keys: list[tuple[str, list[Any]]] = []
    for name in table.column_names:
        if name.startswith(TYPED_PREFIX):
            keys.append((name.removeprefix(TYPED_PREFIX), table[name].to_pylist()))
        elif name.startswith(JSON_PREFIX):
            texts = table[name].to_pylist()
            values = [None if text is None else orjson.loads(text) for text in texts]
            keys.append((name.removeprefix(JSON_PREFIX), values))
    names = [key for key, _ in keys]
    n = table.num_rows
    inputs = zip(*(values for _, values in keys), strict=True) if keys else iter([()] * n)
    return [
        {
            "id": request_id,
            "logged": dict(zip(names, row, strict=True)),
            "given": orjson.loads(text),
        }
        for request_id, text, row in zip(
            table["request_id"].to_pylist(), table["reasons"].to_pylist(), inputs, strict=True
        )
    ]
