"""Writing `Decision` records: one idempotent transaction per batch, keyed by ``request_id``.

The API's writer process writes its batches with `write_decisions`, which lays the records out
as segment columns and stores them as `loanops.decisions.bulk` does for a batch worker's chunks,
so a redelivered batch adds nothing. `check_storable` refuses, in the caller, a decision the
database would refuse later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from loanops.decisions.bulk import check_columns, insert_segment
from loanops.decisions.database import json_dumps, write_transaction
from loanops.decisions.record import Decision
from loanops.decisions.segments import input_table, paired_types

if TYPE_CHECKING:
    import pyarrow as pa


def decision_row(decision: Decision) -> dict[str, Any]:
    """The decision as plain dicts and floats, every field of it (a spill file's record)."""
    inputs = decision.inputs
    return {
        "request_id": decision.request_id,
        "decided_at": decision.decided_at,
        "model_name": decision.model_name,
        "model_version": decision.model_version,
        "threshold": float(decision.threshold),
        "inputs": inputs if type(inputs) is dict else dict(inputs),
        "probability": float(decision.probability),
        "decision": decision.decision,
        "reasons": [r if type(r) is dict else dict(r) for r in decision.reasons],
        "source": decision.source,
        "job_id": decision.job_id,
        "arm": decision.arm,
        "challenger_version": decision.challenger_version,
        "challenger_threshold": _float_or_none(decision.challenger_threshold),
        "challenger_probability": _float_or_none(decision.challenger_probability),
        "challenger_decision": decision.challenger_decision,
        "challenger_reasons": None
        if decision.challenger_reasons is None
        else [r if type(r) is dict else dict(r) for r in decision.challenger_reasons],
    }


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


def check_storable(decision: Decision) -> None:
    """Refuse a decision that no database write could store, so no writer retries it forever.

    Raises:
        TypeError: Its inputs or reasons cannot be encoded as JSON.
        ValueError: It holds a NUL character, which PostgreSQL cannot store.
    """
    row = decision_row(decision)
    encoded = json_dumps(row)
    # The JSON writes a NUL in any key or value as \u0000, so a decision without that text
    # holds none; with it, the text may also be an escaped backslash before "u0000", so the
    # walk decides. The walk was about a fifth of the API writer's CPU per decision.
    if "\\u0000" in encoded and _holds_nul(row):
        raise ValueError("decisions may not hold NUL characters, which PostgreSQL refuses")


def _holds_nul(value: Any) -> bool:
    """Whether a string in ``value`` (nested in dicts and lists too) holds a NUL character."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(item) for item in value)
    return False


def write_decisions(engine: Engine, decisions: Iterable[Decision]) -> int:
    """Store decisions in one transaction, skipping any whose ``request_id`` is already stored.

    Idempotent: writing the same decisions again (a redelivered batch, or a retry after an
    ambiguous failure) stores nothing more. Each model version's decisions become one segment.

    Args:
        engine: Engine of a migrated decision-log database.
        decisions: The decisions to store.

    Returns:
        How many decisions were newly stored.

    Raises:
        TypeError: An input or reason cannot be encoded as JSON; nothing was written.
        ValueError: A decision cannot be stored (a NUL character, say); nothing was written.
        sqlalchemy.exc.SQLAlchemyError: The database refused or could not be reached; nothing
            was written.
    """
    parts = decision_tables(list(decisions))
    if not parts:
        return 0
    for name, version, table in parts:
        check_columns(name, version, table)
    with write_transaction(engine) as connection:
        return sum(insert_segment(connection, *part) for part in parts)


def decision_tables(decisions: list[Decision]) -> list[tuple[str, str, pa.Table]]:
    """The decisions as segment columns, one table per model version, in (name, version) order.

    One order for every writer, so two overlapping batches lock their rows in the same order.

    Raises:
        TypeError: An input or reason cannot be encoded as JSON.
    """
    groups: dict[tuple[str, str], list[Decision]] = {}
    for d in decisions:
        groups.setdefault((d.model_name, d.model_version), []).append(d)
    return [(name, version, _columns(groups[name, version])) for name, version in sorted(groups)]


def _columns(decisions: list[Decision]) -> pa.Table:
    import pyarrow as pa

    inputs = [_plain(d.inputs) for d in decisions]
    lines = [json_dumps(row).encode() for row in inputs]
    reasons = [json_dumps([_plain(r) for r in d.reasons]) for d in decisions]
    converted: dict[datetime, datetime] = {}
    times = [
        converted.get(d.decided_at)
        or converted.setdefault(d.decided_at, d.decided_at.astimezone(UTC))
        for d in decisions
    ]
    table = pa.table(
        {
            "request_id": pa.array([d.request_id for d in decisions], pa.string()),
            "decided_at": pa.array(times, pa.timestamp("us", tz="UTC")),
            "threshold": pa.array([float(d.threshold) for d in decisions], pa.float64()),
            "probability": pa.array([float(d.probability) for d in decisions], pa.float64()),
            "decision": pa.array([d.decision for d in decisions], pa.string()).dictionary_encode(),
            "reasons": pa.array(reasons, pa.string()),
            "source": pa.array([d.source for d in decisions], pa.string()).dictionary_encode(),
            "job_id": pa.array([d.job_id for d in decisions], pa.string()).dictionary_encode(),
            **_paired_columns(decisions),
        }
    )
    typed = input_table(lines, inputs)
    for name in typed.column_names:
        table = table.append_column(name, typed[name])
    return table


def _paired_columns(decisions: list[Decision]) -> dict[str, pa.Array]:
    """The `PAIRED_FIELDS` columns, typed as `paired_types` says."""
    import pyarrow as pa

    types = paired_types()
    reasons = [
        None
        if d.challenger_reasons is None
        else json_dumps([_plain(r) for r in d.challenger_reasons])
        for d in decisions
    ]
    values: dict[str, list[Any]] = {
        "arm": [d.arm for d in decisions],
        "challenger_version": [d.challenger_version for d in decisions],
        "challenger_threshold": [_float_or_none(d.challenger_threshold) for d in decisions],
        "challenger_probability": [_float_or_none(d.challenger_probability) for d in decisions],
        "challenger_decision": [d.challenger_decision for d in decisions],
        "challenger_reasons": reasons,
    }
    columns: dict[str, pa.Array] = {}
    for name, kind in types.items():
        if pa.types.is_dictionary(kind):
            columns[name] = pa.array(values[name], pa.string()).dictionary_encode()
        else:
            columns[name] = pa.array(values[name], kind)
    return columns


def _plain(value: Mapping[str, Any]) -> dict[str, Any]:
    return value if type(value) is dict else dict(value)
