"""Test inputs shared by every tier: applicants, small frames, corruptors and scored samples.

Tests import these (`from tests.factories import ...`) rather than writing their own rows, so a
schema change is absorbed here once. Every builder returns a fresh object that the caller may
mutate freely.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from loanops.data import load_dataset
from loanops.data import synthetic as syn
from loanops.data.lending_club import SCHEMA as LENDING_CLUB
from loanops.decisions.record import Decision
from loanops.decisions.table import UTCDateTime
from loanops.promotion import GatePolicy, GateScores
from loanops.schema import Feature, FeatureSchema, Target
from loanops.settings import GateSettings

__all__ = [
    "DECIDED_FROM",
    "LENDING_CLUB",
    "TINY",
    "applicants_frame",
    "calibrated_scores",
    "cast_column",
    "drop_column",
    "gate_policy",
    "gate_scores",
    "keep_positives",
    "lending_club_applicant",
    "lending_club_frame",
    "lending_club_sample",
    "make_decision",
    "make_decisions",
    "risky_applicant",
    "safe_applicant",
    "set_values",
    "tiny_frame",
]

# --- lending_club applicants ------------------------------------------------------------------

_TYPICAL_APPLICANT: dict[str, Any] = {
    "funded_amnt": 15_000,
    "term": "term_36",
    "int_rate": 11.99,
    "sub_grade": "C1",
    "addr_state": "CA",
    "verification_status": "Source_Verified",
    "annual_inc": 70_000.0,
    "emp_length": "emp_5",
    "delinq_2yrs": 0,
    "inq_last_6mths": 0,
    "revol_util": 50.0,
    "acc_now_delinq": 0,
    "open_il_6m": 2,
    "open_il_12m": 1,
    "open_il_24m": 1,
    "total_bal_il": 25_000,
    "all_util": 60,
    "inq_fi": 1,
    "inq_last_12m": 2,
    "delinq_amnt": 0,
    "num_il_tl": 7,
    "total_il_high_credit_limit": 35_000,
    "Class": "good",
}
"""Close to the median loan of the 2016Q1 extract, with its sub-grade's usual rate."""


def lending_club_applicant(**overrides: Any) -> dict[str, Any]:
    """A valid lending_club row (features and `Class`), typical unless overridden.

    Raises:
        KeyError: for an override that is not a column, so a typo cannot pass silently.
    """
    unknown = sorted(set(overrides) - set(_TYPICAL_APPLICANT))
    if unknown:
        raise KeyError(f"not lending_club columns: {unknown}")
    return {**_TYPICAL_APPLICANT, **overrides}


DECIDED_FROM = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
"""When `make_decision(0)` was decided."""


def make_decision(
    i: int,
    *,
    start: datetime = DECIDED_FROM,
    step: timedelta = timedelta(seconds=1),
    **overrides: Any,
) -> Decision:
    """Decision number `i` (request id ``req-<i>``), `step` after number `i - 1`.

    Its inputs are a typical lending_club applicant with the amounts varied by `i`.
    """
    inputs = lending_club_applicant(funded_amnt=1_000 + i, annual_inc=50_000.0 + i)
    del inputs["Class"]
    probability = (i % 97) / 97
    fields: dict[str, Any] = {
        "request_id": f"req-{i:06d}",
        "decided_at": start + i * step,
        "model_name": "loan-default",
        "model_version": "3",
        "threshold": 0.2,
        "inputs": inputs,
        "probability": probability,
        "decision": "decline" if probability >= 0.2 else "approve",
        "reasons": [{"code": "int_rate", "text": "Interest rate is high", "impact": 0.05 * i}],
    }
    return Decision(**(fields | overrides))


OUTCOMES_DECIDED_FROM = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
"""When the decisions of the outcome tests start: well before their outcomes are observed."""
OBSERVED = datetime(2026, 6, 1, tzinfo=UTC)
"""When the outcome tests' loans are seen to default or not."""


_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
DECISIONS_BEFORE_0004 = sa.table(
    "decisions",
    sa.column("request_id", sa.String()),
    sa.column("decided_at", UTCDateTime()),
    sa.column("model_name", sa.String()),
    sa.column("model_version", sa.String()),
    sa.column("threshold", sa.Double()),
    sa.column("inputs", _JSON),
    sa.column("probability", sa.Double()),
    sa.column("decision", sa.String()),
    sa.column("reasons", _JSON),
    sa.column("source", sa.String()),
    sa.column("job_id", sa.String()),
)
"""The ``decisions`` table as revisions 0001 to 0003 made it: every field, inputs as JSON."""


