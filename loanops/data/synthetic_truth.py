"""The synthetic loan book's ground truth: the default model, and the lender's underwriting score.

P(default) is an explicit logistic function of a loan's *true* features (before any reporting
drift) plus independent N(0, 0.3²) noise on the logit, so `pd_true` is known exactly;
`loanops.data.synthetic` draws the applicants and applies these. The underwriting score decides
the grade; it sees the *reported* features, as a lender would.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# The intercept sets the no-drift default rate: bisection (`_solve_intercept` in
# loanops.data.synthetic) for BASE_DEFAULT_RATE over 1M no-drift rows (seed 20160101) gives
# -3.3398; tests/unit/test_synthetic.py re-solves it on a smaller draw.
INTERCEPT = -3.34
DTI_COEF = 0.02
LOGIT_NOISE_SD = 0.3
# E[sigmoid(eta + N(0, s^2))] ~= sigmoid(eta / sqrt(1 + pi s^2 / 8)) (probit approximation).
_MARGINAL_SCALE = 1.0 / math.sqrt(1.0 + math.pi * LOGIT_NOISE_SD**2 / 8.0)

PURPOSE_EFFECTS: Mapping[str, float] = MappingProxyType(
    {
        "small_business": 0.6,
        "moving": 0.3,
        "medical": 0.25,
        "other": 0.2,
        "debt_consolidation": 0.1,
        "credit_card": -0.1,
        "home_improvement": -0.1,
        "car": -0.2,
    }
)
"""Added to the default logit by loan purpose; any other purpose adds nothing."""


def sigmoid(x: FloatArray) -> FloatArray:
    """The logistic function, via tanh so that large |x| never overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def purpose_effects(purposes: tuple[str, ...]) -> FloatArray:
    """Each purpose's term of the default logit, in the order of `purposes`."""
    return np.array([PURPOSE_EFFECTS.get(p, 0.0) for p in purposes])


def default_logit(
    *,
    fico: FloatArray,
    dti: FloatArray,
    term60: FloatArray,
    inq: FloatArray,
    delinq: FloatArray,
    pub_rec: FloatArray,
    loan: FloatArray,
    income: FloatArray,
    revol: FloatArray,
    rent: FloatArray,
    mortgage: FloatArray,
    verified: FloatArray,
    purpose_effect: FloatArray,
    dti_coef: float | FloatArray = DTI_COEF,
) -> FloatArray:
    """The ground-truth default logit without its noise term."""
    return (
        INTERCEPT
        - 0.018 * (fico - 700.0)
        + dti_coef * (dti - 18.0)
        + 0.45 * term60
        + 0.12 * inq
        + 0.15 * delinq
        + 0.25 * pub_rec
        + 0.35 * np.log(10.0 * loan / income)
        + 0.005 * (revol - 50.0)
        + 0.25 * rent
        - 0.10 * mortgage
        + 0.15 * verified
        + purpose_effect
    )


def marginal_pd(eta: FloatArray) -> FloatArray:
    """P(default) given the noise-free logit, the independent N(0, 0.3²) noise integrated out."""
    return sigmoid(eta * _MARGINAL_SCALE)


def risk_score(
    fico: FloatArray, dti: FloatArray, inq: FloatArray, term60: FloatArray, noise: FloatArray
) -> FloatArray:
    """The lender's underwriting score: higher is riskier."""
    return -(fico - 700.0) / 35.0 + 0.03 * (dti - 18.0) + 0.15 * inq + 0.2 * term60 + 0.6 * noise
