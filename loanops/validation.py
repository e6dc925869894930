"""Training-data contract: bad data stops the pipeline before any training.

The rules come from the `FeatureSchema` and are checked by a pandera schema built from it. Every
problem is reported with its column, rule and row count, so a failed flow run says exactly why.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cache

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from loanops.schema import Feature, FeatureSchema, Target

_DTYPE_ERROR_PREFIX = "dtype: expected "


@dataclass(frozen=True)
class Problem:
    """One broken rule: which column, which rule, how many rows."""

    column: str
    rule: str
    rows: int
    detail: str = ""

    def __str__(self) -> str:
        row_word = "row" if self.rows == 1 else "rows"
        text = f"{self.column}: {self.rule} ({self.rows} {row_word})"
        return f"{text}: {self.detail}" if self.detail else text


class DataValidationError(ValueError):
    """Raised when a frame breaks its schema's contract."""

    def __init__(self, dataset: str, problems: list[Problem]) -> None:
        self.dataset = dataset
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"dataset {dataset!r} failed validation:\n{lines}")


@dataclass(frozen=True)
class ValidationReport:
    """What a passing frame looked like, and the tolerated problems."""

    rows: int
    positives: int
    warnings: list[Problem] = field(default_factory=list)

    @property
    def default_rate(self) -> float:
        return self.positives / self.rows if self.rows else 0.0


def _dtype_check(feature: Feature) -> pa.Check:
    if feature.kind == "int":
        expected = "integer" if not feature.nullable else "integer or float"

        def ok(series: pd.Series) -> bool:
            if feature.nullable and pd.api.types.is_float_dtype(series):
                return True
            return pd.api.types.is_integer_dtype(series) and not pd.api.types.is_bool_dtype(series)
    elif feature.kind == "float":
        expected = "numeric"

        def ok(series: pd.Series) -> bool:
            return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    else:
        expected = "string"

        def ok(series: pd.Series) -> bool:
            return pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)

    return pa.Check(ok, error=f"{_DTYPE_ERROR_PREFIX}{expected}")


def _value_checks(feature: Feature) -> list[pa.Check]:
    checks = []
    if feature.minimum is not None or feature.maximum is not None:
        checks.append(
            pa.Check.in_range(
                feature.minimum if feature.minimum is not None else float("-inf"),
                feature.maximum if feature.maximum is not None else float("inf"),
            )
        )
    if feature.categories is not None:
        checks.append(pa.Check.isin(list(feature.categories)))
    return checks


def _column(feature: Feature) -> pa.Column:
    checks = [_dtype_check(feature), *_value_checks(feature)]
    return pa.Column(checks=checks, nullable=feature.nullable, required=True)


def _target_column(target: Target) -> pa.Column:
    return pa.Column(
        checks=[pa.Check.isin([target.positive, target.negative])], nullable=False, required=True
    )


def pandera_schema(schema: FeatureSchema) -> pa.DataFrameSchema:
    """The pandera schema for a training frame: the features plus the target."""
    columns = {f.name: _column(f) for f in schema.features}
    columns[schema.target.name] = _target_column(schema.target)
    return pa.DataFrameSchema(columns=columns, strict=False, name=schema.name)


@cache
def value_schema(schema: FeatureSchema) -> pa.DataFrameSchema:
    """The pandera schema of the features' values, for rows already cast to the schema's types.

    The same range, category and required-value rules as `pandera_schema`, without its
    column-wide dtype checks: a batch file's rows are cast one value at a time, and a value
    that cannot be cast is its row's problem, not the column's.
    """
    columns = {
        f.name: pa.Column(checks=_value_checks(f), nullable=f.nullable, required=True)
        for f in schema.features
    }
    return pa.DataFrameSchema(columns=columns, strict=False, name=schema.name)


