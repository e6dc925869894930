"""Drift scenarios for the synthetic loan book: what changes, from which row on, how fast.

`Drift` holds the knobs `loanops.data.synthetic.generate` applies; its constructors
(`covariate_shift`, `macro_shock`, ...) are the named scenarios in `PRESETS`. Each scenario has a
testable meaning because the generator's ground truth is known: a covariate shift moves the
features but not P(default | X), a macro shock the reverse.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
import numpy.typing as npt

RampKind = Literal["step", "linear"]

EMP_NULL_RATE = 0.08
"""Share of rows with no `emp_length` before any drift (where `emp_null_drift` starts from)."""


@dataclass(frozen=True)
class Drift:
    """Drift injected into the generated loans, ramped in over issue-date position t in [0, 1].

    Each knob is applied with weight λ(t): 0 before `start`, then 1 (`ramp="step"`) or rising
    linearly to 1 at the last row (`ramp="linear"`). `Drift()` is no drift.

    Attributes:
        z_shift: added to the latent creditworthiness z, so FICO, income, dti, utilisation and
            inquiries move together; P(default | X) is unchanged (covariate shift).
        fico_shift: added to the reported FICO only; risk follows the true score (score
            inflation, a concept drift).
        macro_logit: added to every loan's default logit (a recession; X unchanged).
        dti_coef_mult: multiplies the dti coefficient of the default logit (concept drift).
        emp_null_drift: target share of null `emp_length` (the no-drift share is 0.08).
        income_mult: multiplies the reported annual income only (a univariate drift; risk and
            loan amounts follow the true income).
        dti_shift: added to dti, in percentage points; risk and grade follow the shifted dti.
        small_biz_mult: multiplies the odds of the small_business purpose (a channel-mix change).
        ramp: how λ(t) rises after `start`.
        start: position t0 in [0, 1] at which the drift begins.
    """

    z_shift: float = 0.0
    fico_shift: float = 0.0
    macro_logit: float = 0.0
    dti_coef_mult: float = 1.0
    emp_null_drift: float = EMP_NULL_RATE
    income_mult: float = 1.0
    dti_shift: float = 0.0
    small_biz_mult: float = 1.0
    ramp: RampKind = "step"
    start: float = 0.5

    def __post_init__(self) -> None:
        for name in (
            "z_shift",
            "fico_shift",
            "macro_logit",
            "dti_coef_mult",
            "emp_null_drift",
            "income_mult",
            "dti_shift",
            "small_biz_mult",
            "start",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"Drift.{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"Drift.{name} must be finite, got {value!r}")
        if not 0.0 <= self.emp_null_drift <= 1.0:
            raise ValueError(
                f"Drift.emp_null_drift is a null rate in [0, 1], got {self.emp_null_drift}"
            )
        if not 0.0 <= self.start <= 1.0:
            raise ValueError(f"Drift.start is a position in [0, 1], got {self.start}")
        if self.dti_coef_mult < 0:
            raise ValueError(f"Drift.dti_coef_mult must be >= 0, got {self.dti_coef_mult}")
        if not 0.0 < self.income_mult <= 5.0:
            raise ValueError(f"Drift.income_mult must be in (0, 5], got {self.income_mult}")
        if self.small_biz_mult < 0:
            raise ValueError(f"Drift.small_biz_mult must be >= 0, got {self.small_biz_mult}")
        if self.ramp not in ("step", "linear"):
            raise ValueError(f"Drift.ramp must be 'step' or 'linear', got {self.ramp!r}")

    @property
    def is_active(self) -> bool:
        """Whether any knob differs from no drift (and the drift starts before the end)."""
        neutral = Drift(ramp=self.ramp, start=self.start)
        return self != neutral and self.start < 1.0

    def weight(self, t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The ramp λ(t) in [0, 1] at positions `t`.

        Args:
            t: issue-date positions in [0, 1].

        Returns:
            λ(t), an array shaped like `t`.
        """
        t = np.asarray(t, dtype=np.float64)
        if self.ramp == "step":
            return (t >= self.start).astype(np.float64)
        if self.start >= 1.0:
            return np.zeros_like(t)
        return np.clip((t - self.start) / (1.0 - self.start), 0.0, 1.0)

    @classmethod
    def covariate_shift(cls, *, ramp: RampKind = "step", start: float = 0.5) -> Drift:
        """A riskier applicant pool (z_shift = -0.5); P(default | X) is unchanged."""
        return cls(z_shift=-0.5, ramp=ramp, start=start)

    @classmethod
    def score_inflation(cls, *, ramp: RampKind = "step", start: float = 0.5) -> Drift:
        """Reported FICO rises by 30 points while risk does not."""
        return cls(fico_shift=30.0, ramp=ramp, start=start)

    @classmethod
    def macro_shock(cls, *, ramp: RampKind = "step", start: float = 0.5) -> Drift:
        """A recession: +0.8 on every default logit, features unchanged."""
        return cls(macro_logit=0.8, ramp=ramp, start=start)

    @classmethod
    def coefficient_change(cls, *, ramp: RampKind = "step", start: float = 0.5) -> Drift:
        """dti matters four times as much to default; features unchanged."""
        return cls(dti_coef_mult=4.0, ramp=ramp, start=start)

    @classmethod
    def missingness_spike(cls, *, ramp: RampKind = "step", start: float = 0.5) -> Drift:
        """The `emp_length` null rate rises from 8 % to 40 %."""
        return cls(emp_null_drift=0.40, ramp=ramp, start=start)

    @classmethod
    def preset(cls, name: str, *, ramp: RampKind = "step", start: float = 0.5) -> Drift:
        """A named drift scenario, one of `PRESETS`.

        Args:
            name: the scenario, e.g. "macro_shock".
            ramp: how the drift rises after `start`.
            start: position t0 in [0, 1] at which the drift begins.

        Raises:
            ValueError: for an unknown name.
        """
        if name not in _PRESET_FACTORIES:
            raise ValueError(f"unknown drift preset {name!r}; choose one of: {', '.join(PRESETS)}")
        return _PRESET_FACTORIES[name](ramp=ramp, start=start)


_PRESET_FACTORIES: Mapping[str, Callable[..., Drift]] = MappingProxyType(
    {
        "covariate_shift": Drift.covariate_shift,
        "score_inflation": Drift.score_inflation,
        "macro_shock": Drift.macro_shock,
        "coefficient_change": Drift.coefficient_change,
        "missingness_spike": Drift.missingness_spike,
    }
)
PRESETS = tuple(_PRESET_FACTORIES)
"""Names of the drift scenarios, for `Drift.preset`."""
