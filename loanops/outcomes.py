"""Outcomes: whether a decided loan defaulted, learned months after the decision (delayed labels).

An outcome is keyed by the ``request_id`` of the decision it resolves, the one key every decision
in the log has:

- an API decision's request id is in the `/v1/predict` response;
- a batch decision's request id is ``<job id>-<row>``, where ``row`` is the column of the same name
  in the job's scored file. A lender's own loan id travels next to it: any extra column of the
  uploaded file (such as ``loan_id``) is passed through to the scored file. An outcome file may
  therefore name a batch decision either by ``request_id`` or by its ``job_id`` and ``row``.

Decisions carry no loan id of their own: the API's request body is derived from the feature
schema and refuses other keys, and a second key would make "which decision is this?" ambiguous.

Outcomes are never silently merged. `record_outcomes` looks at a whole set in one transaction and
writes all of it or none of it:

- **unknown ids** (no such decision) refuse the set, unless the caller passes
  ``skip_unknown=True``, in which case they are left out and reported;
- **duplicates** (an id already recorded with the same ``defaulted``, or repeated in the set with
  the same value) are reported and written once; the stored row is kept as it is;
- **conflicts** (an id already recorded with the other value, or given both values in the set)
  always refuse the set. A recorded outcome is not overwritten by this path.

`loanops.outcome_files.load_outcomes_file` reads a CSV or Parquet file into validated outcomes,
or raises with every bad row by number. `read_labelled` joins outcomes back to their decisions
for the performance metrics in `loanops.performance`.

The ``outcomes`` table lives on the decision log's `Base`, in the same database, and is created
by the Alembic revision ``0002``; importing this module registers it on ``Base.metadata``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import Boolean, Engine, ForeignKey, String, Table, func, insert, select
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from loanops.decisions.database import write_transaction
from loanops.decisions.read import (
    META_COLUMNS,
    READ_BATCH_ROWS,
    ColumnKind,
    InputKind,
    read_frame,
    window_filter,
)
from loanops.decisions.table import KEY, Base, DecisionRecord, UTCDateTime

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "OUTCOME_SOURCES",
    "Outcome",
    "OutcomeRecord",
    "OutcomeReport",
    "read_labelled",
    "record_outcomes",
]

OUTCOME_SOURCES: Final = frozenset({"api", "file"})
"""The values `OutcomeRecord.source` may take."""

OutcomeSource = Literal["api", "file"]

MAX_REQUEST_ID_LENGTH: Final = 200
# Printable ASCII without spaces: what the API (hex) and batch jobs (`<job>-<row>`) issue.
_REQUEST_ID_PATTERN: Final = r"^[\x21-\x7e]+$"
# Clocks disagree a little; an outcome observed further in the future than this is an error.
_CLOCK_SKEW: Final = timedelta(minutes=5)
# Ids per `IN (...)` lookup: well under SQLite's and PostgreSQL's limits on bound parameters.
_LOOKUP_CHUNK: Final = 5_000
# Key of the PostgreSQL advisory lock that serialises outcome writers (check, then insert).
_OUTCOMES_LOCK_KEY: Final = 0x6F7574636F6D6573  # "outcomes"


class Outcome(BaseModel):
    """Whether the loan of one decision defaulted."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "request_id": "7c9e6679742540de944be07fc1f90ae7",
                    "defaulted": True,
                    "observed_at": "2026-10-31T00:00:00Z",
                }
            ]
        },
    )

    request_id: str = Field(
        min_length=1,
        max_length=MAX_REQUEST_ID_LENGTH,
        pattern=_REQUEST_ID_PATTERN,
        description="The decision's request id: from the `/v1/predict` response, or "
        "`<job id>-<row>` for a row of a batch job.",
    )
    defaulted: StrictBool = Field(
        description="`true` if the loan defaulted within its performance window, `false` if it "
        "did not. Only JSON booleans are accepted."
    )
    observed_at: AwareDatetime | None = Field(
        default=None,
        description="When the outcome became known, with a time zone; not in the future.",
    )

    @field_validator("observed_at", mode="before")
    @classmethod
    def _a_date_time_not_a_number(cls, value: Any) -> Any:
        # pydantic would read 0 as the Unix epoch; the documented type is a date-time string.
        if isinstance(value, int | float):
            raise PydanticCustomError(
                "datetime_type", "observed_at must be an ISO 8601 date-time, not a number"
            )
        return value

    @field_validator("observed_at")
    @classmethod
    def _not_in_the_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value > datetime.now(UTC) + _CLOCK_SKEW:
            raise ValueError("observed_at lies in the future")
        return value


class OutcomeRecord(Base):
    """A row of the ``outcomes`` table: the outcome of the decision with the same request id."""

    __tablename__ = "outcomes"

    request_id: Mapped[str] = mapped_column(
        KEY, ForeignKey(DecisionRecord.request_id, ondelete="CASCADE"), primary_key=True
    )
    defaulted: Mapped[bool] = mapped_column(Boolean)
    observed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """When the outcome became known, as its sender said; None if not said."""
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """When it was written here."""
    source: Mapped[str] = mapped_column(String)
    """``"api"`` or ``"file"``."""


