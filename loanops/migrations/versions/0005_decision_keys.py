"""Decision rows cut to their key, time and segment; PostgreSQL compares the key byte by byte.

A row's model and job are its segment's: the model is on the ``decision_segments`` row, the job
inside the segment. Keeping them a second time in every row cost each insert their width and
binding, for no reader (a count by model now asks the segments which of them it covers). Every
row's ``segment_id`` is therefore required: the revision refuses to run while a row points to
no segment, since that row's model would be lost.

On PostgreSQL ``request_id`` (and the outcomes' key that refers to it) takes the ``"C"``
collation. The key index then compares ids as bytes instead of through the database's locale,
a share of every step of each insert's descent (bench/README.md has the profile). For UTF-8
text, byte order is code-point order: the order of a ``C.UTF-8`` database, of SQLite, and of the
Arrow sort that gives every writer one lock order (`loanops.decisions.bulk`). Rebuilding the key
index locks both tables while it runs.

Downgrading puts the model and job back from the segments.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

from loanops.decisions.segments import decode

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns that go, with their nullability as revision 0001 made them.
_MOVED: tuple[tuple[str, bool], ...] = (
    ("model_name", False),
    ("model_version", False),
    ("job_id", True),
)
_SEGMENTS = sa.table(
    "decision_segments",
    sa.column("segment_id", sa.Integer()),
    sa.column("model_name", sa.String()),
    sa.column("model_version", sa.String()),
    sa.column("data", sa.LargeBinary()),
)
_KEYS = (("outcomes", "request_id"), ("decisions", "request_id"))


def upgrade() -> None:
    connection = op.get_bind()
    orphans = connection.exec_driver_sql(
        "SELECT count(*) FROM decisions WHERE segment_id IS NULL"
    ).scalar_one()
    if orphans:
        raise RuntimeError(
            f"{orphans} decision rows point to no segment, so their model would be lost; "
            "this log was not migrated by revision 0004 alone"
        )
    if connection.dialect.name == "postgresql":
        _collate_keys('"C"')
    with op.batch_alter_table("decisions", table_kwargs={"sqlite_with_rowid": False}) as batch:
        batch.alter_column("segment_id", existing_type=sa.Integer(), nullable=False)
        for name, _ in _MOVED:
            batch.drop_column(name)


def downgrade() -> None:
    connection = op.get_bind()
    with op.batch_alter_table("decisions", table_kwargs={"sqlite_with_rowid": False}) as batch:
        for name, _ in _MOVED:
            batch.add_column(sa.Column(name, sa.String(), nullable=True))
        batch.alter_column("segment_id", existing_type=sa.Integer(), nullable=True)
    connection.exec_driver_sql(
        "UPDATE decisions SET "
        "model_name = (SELECT s.model_name FROM decision_segments s "
        "WHERE s.segment_id = decisions.segment_id), "
        "model_version = (SELECT s.model_version FROM decision_segments s "
        "WHERE s.segment_id = decisions.segment_id)"
    )
    ids = connection.execute(sa.select(_SEGMENTS.c.segment_id).order_by("segment_id")).scalars()
    for segment_id in list(ids):
        data = connection.execute(
            sa.select(_SEGMENTS.c.data).where(_SEGMENTS.c.segment_id == segment_id)
        ).scalar_one()
        _restore_jobs(connection, decode(data))
    with op.batch_alter_table("decisions", table_kwargs={"sqlite_with_rowid": False}) as batch:
        for name, nullable in _MOVED:
            batch.alter_column(name, existing_type=sa.String(), nullable=nullable)
    if connection.dialect.name == "postgresql":
        _collate_keys("pg_catalog.default")


def _collate_keys(collation: str) -> None:
    # The outcomes' key refers to the decisions' key: the two change together, the reference
    # set aside meanwhile.
    op.drop_constraint("fk_outcomes_request_id_decisions", "outcomes", type_="foreignkey")
    for table, column in _KEYS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE varchar COLLATE {collation}")
    op.create_foreign_key(
        "fk_outcomes_request_id_decisions",
        "outcomes",
        "decisions",
        ["request_id"],
        ["request_id"],
        ondelete="CASCADE",
    )


def _restore_jobs(connection: sa.Connection, table: Any) -> None:
    """Put a segment's job ids back on its rows (a live decision's is null and stays so)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    jobs = table["job_id"].cast(pa.string())
    for job in pc.unique(jobs.filter(pc.is_valid(jobs))).to_pylist():
        ids = table["request_id"].filter(pc.equal(jobs, job)).to_pylist()
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(
                "UPDATE decisions SET job_id = %s WHERE request_id = ANY(%s)", (job, ids)
            )
        else:
            connection.exec_driver_sql(
                "UPDATE decisions SET job_id = ? "
                "WHERE request_id IN (SELECT value FROM json_each(?))",
                (job, orjson.dumps(ids).decode()),
            )
