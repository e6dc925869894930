"""Outcome files: a lender's CSV or Parquet file of outcomes, read and validated row by row.

`load_outcomes_file` returns validated `loanops.outcomes.Outcome`s for `record_outcomes`, or
raises `OutcomeFileError` naming every bad row, so one attempt shows everything to fix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import pandas as pd
from pydantic import ValidationError

from loanops.data import frame_file_format, read_frame
from loanops.outcomes import Outcome

# At most this many problems are spelled out in an `OutcomeFileError`'s message.
_PROBLEMS_SHOWN: Final = 20

_TRUE_TEXT: Final = frozenset({"1", "true"})
_FALSE_TEXT: Final = frozenset({"0", "false"})
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class RowProblem:
    """Why one row of an outcome file (or the file as a whole) was refused.

    Attributes:
        row: Data row, counted from 1 (the row after a CSV's header is 1); None for the file.
        column: The column at fault, if one is.
        message: What is wrong, in words.
    """

    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = "file" if self.row is None else f"row {self.row}"
        return (
            f"{where}, {self.column}: {self.message}" if self.column else f"{where}: {self.message}"
        )


class OutcomeFileError(ValueError):
    """An outcome file that cannot be loaded; ``problems`` lists every reason, row by row."""

    def __init__(self, path: Path, problems: Sequence[RowProblem]) -> None:
        self.path = path
        self.problems: tuple[RowProblem, ...] = tuple(problems)
        shown = "; ".join(str(problem) for problem in self.problems[:_PROBLEMS_SHOWN])
        more = len(self.problems) - _PROBLEMS_SHOWN
        rows = {problem.row for problem in self.problems if problem.row is not None}
        head = f"{path.name}: " + (f"{len(rows)} bad rows: " if rows else "")
        super().__init__(head + shown + (f"; and {more} more problems" if more > 0 else ""))


@dataclass
class _Row:
    """The cells of one data row, converted one by one; problems collected, not raised."""

    number: int
    problems: list[RowProblem] = field(default_factory=list)

    def fail(self, column: str | None, message: str) -> None:
        self.problems.append(RowProblem(self.number, column, message))


def _missing(value: Any) -> bool:
    """None, NaN, NaT, pandas' NA or blank text."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or bool(pd.api.types.is_scalar(value) and pd.isna(value))


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) else None


def _defaulted(value: Any, row: _Row) -> bool | None:
    column = "defaulted"
    if _missing(value):
        row.fail(column, "missing")
        return None
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()  # numpy scalars
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    text = _text(value)
    if text is not None and text.lower() in _TRUE_TEXT | _FALSE_TEXT:
        return text.lower() in _TRUE_TEXT
    row.fail(column, f"{value!r} is not one of 0, 1, true, false")
    return None


def _observed_at(value: Any, row: _Row) -> datetime | None:
    column = "observed_at"
    if _missing(value):
        return None
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()  # pandas Timestamp
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            row.fail(column, f"{text!r} is not an ISO 8601 date or time")
            return None
        if _DATE_ONLY.match(text):
            return value.replace(tzinfo=UTC)  # a bare date: the start of that day, UTC
    elif isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, datetime):
        row.fail(column, f"{value!r} is not a date or time")
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        row.fail(column, f"{value.isoformat()} has no time zone; add Z or an offset")
        return None
    return value


def _request_id(record: dict[str, Any], by_job_row: bool, row: _Row) -> str | None:
    if not by_job_row:
        value = record["request_id"]
        if _missing(value):
            row.fail("request_id", "missing")
            return None
        text = _text(value)
        if text is None:
            row.fail("request_id", f"{value!r} is not text")
        return text
    job_id, number = record["job_id"], record["row"]
    if _missing(job_id) or _text(job_id) is None:
        row.fail("job_id", "missing" if _missing(job_id) else f"{job_id!r} is not text")
        return None
    if hasattr(number, "item") and not isinstance(number, str):
        number = number.item()
    text = _text(number)
    if text is not None and text.isdigit():
        number = int(text)
    elif isinstance(number, float) and number.is_integer():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        row.fail("row", "missing" if _missing(number) else f"{number!r} is not a row number")
        return None
    return f"{_text(job_id)}-{number}"


def _read_frame(path: Path) -> pd.DataFrame:
    """The file's cells, every CSV cell as written (text, none turned into NaN)."""
    file_format = frame_file_format(path)
    if file_format is None:
        problem = f"unknown format {path.suffix.lower()!r}; use .csv or .parquet"
        raise OutcomeFileError(path, [RowProblem(None, None, problem)])
    try:
        return read_frame(path, all_text=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # the readers raise many types for a malformed file
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        problem = f"cannot be read as {file_format.upper()}: {type(error).__name__}: {message}"
        raise OutcomeFileError(path, [RowProblem(None, None, problem)]) from error


def load_outcomes_file(path: str | Path) -> list[Outcome]:
    """Read and validate an outcome file: CSV with a header row, or Parquet.

    Columns:

    - ``request_id``, or both ``job_id`` and ``row`` (a batch job's row, as in its scored file;
      used only where there is no ``request_id`` column);
    - ``defaulted``: 0, 1, true or false (any case), or a boolean column;
    - ``observed_at`` (optional): ISO 8601 with a time zone, or a bare date (midnight UTC); may
      be empty.

    Other columns, such as a lender's ``loan_id``, are ignored. Every row is checked before
    anything is returned, so one error lists all the bad rows.

    Args:
        path: A ``.csv`` or ``.parquet`` file.

    Returns:
        One outcome per row, in file order. Repeated ids are kept: `record_outcomes` reports
        them as duplicates or conflicts.

    Raises:
        FileNotFoundError: There is no such file.
        OutcomeFileError: The file cannot be read, lacks a column, has no rows, or has bad rows;
            ``problems`` names each, with its row number.
    """
    path = Path(path)
    frame = _read_frame(path)
    columns = {str(name).strip(): name for name in frame.columns}
    by_job_row = "request_id" not in columns and {"job_id", "row"} <= set(columns)
    missing = [
        name
        for name in ("defaulted", *(() if by_job_row else ("request_id",)))
        if name not in columns
    ]
    if missing:
        hint = {"request_id": "no such column (nor both job_id and row)"}
        raise OutcomeFileError(
            path, [RowProblem(None, name, hint.get(name, "no such column")) for name in missing]
        )
    if frame.empty:
        raise OutcomeFileError(path, [RowProblem(None, None, "the file has no data rows")])
    wanted = ["job_id", "row"] if by_job_row else ["request_id"]
    wanted += [name for name in ("defaulted", "observed_at") if name in columns]
    records = frame[[columns[name] for name in wanted]].set_axis(wanted, axis=1)
    outcomes: list[Outcome] = []
    problems: list[RowProblem] = []
    for number, record in enumerate(records.to_dict(orient="records"), start=1):
        row = _Row(number)
        request_id = _request_id(record, by_job_row, row)
        defaulted = _defaulted(record["defaulted"], row)
        observed_at = _observed_at(record.get("observed_at"), row)
        if request_id is not None and defaulted is not None and not row.problems:
            try:
                outcomes.append(
                    Outcome(request_id=request_id, defaulted=defaulted, observed_at=observed_at)
                )
            except ValidationError as error:
                for detail in error.errors(include_url=False):
                    message = detail["msg"].removeprefix("Value error, ")
                    row.fail(".".join(str(part) for part in detail["loc"]) or None, message)
        problems.extend(row.problems)
    if problems:
        raise OutcomeFileError(path, problems)
    return outcomes