def outcome_decision(i: int, **overrides: Any) -> Decision:
    """Decision number `i` of the outcome tests, one hour after number `i - 1`.

    Its inputs are small and hold a null (`emp_length`), as a real request's may.
    """
    fields: dict[str, Any] = {
        "inputs": {"loan_amnt": 1_000 + i, "term": "36", "emp_length": None},
        "reasons": [],
    }
    return make_decision(
        i, start=OUTCOMES_DECIDED_FROM, step=timedelta(hours=1), **(fields | overrides)
    )


def request_id_of(i: int) -> str:
    """The request id of `make_decision(i)` and `outcome_decision(i)`."""
    return f"req-{i:06d}"


def make_decisions(n: int, start: int = 0, **overrides: Any) -> list[Decision]:
    """Decisions number `start` to `start + n - 1`."""
    return [make_decision(i, **overrides) for i in range(start, start + n)]


def synthetic_applications(rows: int, seed: int = 7) -> list[dict[str, Any]]:
    """Synthetic applications as a client sends them (features only, null where missing),
    from the safest to the riskiest by the generator's true probability of default."""
    frame = syn.generate(rows, seed=seed).sort_values("pd_true")
    features = syn.SCHEMA.to_frame(frame)
    return [
        {name: _json_value(value) for name, value in record.items()}
        for record in features.to_dict(orient="records")
    ]


def _json_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def safe_applicant(**overrides: Any) -> dict[str, Any]:
    """A clearly safe borrower: A1 at the A1 rate, high income, clean and unstretched file."""
    safe: dict[str, Any] = {
        "funded_amnt": 5_000,
        "term": "term_36",
        "int_rate": 5.32,
        "sub_grade": "A1",
        "annual_inc": 250_000.0,
        "emp_length": "emp_ge_10",
        "delinq_2yrs": 0,
        "inq_last_6mths": 0,
        "revol_util": 8.0,
        "open_il_6m": 0,
        "open_il_12m": 0,
        "open_il_24m": 0,
        "total_bal_il": 0,
        "all_util": 15,
        "inq_fi": 0,
        "inq_last_12m": 0,
        "num_il_tl": 2,
        "total_il_high_credit_limit": 10_000,
    }
    return lending_club_applicant(**{**safe, **overrides})


def risky_applicant(**overrides: Any) -> dict[str, Any]:
    """A clearly risky borrower: G5 at the G5 rate, low income, delinquent, credit-hungry."""
    risky: dict[str, Any] = {
        "funded_amnt": 35_000,
        "term": "term_60",
        "int_rate": 28.99,
        "sub_grade": "G5",
        "verification_status": "Verified",
        "annual_inc": 22_000.0,
        "emp_length": "emp_lt_1",
        "delinq_2yrs": 3,
        "inq_last_6mths": 5,
        "revol_util": 95.0,
        "open_il_6m": 8,
        "open_il_12m": 4,
        "open_il_24m": 6,
        "total_bal_il": 60_000,
        "all_util": 95,
        "inq_fi": 6,
        "inq_last_12m": 12,
        "num_il_tl": 20,
        "total_il_high_credit_limit": 70_000,
    }
    return lending_club_applicant(**{**risky, **overrides})


def applicants_frame(*rows: dict[str, Any], schema: FeatureSchema = LENDING_CLUB) -> pd.DataFrame:
    """Rows as a frame whose feature columns carry the schema's pandas dtypes."""
    frame = pd.DataFrame(list(rows))
    present = {name: dtype for name, dtype in schema.pandas_dtypes().items() if name in frame}
    return frame.astype(present)


# --- the real dataset -------------------------------------------------------------------------


@cache
def _lending_club() -> pd.DataFrame:
    return load_dataset("lending_club").frame


def lending_club_frame() -> pd.DataFrame:
    """The full lending_club frame (9,857 rows), loaded once per process and copied per call."""
    return _lending_club().copy()


def lending_club_sample(rows: int, seed: int = 0) -> pd.DataFrame:
    """A seeded random subsample of lending_club with a fresh RangeIndex."""
    return _lending_club().sample(n=rows, random_state=seed).reset_index(drop=True)


# --- a tiny schema with every kind of feature -------------------------------------------------

TINY = FeatureSchema(
    name="tiny",
    target=Target(name="defaulted", positive=1, negative=0),
    features=(
        Feature(name="amount", kind="int", minimum=100, maximum=10_000, description="Amount."),
        Feature(name="rate", kind="float", minimum=0, maximum=30, description="Rate, percent."),
        Feature(
            name="late_payments",
            kind="int",
            minimum=0,
            maximum=50,
            nullable=True,
            description="Late payments; null when unknown.",
        ),
        Feature(
            name="grade",
            kind="category",
            categories=("A", "B", "C"),
            description="Grade.",
        ),
        Feature(
            name="tenure",
            kind="category",
            categories=("short", "long"),
            nullable=True,
            description="Tenure; null when unknown.",
        ),
    ),
)
"""A small schema covering int, float, nullable int, category and nullable category."""


