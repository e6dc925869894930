"""The log's tables (``decisions`` and its columnar ``decision_segments``) and their base.

`Base.metadata` is the Alembic target of `loanops/migrations`; the outcomes table registers on it
too (`loanops.outcomes`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp, stored in UTC and always read back as aware UTC.

    PostgreSQL keeps it as ``timestamptz``. SQLite has no time zones, so the value is stored as
    naive UTC text, whose fixed-width format sorts and compares in time order.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware datetime to UTC (naive UTC for SQLite); refuse a naive one."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("decision log timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return the stored timestamp as an aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


KEY = String().with_variant(String(collation="C"), "postgresql")
"""A decision's ``request_id``: compared byte by byte on PostgreSQL (revision 0005 says why)."""


class Base(DeclarativeBase):
    """Declarative base of the decision log's tables (the Alembic target metadata)."""

    # Named constraints, so later revisions (SQLite batch mode included) can refer to them.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class DecisionRecord(Base):
    """A row of the ``decisions`` table; see `Decision` for the meaning of each column.

    The row is the decision's key, its time (what a window count filters on), and the segment
    that holds the decision whole (``segment_id``), whose row names the model; the rest is kept
    in that segment only, as `loanops.decisions.bulk` explains. Windows are read from the
    segments, so the rows carry no time index: each insert maintains the key alone.
    """

    __tablename__ = "decisions"
    # On SQLite the key is the table: one b-tree per insert, not a table and its key index.
    __table_args__ = {"sqlite_with_rowid": False}

    request_id: Mapped[str] = mapped_column(KEY, primary_key=True)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)
    segment_id: Mapped[int] = mapped_column(Integer)


DECISIONS_TABLE: Table = Base.metadata.tables[DecisionRecord.__tablename__]
"""The ``decisions`` table as a SQLAlchemy Core table, for statements."""


class DecisionSegment(Base):
    """A row of ``decision_segments``: one written batch of one model version's decisions.

    ``data`` is the batch as a compressed Arrow IPC stream (`loanops.decisions.segments`).
    """

    __tablename__ = "decision_segments"
    __table_args__ = (
        Index("ix_decision_segments_model_last_at", "model_name", "model_version", "last_at"),
        Index("ix_decision_segments_last_at", "last_at"),
    )

    segment_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String)
    model_version: Mapped[str] = mapped_column(String)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime)
    rows: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


SEGMENTS_TABLE: Table = Base.metadata.tables[DecisionSegment.__tablename__]
"""The ``decision_segments`` table as a SQLAlchemy Core table."""