_TABLE: Table = Base.metadata.tables[OutcomeRecord.__tablename__]
_DECISIONS: Table = Base.metadata.tables[DecisionRecord.__tablename__]
_SEGMENTS: Table = Base.metadata.tables["decision_segments"]
# The segment column of `read_labelled`'s rows, dropped once their segments are read.
_SEGMENT: Final = "segment_id"
_SEGMENTS_PER_QUERY: Final = 500


@dataclass(frozen=True)
class OutcomeReport:
    """What `record_outcomes` did with a set of outcomes.

    Attributes:
        received: Outcomes in the set, repeats included.
        recorded: Outcomes newly written (0 when `refused`).
        duplicates: Ids already recorded with the same value, or repeated in the set with the
            same value; written at most once, the stored row left as it was.
        unknown: Ids that match no decision.
        conflicts: Ids already recorded with the other value, or given both values in the set.
        refused: True when nothing was written: the set held conflicts, or unknown ids while
            unknown ids were not to be skipped.
    """

    received: int
    recorded: int
    duplicates: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    refused: bool = False

    @property
    def summary(self) -> str:
        """One line for a log or a terminal, naming up to five ids of each problem."""
        parts = [
            f"refused all {self.received} outcomes"
            if self.refused
            else f"recorded {self.recorded} of {self.received} outcomes"
        ]
        for label, ids in (
            ("conflicting with a recorded or repeated value", self.conflicts),
            ("with no such decision", self.unknown),
            ("already recorded or repeated with the same value", self.duplicates),
        ):
            if ids:
                parts.append(f"{len(ids)} {label}: {_some(ids)}")
        return "; ".join(parts)


def _some(ids: Sequence[str], shown: int = 5) -> str:
    head = ", ".join(ids[:shown])
    return head + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