def tiny_frame(rows: int = 400, seed: int = 0, *, positive_share: float = 0.2) -> pd.DataFrame:
    """A valid frame for `TINY`, with some nulls in its nullable columns.

    The label depends on `rate` and `grade`, so a model fitted on it has something to learn.
    """
    rng = np.random.default_rng(seed)
    grade = rng.choice(np.array(["A", "B", "C"], dtype=object), rows)
    rate = np.round(rng.uniform(5, 25, rows), 2)
    late = rng.integers(0, 5, rows).astype(np.float64)
    late[rng.random(rows) < 0.1] = np.nan
    tenure = rng.choice(np.array(["short", "long"], dtype=object), rows)
    tenure[rng.random(rows) < 0.1] = None
    risk = (rate - 5) / 20 + (grade == "C") * 0.3
    cutoff = np.quantile(risk, 1 - positive_share)
    return pd.DataFrame(
        {
            "amount": rng.integers(100, 10_001, rows),
            "rate": rate,
            "late_payments": late,
            "grade": grade,
            "tenure": tenure,
            "defaulted": (risk > cutoff).astype(np.int64),
        }
    )


# --- corruptors -------------------------------------------------------------------------------


def set_values(frame: pd.DataFrame, column: str, value: Any, rows: int) -> pd.DataFrame:
    """A copy of `frame` with `column` set to `value` in its first `rows` rows."""
    corrupted = frame.copy()
    dtype = corrupted[column].dtype
    if (value is None or isinstance(value, str)) and not pd.api.types.is_object_dtype(dtype):
        corrupted[column] = corrupted[column].astype(object)  # a mixed column, as a bad file has
    elif isinstance(value, float) and pd.api.types.is_integer_dtype(dtype):
        corrupted[column] = corrupted[column].astype(np.float64)
    corrupted.loc[corrupted.index[:rows], column] = value
    return corrupted


def cast_column(frame: pd.DataFrame, column: str, dtype: Any) -> pd.DataFrame:
    """A copy of `frame` with `column` cast to `dtype`."""
    return frame.astype({column: dtype})


def drop_column(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """A copy of `frame` without `column`."""
    return frame.drop(columns=[column])


def keep_positives(frame: pd.DataFrame, schema: FeatureSchema, positives: int) -> pd.DataFrame:
    """A copy of `frame` in which only the first `positives` defaults keep their label."""
    target = schema.target
    relabelled = frame.copy()
    is_positive = (relabelled[target.name] == target.positive).to_numpy()
    demote = np.flatnonzero(is_positive)[positives:]
    relabelled.loc[relabelled.index[demote], target.name] = target.negative
    return relabelled


# --- scores and gate inputs -------------------------------------------------------------------


def calibrated_scores(
    rows: int, seed: int, *, low: float = 0.01, high: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from their own scores, so `p` is perfectly calibrated: (y, p)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(low, high, rows)
    y = (rng.random(rows) < p).astype(np.int64)
    return y, p


def gate_policy(**overrides: Any) -> GatePolicy:
    """The promotion policy of a default `Settings`, unless overridden."""
    gate = GateSettings()
    values = {
        "min_auc": gate.min_auc,
        "max_ece": gate.max_ece,
        "auc_tolerance": gate.auc_tolerance,
        "max_calibration_z": gate.max_calibration_z,
        "min_gate_positives": gate.min_gate_positives,
        "min_adverse_impact_ratio": gate.min_adverse_impact_ratio,
        "adverse_impact_tolerance": gate.adverse_impact_tolerance,
        **overrides,
    }
    return GatePolicy(**values)


def gate_scores(
    roc_auc: float = 0.75,
    ece: float = 0.02,
    version: str = "2",
    *,
    mean_pd: float = 0.05,
    default_rate: float = 0.05,
    rows: int = 2000,
    positives: int = 100,
    pd_variance: float | None = None,
) -> GateScores:
    """A model version's gate metrics, passing the default floors unless overridden."""
    return GateScores(
        version=version,
        roc_auc=roc_auc,
        ece=ece,
        mean_pd=mean_pd,
        default_rate=default_rate,
        rows=rows,
        positives=positives,
        # Every loan at the mean PD: the largest variance a given mean allows.
        pd_variance=mean_pd * (1 - mean_pd) if pd_variance is None else pd_variance,
    )