def _describe(
    column: str, check: str, failures: pd.DataFrame, frame: pd.DataFrame, schema: FeatureSchema
) -> tuple[str, str]:
    """A readable rule name and a detail line for one pandera check's failures."""
    if check == "column_in_dataframe":
        return "missing column", "required by the schema"
    if check == "not_nullable":
        return "null values", "column is not nullable"
    if check.startswith(_DTYPE_ERROR_PREFIX):
        return "wrong dtype", f"{check.removeprefix('dtype: ')}, got {frame[column].dtype}"
    examples = sorted({repr(v) for v in failures["failure_case"].head(1000)})[:5]
    if check.startswith("isin"):
        if column == schema.target.name:
            allowed = [schema.target.positive, schema.target.negative]
            return "unexpected label", f"labels must be one of {allowed}; saw {', '.join(examples)}"
        return "unexpected category", f"e.g. {', '.join(examples)}"
    if check.startswith("in_range"):
        feature = schema.feature(column)
        return (
            "out of range",
            f"allowed [{feature.minimum}, {feature.maximum}]; e.g. {', '.join(examples)}",
        )
    return check, f"e.g. {', '.join(examples)}"


def _row_count(failures: pd.DataFrame, frame_rows: int) -> int:
    if failures["index"].isna().all():
        # Column-level failures (missing column, wrong dtype) concern every row.
        return frame_rows
    return int(failures["index"].nunique())


def validate_training_frame(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    *,
    min_positives: int,
    unknown_category_tolerance: float,
) -> ValidationReport:
    """Check a raw training frame against its schema's contract.

    Args:
        frame: the raw frame, features and target.
        schema: the dataset's feature schema.
        min_positives: fewest defaults a trainable frame may have.
        unknown_category_tolerance: share of rows per column that may carry a category outside
            the schema before it counts as an error; within it, the rows are kept and reported.

    Returns:
        Row and default counts, and the tolerated problems.

    Raises:
        DataValidationError: listing every broken rule with its column and row count.
    """
    problems: list[Problem] = []
    tolerated: list[Problem] = []
    if frame.empty:
        raise DataValidationError(schema.name, [Problem("<frame>", "empty frame", 0)])
    # Failure cases are reported by index label; positions make every row count once.
    frame = frame.reset_index(drop=True)

    try:
        with warnings.catch_warnings():
            # pandera's failure-case concat trips a pandas FutureWarning that is not ours to fix.
            warnings.simplefilter("ignore", FutureWarning)
            pandera_schema(schema).validate(frame, lazy=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases
        missing = cases["check"] == "column_in_dataframe"
        cases.loc[missing, "column"] = cases.loc[missing, "failure_case"]
        mistyped = set(cases.loc[cases["check"].str.startswith(_DTYPE_ERROR_PREFIX), "column"])
        for (column, check), failures in cases.groupby(["column", "check"], sort=False):
            if column in mistyped and not str(check).startswith(_DTYPE_ERROR_PREFIX):
                continue  # value rules on a column of the wrong type only repeat the dtype error
            rule, detail = _describe(str(column), str(check), failures, frame, schema)
            problem = Problem(str(column), rule, _row_count(failures, len(frame)), detail)
            if rule == "unexpected category":
                share = problem.rows / len(frame)
                within = share <= unknown_category_tolerance
                problem = Problem(
                    problem.column,
                    rule,
                    problem.rows,
                    f"{detail}; {share:.3%} of rows, {'within' if within else 'over'} the "
                    f"{unknown_category_tolerance:.3%} tolerance",
                )
                if within:
                    tolerated.append(problem)
                    continue
            problems.append(problem)

    target = schema.target.name
    positives = int((frame[target] == schema.target.positive).sum()) if target in frame else 0
    if target in frame and positives < min_positives:
        problems.append(
            Problem(
                target,
                "too few positives",
                positives,
                f"need at least {min_positives} rows labelled {schema.target.positive!r}",
            )
        )
    if problems:
        raise DataValidationError(schema.name, problems)
    return ValidationReport(rows=len(frame), positives=positives, warnings=tolerated)
