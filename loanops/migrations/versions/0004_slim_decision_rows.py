"""Decision rows slimmed to their key, time, model and job, each pointing to its segment.

Every decision is in a segment since 0003, and every read beyond the key and a window count now
goes there, so the copies in ``decisions`` go: the inputs and reasons (JSON), the threshold,
probability, decision and source (see `loanops.decisions.bulk`). Existing rows get the id of the
segment that holds them; the time indexes go too, since windows are read from segments. On
PostgreSQL a segment's bytes are stored as they are, without TOAST's compression (they are
compressed already).
Downgrading rebuilds the columns from the segments (an input key logged as null and a key never
logged both come back as null).

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
# The columns that go, as revision 0001 made them, and the segment column each comes from.
_MOVED: tuple[tuple[str, Any, str | None], ...] = (
    ("threshold", sa.Double(), "threshold"),
    ("inputs", _JSON, None),
    ("probability", sa.Double(), "probability"),
    ("decision", sa.String(), "decision"),
    ("reasons", _JSON, "reasons"),
    ("source", sa.String(), "source"),
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
    if connection.dialect.name == "postgresql":
        # A segment is compressed already: PostgreSQL's own compression would only cost time.
        op.execute("ALTER TABLE decision_segments ALTER COLUMN data SET STORAGE EXTERNAL")
    # SQLite rebuilds the table to drop columns: it comes back keyed by request_id alone
    # (WITHOUT ROWID), as `DecisionRecord` declares it.
    with op.batch_alter_table("decisions", table_kwargs={"sqlite_with_rowid": False}) as batch:
        for name, _, _ in _MOVED:
            batch.drop_column(name)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE decision_segments ALTER COLUMN data SET STORAGE EXTENDED")
    with op.batch_alter_table("decisions") as batch:
        for name, kind, _ in _MOVED:
            batch.add_column(sa.Column(name, kind, nullable=True))
    connection = op.get_bind()
    rows = sa.table(
        "decisions",
        sa.column("request_id", sa.String()),
        *(sa.column(name, kind) for name, kind, _ in _MOVED),
    )
    statement = (
        sa.update(rows)
        .where(rows.c.request_id == sa.bindparam("id"))
        .values({name: sa.bindparam(f"new_{name}") for name, _, _ in _MOVED})
    )
    for _, table in _segments(connection):
        old = _old_rows(table)
        if old:
            connection.execute(statement, old)
    with op.batch_alter_table("decisions", table_kwargs={"sqlite_with_rowid": True}) as batch:
        for name, kind, _ in _MOVED:
            batch.alter_column(name, existing_type=kind, nullable=False)
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


def _old_rows(table: Any) -> list[dict[str, Any]]:
    """A segment's rows as the dropped columns held them before this revision."""
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
    columns = {
        f"new_{name}": table[field].to_pylist() for name, _, field in _MOVED if field is not None
    }
    columns["new_reasons"] = [orjson.loads(text) for text in columns["new_reasons"]]
    columns["new_inputs"] = [dict(zip(names, row, strict=True)) for row in inputs]
    ids = table["request_id"].to_pylist()
    return [{"id": ids[i], **{key: values[i] for key, values in columns.items()}} for i in range(n)]
