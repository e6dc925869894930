"""A synthetic LendingClub-like loan book with a known ground truth and injectable drift.

A latent creditworthiness z ~ N(0, 1), which no model sees, drives the correlations among the
features. The probability of default is an explicit logistic function of the observed features
plus independent noise, so `pd_true` is known and every drift scenario has a testable meaning.
Grades come from fixed score cut-offs computed once on a no-drift reference draw, so a riskier
applicant pool gets a riskier grade mix. The vocabularies and the frame's schema are in
`loanops.data.synthetic_schema`, the default model and the underwriting score in
`loanops.data.synthetic_truth`, the drift scenarios in `loanops.data.synthetic_drift`; the
calibration to the real LendingClub 2016Q1 extract (modeldata/lending_club) is checked by
`tests/data/test_synthetic_contract.py`.

Generation is vectorised numpy in chunks seeded by `SeedSequence(seed).spawn(k)`: the output is
deterministic for a given (seed, chunk_rows), and `write_parquet` keeps memory flat. Each variable
draws from its own stream, so a drifted frame is a paired counterfactual of the undrifted one with
the same seed: rows before the drift starts are identical.
"""

from __future__ import annotations

import json
import numbers
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from loanops.data import Dataset
from loanops.data.synthetic_drift import EMP_NULL_RATE, Drift
from loanops.data.synthetic_schema import (
    ADDR_STATES,
    EMP_LENGTHS,
    EMP_WEIGHTS,
    GRADES,
    HOME_OWNERSHIPS,
    PROTECTED_GROUPS,
    PURPOSE_WEIGHTS,
    PURPOSES,
    REFERENCE_GRADE_MIX,
    SCHEMA,
    STATE_WEIGHTS,
    SUB_GRADES,
    TERMS,
    VERIFICATION_STATUSES,
    VERIFICATION_WEIGHTS,
)
from loanops.data.synthetic_truth import (
    DTI_COEF,
    INTERCEPT,
    LOGIT_NOISE_SD,
    default_logit,
    marginal_pd,
    purpose_effects,
    risk_score,
    sigmoid,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

GENERATOR_VERSION = "1.1.0"
"""Bump whenever a change alters the rows drawn for a given (rows, seed, drift, chunk_rows)."""

DEFAULT_ROWS = 100_000
DEFAULT_CHUNK_ROWS = 250_000
LABEL_DELAY_MONTHS = 12
"""`default` is observed this many months after `issue_d` (the performance window)."""

BASE_DEFAULT_RATE = 0.082
MINORITY_SHARE = 0.3
"""Share of applicants in the `protected_group` "minority", the fair-lending review segment."""

# Multinomial logit for home ownership against RENT, in (ln income - 11.1) and z; intercepts
# solved so that the no-drift mix is MORTGAGE .456, RENT .403, OWN .141.
_HOME_MORTGAGE = (0.13, 1.2, 0.3)
_HOME_OWN = (-0.98, 0.5, 0.1)

_REFERENCE_ROWS = 400_000
_REFERENCE_SEED = 20160101
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")

# One independent stream per draw: a knob that changes one variable's draws (a Poisson rate, say)
# then leaves every other draw untouched, and the first rows of a chunk do not depend on its size.
# Append new names; never reorder.
_STREAMS = (
    "time",
    "z",
    "income",
    "loan",
    "term",
    "fico",
    "dti",
    "revol",
    "delinq",
    "inq",
    "pub_rec",
    "open_acc",
    "total_acc",
    "home",
    "verification",
    "purpose",
    "purpose_other",
    "state",
    "emp",
    "emp_code",
    "grade",
    "rate",
    "default_noise",
    "default",
    "group",
)


def _cumulative(weights: Mapping[str, float] | tuple[float, ...]) -> FloatArray:
    values = np.asarray(list(weights.values()) if isinstance(weights, Mapping) else weights)
    cumulative = np.cumsum(values) / values.sum()
    cumulative[-1] = 1.0
    return cumulative


def _categorical(rng: np.random.Generator, cumulative: FloatArray, n: int) -> IntArray:
    return np.searchsorted(cumulative, rng.random(n), side="right").astype(np.int64)


def _round_to(x: FloatArray, step: float) -> FloatArray:
    return np.round(x / step) * step


def _applicants(
    n: int,
    lam: FloatArray,
    drift: Drift,
    rng: Mapping[str, np.random.Generator],
    proxy_effect: float = 0.0,
) -> dict[str, npt.NDArray[np.generic]]:
    """Draw the applicants' features (everything before underwriting) as numpy columns."""
    minority = rng["group"].random(n) < MINORITY_SHARE
    # The proxy effect: the minority's creditworthiness sits lower, so every feature it drives
    # (score, debt, utilisation, income) carries group membership into the model's inputs.
    z = rng["z"].standard_normal(n) + lam * drift.z_shift - proxy_effect * minority

    log_inc = 11.1 + 0.1 * z + 0.55 * rng["income"].standard_normal(n)
    income = np.clip(_round_to(np.exp(log_inc), 100.0), 4_000.0, 2_000_000.0)
    loan_mean = 9.45 + 0.45 * (log_inc - 11.1)
    loan = np.clip(
        _round_to(np.exp(loan_mean + 0.6 * rng["loan"].standard_normal(n)), 25.0), 1_000.0, 40_000.0
    )
    term60 = rng["term"].random(n) < sigmoid(-0.8 + 1.2 * (np.log(loan) - 9.6))

    fico_true = np.clip(
        _round_to(700.0 + 35.0 * z + 12.0 * rng["fico"].standard_normal(n), 5.0), 660.0, 845.0
    )
    fico = np.clip(_round_to(fico_true + lam * drift.fico_shift, 5.0), 660.0, 845.0)
    dti = np.clip(
        np.round(rng["dti"].gamma(4.0, 4.7, n) - 2.0 * z + lam * drift.dti_shift, 2), 0.0, 60.0
    )
    revol = np.clip(np.round(100.0 * rng["revol"].beta(2.0, 2.2, n) - 8.0 * z, 1), 0.0, 150.0)
    delinq = rng["delinq"].poisson(np.exp(-1.7 - 0.4 * z))
    inq = rng["inq"].poisson(np.exp(-0.6 - 0.3 * z))
    pub_rec = rng["pub_rec"].poisson(0.12, n)
    open_acc = 1 + rng["open_acc"].poisson(10.5, n)
    total_acc = open_acc + rng["total_acc"].poisson(11.0, n)

    centred_inc = log_inc - 11.1
    mortgage_odds = np.exp(
        _HOME_MORTGAGE[0] + _HOME_MORTGAGE[1] * centred_inc + _HOME_MORTGAGE[2] * z
    )
    own_odds = np.exp(_HOME_OWN[0] + _HOME_OWN[1] * centred_inc + _HOME_OWN[2] * z)
    total_odds = 1.0 + mortgage_odds + own_odds
    u = rng["home"].random(n)
    home = np.where(
        u < mortgage_odds / total_odds, 0, np.where(u < (mortgage_odds + 1.0) / total_odds, 1, 2)
    )

    verification = _categorical(rng["verification"], _cumulative(VERIFICATION_WEIGHTS), n)

    # small_business first with its (possibly drifted) probability, otherwise another purpose.
    small_biz = PURPOSES.index("small_business")
    base_share = PURPOSE_WEIGHTS["small_business"]
    odds = base_share / (1.0 - base_share) * (1.0 + lam * (drift.small_biz_mult - 1.0))
    others = {p: w for p, w in PURPOSE_WEIGHTS.items() if p != "small_business"}
    other_codes = np.array([PURPOSES.index(p) for p in others])
    is_small_biz = rng["purpose"].random(n) < odds / (1.0 + odds)
    other = other_codes[_categorical(rng["purpose_other"], _cumulative(others), n)]
    purpose = np.where(is_small_biz, small_biz, other)

    state = _categorical(rng["state"], _cumulative(tuple(STATE_WEIGHTS[s] for s in ADDR_STATES)), n)

    null_rate = EMP_NULL_RATE + lam * (drift.emp_null_drift - EMP_NULL_RATE)
    emp_null = rng["emp"].random(n) < null_rate
    emp = np.where(emp_null, -1, _categorical(rng["emp_code"], _cumulative(EMP_WEIGHTS), n))

    return {
        "loan": loan,
        "term60": term60,
        "income_true": income,
        "income": np.round(income * (1.0 + lam * (drift.income_mult - 1.0)), 2),
        "fico_true": fico_true,
        "fico": fico,
        "dti": dti,
        "revol": revol,
        "delinq": delinq,
        "inq": inq,
        "pub_rec": pub_rec,
        "open_acc": open_acc,
        "total_acc": total_acc,
        "home": home,
        "verification": verification,
        "purpose": purpose,
        "state": state,
        "emp": emp,
        "minority": minority,
    }


def _streams(seed_sequence: np.random.SeedSequence) -> dict[str, np.random.Generator]:
    children = seed_sequence.spawn(len(_STREAMS))
    return {
        name: np.random.default_rng(child) for name, child in zip(_STREAMS, children, strict=True)
    }


def _as_float(x: npt.NDArray[np.generic]) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


def _ground_truth_eta(
    a: Mapping[str, npt.NDArray[np.generic]], dti_coef: float | FloatArray
) -> FloatArray:
    """The noise-free default logit of drawn applicants, from their true features."""
    home = a["home"]
    return default_logit(
        fico=_as_float(a["fico_true"]),
        dti=_as_float(a["dti"]),
        term60=_as_float(a["term60"]),
        inq=_as_float(a["inq"]),
        delinq=_as_float(a["delinq"]),
        pub_rec=_as_float(a["pub_rec"]),
        loan=_as_float(a["loan"]),
        income=_as_float(a["income_true"]),
        revol=_as_float(a["revol"]),
        rent=_as_float(home == 1),
        mortgage=_as_float(home == 0),
        verified=_as_float(a["verification"] == 2),
        purpose_effect=purpose_effects(PURPOSES)[np.asarray(a["purpose"], dtype=np.int64)],
        dti_coef=dti_coef,
    )


def _reference_applicants() -> tuple[dict[str, npt.NDArray[np.generic]], FloatArray]:
    """A no-drift draw and its underwriting scores, for cut-offs and calibration."""
    rng = _streams(np.random.SeedSequence(_REFERENCE_SEED))
    n = _REFERENCE_ROWS
    lam = np.zeros(n)
    applicants = _applicants(n, lam, Drift(), rng)
    score = risk_score(
        _as_float(applicants["fico"]),
        _as_float(applicants["dti"]),
        _as_float(applicants["inq"]),
        _as_float(applicants["term60"]),
        rng["grade"].standard_normal(n),
    )
    return applicants, score


@cache
def _sub_grade_cutoffs() -> FloatArray:
    """The 34 fixed score cut-offs between sub-grades A1..G5, from the no-drift reference draw.

    Each grade's reference share is split evenly over its five sub-grades.
    """
    _, score = _reference_applicants()
    shares = np.repeat(np.array(list(REFERENCE_GRADE_MIX.values())) / 5.0, 5)
    levels = np.cumsum(shares)[:-1]
    return np.quantile(score, levels)


def _solve_intercept(
    target_rate: float, rows: int = 1_000_000, seed: int = _REFERENCE_SEED
) -> float:
    """The intercept b0 at which the mean no-drift pd_true equals `target_rate`, by bisection."""
    rng = _streams(np.random.SeedSequence(seed))
    applicants = _applicants(rows, np.zeros(rows), Drift(), rng)
    eta_without_b0 = _ground_truth_eta(applicants, DTI_COEF) - INTERCEPT
    low, high = -10.0, 5.0
    for _ in range(60):
        middle = (low + high) / 2.0
        if marginal_pd(eta_without_b0 + middle).mean() < target_rate:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def _month_labels(start_month: str, count: int) -> npt.NDArray[np.object_]:
    match = _MONTH.match(start_month)
    if match is None:
        raise ValueError(f"start_month must look like 'YYYY-MM', got {start_month!r}")
    first = int(match.group(1)) * 12 + int(match.group(2)) - 1
    return np.array(
        [f"{(first + i) // 12:04d}-{(first + i) % 12 + 1:02d}" for i in range(count)], dtype=object
    )


def _labels(values: tuple[str, ...]) -> npt.NDArray[np.object_]:
    return np.array(values, dtype=object)


def _draw_chunk(
    seed_sequence: np.random.SeedSequence,
    first_row: int,
    n: int,
    rows: int,
    drift: Drift,
    months: int,
    month_labels: npt.NDArray[np.object_],
    proxy_effect: float,
) -> pd.DataFrame:
    rng = _streams(seed_sequence)
    index = np.arange(first_row, first_row + n, dtype=np.int64)
    # Jittered stratified positions: uniform on [0, 1] and sorted without a global sort.
    t = (index + rng["time"].random(n)) / rows
    month = np.minimum((t * months).astype(np.int64), months - 1)
    lam = drift.weight(t)

    a = _applicants(n, lam, drift, rng, proxy_effect)
    fico, dti, inq = _as_float(a["fico"]), _as_float(a["dti"]), _as_float(a["inq"])
    term60 = np.asarray(a["term60"], dtype=np.bool_)

    score = risk_score(fico, dti, inq, term60.astype(np.float64), rng["grade"].standard_normal(n))
    sub_grade = np.searchsorted(_sub_grade_cutoffs(), score, side="right")
    base_rate = 5.32 + (28.99 - 5.32) * sub_grade / (len(SUB_GRADES) - 1)
    int_rate = np.clip(np.round(base_rate + 0.25 * rng["rate"].standard_normal(n), 2), 5.0, 31.0)
    payments = np.where(term60, 60.0, 36.0)
    monthly_rate = int_rate / 1200.0
    loan = _as_float(a["loan"])
    installment = np.round(loan * monthly_rate / (1.0 - (1.0 + monthly_rate) ** -payments), 2)

    dti_coef = DTI_COEF * (1.0 + lam * (drift.dti_coef_mult - 1.0))
    eta = _ground_truth_eta(a, dti_coef) + lam * drift.macro_logit
    noise = LOGIT_NOISE_SD * rng["default_noise"].standard_normal(n)
    default = rng["default"].random(n) < sigmoid(eta + noise)

    emp_labels = np.array([*EMP_LENGTHS, None], dtype=object)  # code -1 picks None
    columns: dict[str, npt.ArrayLike] = {
        "id": index,
        "issue_d": month_labels[month],
        "label_available_d": month_labels[month + LABEL_DELAY_MONTHS],
        "loan_amnt": loan.astype(np.int64),
        "term": _labels(TERMS)[term60.astype(np.int64)],
        "int_rate": int_rate,
        "installment": installment,
        "grade": _labels(GRADES)[sub_grade // 5],
        "sub_grade": _labels(SUB_GRADES)[sub_grade],
        "emp_length": emp_labels[np.asarray(a["emp"], dtype=np.int64)],
        "home_ownership": _labels(HOME_OWNERSHIPS)[np.asarray(a["home"], dtype=np.int64)],
        "annual_inc": _as_float(a["income"]),
        "verification_status": _labels(VERIFICATION_STATUSES)[
            np.asarray(a["verification"], dtype=np.int64)
        ],
        "purpose": _labels(PURPOSES)[np.asarray(a["purpose"], dtype=np.int64)],
        "addr_state": _labels(ADDR_STATES)[np.asarray(a["state"], dtype=np.int64)],
        "dti": dti,
        "fico_range_low": fico.astype(np.int64),
        "revol_util": _as_float(a["revol"]),
        "delinq_2yrs": np.asarray(a["delinq"], dtype=np.int64),
        "inq_last_6mths": inq.astype(np.int64),
        "pub_rec": np.asarray(a["pub_rec"], dtype=np.int64),
        "open_acc": np.asarray(a["open_acc"], dtype=np.int64),
        "total_acc": np.asarray(a["total_acc"], dtype=np.int64),
        "protected_group": _labels(PROTECTED_GROUPS)[np.asarray(a["minority"], dtype=np.int64)],
        "default": default.astype(np.int8),
        "pd_true": marginal_pd(eta),
    }
    return pd.DataFrame(columns, index=pd.RangeIndex(first_row, first_row + n))


def _chunks(
    rows: int,
    seed: int,
    drift: Drift | None,
    months: int,
    start_month: str,
    chunk_rows: int,
    proxy_effect: float = 0.0,
) -> Iterator[pd.DataFrame]:
    """The chunks of a draw, lazily; the arguments are checked before this returns."""
    if isinstance(rows, bool) or not isinstance(rows, numbers.Integral) or rows < 0:
        raise ValueError(f"rows must be a non-negative integer, got {rows!r}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    if months < 1:
        raise ValueError(f"months must be positive, got {months}")
    if not 0 <= proxy_effect <= 3:
        raise ValueError(f"proxy_effect must be 0 to 3 standard deviations, got {proxy_effect}")
    month_labels = _month_labels(start_month, months + LABEL_DELAY_MONTHS)
    count = max(1, -(-rows // chunk_rows))
    seed_sequences = np.random.SeedSequence(seed).spawn(count)
    drift = drift or Drift()

    def draw() -> Iterator[pd.DataFrame]:
        for number, seed_sequence in enumerate(seed_sequences):
            first = number * chunk_rows
            n = min(chunk_rows, rows - first)
            yield _draw_chunk(
                seed_sequence, first, n, max(rows, 1), drift, months, month_labels, proxy_effect
            )

    return draw()


def generate(
    rows: int,
    seed: int = 0,
    drift: Drift | None = None,
    *,
    months: int = 36,
    start_month: str = "2016-01",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    proxy_effect: float = 0.0,
) -> pd.DataFrame:
    """Draw a synthetic loan book, sorted by issue date.

    Args:
        rows: number of loans.
        seed: seed of the whole draw; the output is deterministic for a given (seed, chunk_rows).
        drift: drift to inject; None for none.
        months: number of issue months covered, each with about rows / months loans.
        start_month: first issue month, "YYYY-MM".
        chunk_rows: rows drawn per chunk (each chunk has its own spawned seed).
        proxy_effect: how far, in standard deviations, the latent creditworthiness of the
            `protected_group` minority sits below the majority's. The features it drives then
            stand in for group membership, which the model never sees, and a model reading them
            approves the minority less: the disparate impact a fair-lending review looks for.
            0 (the default) leaves the groups alike; the majority's rows never change.

    Returns:
        A frame with the columns `synthetic_schema.COLUMNS`: `id`, `issue_d` and
        `label_available_d` ("YYYY-MM"), the `SCHEMA` features, `protected_group` (the
        fair-lending review segment, not a model input), the label `default` (int8) and
        `pd_true`: the ground-truth probability of default given the applicant's true features,
        with the logit noise integrated out. That is P(default | observed features) unless a
        drift makes the reported FICO or income differ from the true ones (`fico_shift`,
        `income_mult`).

    Raises:
        ValueError: for a negative row count, a non-positive chunk size or month count, a
            malformed start month, or a proxy effect outside 0 to 3.
    """
    frames = list(_chunks(rows, seed, drift, months, start_month, chunk_rows, proxy_effect))
    frame = frames[0] if len(frames) == 1 else pd.concat(frames)
    return frame.reset_index(drop=True)


def write_parquet(
    path: str | Path,
    rows: int,
    seed: int = 0,
    drift: Drift | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    *,
    months: int = 36,
    start_month: str = "2016-01",
) -> Path:
    """Write `generate(rows, seed, drift, ...)` as Parquet partitioned by `issue_d`, chunk by chunk.

    Only one chunk is in memory at a time. The folder gets hive partitions `issue_d=YYYY-MM/` and
    a `_generator.json` with the arguments and generator version (readers skip "_" files).
    Reading it back with `pd.read_parquet(path)` returns `issue_d` as a categorical column.

    Args:
        path: folder to create; it must not exist or be empty.
        rows: number of loans.
        seed: seed of the whole draw.
        drift: drift to inject; None for none.
        chunk_rows: rows drawn and written per chunk.
        months: number of issue months covered.
        start_month: first issue month, "YYYY-MM".

    Returns:
        The folder written.

    Raises:
        FileExistsError: when `path` exists and is not an empty folder.
    """
    import pyarrow as pa  # deferred: only writing needs pyarrow directly
    import pyarrow.parquet as pq

    root = Path(path)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} already exists and is not an empty folder")
    chunks = _chunks(rows, seed, drift, months, start_month, chunk_rows)
    root.mkdir(parents=True, exist_ok=True)
    for number, chunk in enumerate(chunks):
        if chunk.empty:
            continue
        pq.write_to_dataset(
            pa.Table.from_pandas(chunk, preserve_index=False),
            root_path=root,
            partition_cols=["issue_d"],
            basename_template=f"part-{number:05d}-{{i}}.parquet",
        )
    manifest = {
        "generator": __name__,
        "generator_version": GENERATOR_VERSION,
        "rows": rows,
        "seed": seed,
        "chunk_rows": chunk_rows,
        "months": months,
        "start_month": start_month,
        "drift": asdict(drift or Drift()),
    }
    (root / "_generator.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return root


def baseline_pd(frame: pd.DataFrame) -> FloatArray:
    """P(default | X) under the no-drift ground truth, from a frame's observed columns.

    This is the ideal model fitted before any drift: on undrifted rows it equals `pd_true`. On
    drifted rows the gap between it and the observed default rate is what a performance monitor
    sees once labels arrive.

    Args:
        frame: a frame with the `SCHEMA` feature columns.

    Returns:
        One probability per row.
    """
    effects = frame["purpose"].map(dict(zip(PURPOSES, purpose_effects(PURPOSES), strict=True)))
    eta = default_logit(
        fico=frame["fico_range_low"].to_numpy(np.float64),
        dti=frame["dti"].to_numpy(np.float64),
        term60=(frame["term"] == "60").to_numpy(np.float64),
        inq=frame["inq_last_6mths"].to_numpy(np.float64),
        delinq=frame["delinq_2yrs"].to_numpy(np.float64),
        pub_rec=frame["pub_rec"].to_numpy(np.float64),
        loan=frame["loan_amnt"].to_numpy(np.float64),
        income=frame["annual_inc"].to_numpy(np.float64),
        revol=frame["revol_util"].to_numpy(np.float64),
        rent=(frame["home_ownership"] == "RENT").to_numpy(np.float64),
        mortgage=(frame["home_ownership"] == "MORTGAGE").to_numpy(np.float64),
        verified=(frame["verification_status"] == "Verified").to_numpy(np.float64),
        purpose_effect=effects.to_numpy(np.float64),
    )
    return marginal_pd(eta)


def load(rows: int | None, seed: int) -> pd.DataFrame:
    """The dataset loader: `generate(rows, seed)`, no drift; `DEFAULT_ROWS` rows when None."""
    return generate(DEFAULT_ROWS if rows is None else rows, seed)


DATASET = Dataset(
    name="synthetic",
    schema=SCHEMA,
    loader=load,
    generated=True,
    default_rows=DEFAULT_ROWS,
    description=(
        "Synthetic LendingClub-like loans over 36 months from 2016-01, with a known ground truth "
        "(pd_true, about 8.2 % default) and injectable drift; for scale and monitoring tests."
    ),
    provenance={
        "source": "generated by loanops.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "design": "loanops.data.synthetic: a latent-creditworthiness generator calibrated to the "
        "real 2016Q1 extract (modeldata/lending_club)",
        "licence": "generated",
    },
)