def _chunks(values: Sequence[str], size: int = _LOOKUP_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def record_outcomes(
    engine: Engine,
    outcomes: Iterable[Outcome],
    *,
    source: OutcomeSource = "api",
    skip_unknown: bool = False,
) -> OutcomeReport:
    """Record outcomes against their decisions, all of them or none, in one transaction.

    Args:
        engine: Engine of a migrated decision-log database.
        outcomes: The outcomes; validated `Outcome` objects.
        source: Where they came from: ``"api"`` or ``"file"``.
        skip_unknown: Leave out (and report) ids that match no decision, rather than refuse the
            whole set for them. Conflicts refuse the set either way.

    Returns:
        The report; ``refused`` says whether anything was written. Duplicates are never written
        twice and never overwrite a stored outcome.

    Raises:
        ValueError: ``source`` is not ``"api"`` or ``"file"``.
        sqlalchemy.exc.SQLAlchemyError: The database failed; nothing was written.
    """
    if source not in OUTCOME_SOURCES:
        raise ValueError(f"source must be one of {sorted(OUTCOME_SOURCES)}, not {source!r}")
    items = list(outcomes)
    first: dict[str, Outcome] = {}
    duplicates: set[str] = set()
    conflicts: set[str] = set()
    for outcome in items:
        seen = first.setdefault(outcome.request_id, outcome)
        if seen is outcome:
            continue
        if seen.defaulted == outcome.defaulted:
            duplicates.add(outcome.request_id)
        else:
            conflicts.add(outcome.request_id)
    ids = sorted(first)
    recorded = 0
    with write_transaction(engine) as connection:
        if connection.dialect.name == "postgresql":
            # Held until commit: a concurrent writer of the same ids waits, then sees them stored.
            connection.execute(select(func.pg_advisory_xact_lock(_OUTCOMES_LOCK_KEY)))
        known: set[str] = set()
        stored: dict[str, bool] = {}
        for chunk in _chunks(ids):
            known.update(
                connection.execute(
                    select(_DECISIONS.c.request_id).where(_DECISIONS.c.request_id.in_(chunk))
                ).scalars()
            )
            query = select(_TABLE.c.request_id, _TABLE.c.defaulted)
            for request_id, defaulted in connection.execute(
                query.where(_TABLE.c.request_id.in_(chunk))
            ):
                stored[request_id] = bool(defaulted)
        unknown = set(ids) - known
        for request_id, defaulted in stored.items():
            if request_id in conflicts:
                continue
            if defaulted == first[request_id].defaulted:
                duplicates.add(request_id)
            else:
                conflicts.add(request_id)
        refused = bool(conflicts) or (bool(unknown) and not skip_unknown)
        fresh = [
            request_id
            for request_id in ids
            if request_id not in stored
            and request_id not in unknown
            and request_id not in conflicts
        ]
        if not refused and fresh:
            now = datetime.now(UTC)
            rows = [
                {
                    "request_id": request_id,
                    "defaulted": first[request_id].defaulted,
                    "observed_at": first[request_id].observed_at,
                    "recorded_at": now,
                    "source": source,
                }
                for request_id in fresh
            ]
            connection.execute(insert(_TABLE), rows)
            recorded = len(rows)
    return OutcomeReport(
        received=len(items),
        recorded=recorded,
        duplicates=tuple(sorted(duplicates - conflicts)),
        unknown=tuple(sorted(unknown)),
        conflicts=tuple(sorted(conflicts)),
        refused=refused,
    )


# Outcome columns of `read_labelled`, after the decision columns: name in frame, column, kind.
_OUTCOME_COLUMNS: Final[tuple[tuple[str, ColumnElement[Any], ColumnKind], ...]] = (
    ("defaulted", _TABLE.c.defaulted, "bool"),
    ("observed_at", _TABLE.c.observed_at, "datetime"),
    ("outcome_recorded_at", _TABLE.c.recorded_at, "datetime"),
    ("outcome_source", _TABLE.c.source, "text"),
)


def read_labelled(
    engine: Engine,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    model_name: str | None = None,
    model_version: str | None = None,
    inputs: Mapping[str, InputKind] | None = None,
    reasons: bool = True,
    batch_rows: int = READ_BATCH_ROWS,
) -> pd.DataFrame:
    """Read the decisions of a time window that have an outcome, joined with it.

    Args:
        engine: Engine of a migrated decision-log database.
        start: Earliest ``decided_at`` included (timezone-aware); None for no lower bound.
        end: First ``decided_at`` excluded (timezone-aware); None for no upper bound.
        model_name: Keep only this model's decisions.
        model_version: Keep only this model version's decisions.
        inputs: Read only these input keys, as `loanops.decisions.read.read_decisions` does.
        reasons: Include the ``reasons`` column.
        batch_rows: Rows fetched and converted at a time.

    Returns:
        The columns of `loanops.decisions.read.read_decisions` (the window is on the decision's
        ``decided_at``), with ``defaulted`` (bool), ``observed_at`` (``datetime64[ns, UTC]``,
        NaT where not given), ``outcome_recorded_at`` and ``outcome_source`` before the input
        columns. An input key named like any of these is read as ``input_<key>``. Ordered by
        ``decided_at``, then ``request_id``; decisions without an outcome are left out.

    Raises:
        ValueError: A bound is a naive datetime.
    """
    # The rows give the outcome and where the decision is; the decision itself is in a segment.
    columns: dict[str, ColumnKind] = {
        "request_id": "text",
        **{name: kind for name, _, kind in _OUTCOME_COLUMNS},
        _SEGMENT: "float",
    }
    statement = (
        select(
            _DECISIONS.c.request_id,
            *(column for _, column, _ in _OUTCOME_COLUMNS),
            _DECISIONS.c.segment_id,
        )
        .join_from(_DECISIONS, _TABLE, _TABLE.c.request_id == _DECISIONS.c.request_id)
        .where(*window_filter(start, end, model_name, model_version))
        .order_by(_DECISIONS.c.decided_at, _DECISIONS.c.request_id)
    )
    labelled = read_frame(engine, statement, columns, {}, batch_rows=batch_rows)
    decided = [name for name in META_COLUMNS if reasons or not name.endswith("reasons")]
    logged = _logged(engine, labelled, decided, inputs)
    outcome = [name for name, _, _ in _OUTCOME_COLUMNS]
    keys = {
        name: f"input_{name}" if name in outcome else name
        for name in logged.columns
        if name not in decided
    }
    logged = logged.rename(columns=keys)
    for name in outcome:
        logged[name] = labelled[name].to_numpy()
    return logged[[*decided, *outcome, *keys.values()]]


def _logged(
    engine: Engine,
    labelled: pd.DataFrame,
    decided: list[str],
    inputs: Mapping[str, InputKind] | None,
) -> pd.DataFrame:
    """The labelled decisions, from their segments, row for row: `decided`, then the inputs."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    from loanops.decisions.columnar import segment_frame
    from loanops.decisions.segments import decode

    wanted = pa.array(labelled["request_id"].tolist(), pa.string())
    segment_ids = sorted({int(i) for i in labelled[_SEGMENT].dropna()})
    parts: list[tuple[str, str, pa.Table]] = []
    columns = _SEGMENTS.c
    with engine.connect() as connection:
        for start in range(0, len(segment_ids), _SEGMENTS_PER_QUERY):
            chosen = segment_ids[start : start + _SEGMENTS_PER_QUERY]
            rows = connection.execute(
                select(columns.model_name, columns.model_version, columns.data)
                .where(columns.segment_id.in_(chosen))
                .order_by(columns.segment_id)
            )
            for name, version, data in rows:
                table = decode(data)
                table = table.filter(pc.is_in(table["request_id"], value_set=wanted))
                parts.append((name, version, table))
    logged = segment_frame(parts, decided, inputs)
    order = pd.Index(logged["request_id"]).get_indexer(labelled["request_id"])
    if (order < 0).any():
        raise RuntimeError("a labelled decision is missing from its segment")
    return logged.iloc[order].reset_index(drop=True)
