"""A logistic regression whose coefficients keep the signs credit policy declares.

Fed monotone increasing transforms of the raw features (impute, log1p, standardise), a
coefficient's sign is the direction the model's PD moves with that feature, all else held fixed.
Bounding it at zero from the wrong side therefore makes the model obey the schema's `risk` for
every applicant, not just on average. The rest of the platform sees a plain `LogisticRegression`:
`coef_`, `intercept_` and `decision_function` are the parent's, so calibration, the compiled
fast path and MLflow logging need nothing new.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import _check_sample_weight, validate_data

_BOUNDS = {1: (0.0, None), -1: (None, 0.0), 0: (None, None)}


class SignConstrainedLogisticRegression(LogisticRegression):
    """Binary L2-penalised logistic regression with sign-bounded coefficients.

    It minimises the objective scikit-learn's lbfgs solver does, C · Σ log-loss + ½‖w‖² with the
    intercept unpenalised, by L-BFGS-B under bounds: w_j ≥ 0 where `monotonic_cst[j]` is 1,
    w_j ≤ 0 where it is -1, free where it is 0. Without constraints it fits the same model as
    `LogisticRegression(C=C)`.

    Args:
        monotonic_cst: one entry per leading input column, as in
            `HistGradientBoostingClassifier`: 1 when the positive class's probability must not
            fall as the column grows, -1 when it must not rise, 0 for no constraint. Columns
            past its end (one-hot categories, say) are free.
        C: inverse regularisation strength.
        fit_intercept: whether to fit an (unpenalised) intercept.
        tol: the solver's tolerance on the projected gradient.
        max_iter: the solver's iteration budget.
    """

    _parameter_constraints: dict = {
        "monotonic_cst": ["array-like", None],
        "C": LogisticRegression._parameter_constraints["C"],
        "fit_intercept": ["boolean"],
        "tol": LogisticRegression._parameter_constraints["tol"],
        "max_iter": LogisticRegression._parameter_constraints["max_iter"],
    }

    def __init__(
        self,
        monotonic_cst: Sequence[int] | None = None,
        *,
        C: float = 1.0,
        fit_intercept: bool = True,
        tol: float = 1e-4,
        max_iter: int = 100,
    ) -> None:
        # The parent's other parameters (penalty, solver, class weights...) do not apply, so
        # they are not parameters here and get_params, clone and repr show only these.
        self.monotonic_cst = monotonic_cst
        self.C = C
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter

    def __sklearn_tags__(self) -> Any:
        # The parent's version reads `self.solver`, which this class does not have.
        return super(LogisticRegression, self).__sklearn_tags__()

    def bounds(self, n_features: int) -> list[tuple[float | None, float | None]]:
        """The solver's bounds on each coefficient, from `monotonic_cst`.

        Raises:
            ValueError: when `monotonic_cst` is longer than there are columns or holds a value
                other than -1, 0 and 1.
        """
        signs = [] if self.monotonic_cst is None else [int(s) for s in self.monotonic_cst]
        if len(signs) > n_features:
            raise ValueError(
                f"monotonic_cst has {len(signs)} entries for {n_features} input columns"
            )
        unknown = sorted(set(signs) - set(_BOUNDS))
        if unknown:
            raise ValueError(f"monotonic_cst values must be -1, 0 or 1, got {unknown}")
        return [_BOUNDS[s] for s in signs] + [_BOUNDS[0]] * (n_features - len(signs))

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> SignConstrainedLogisticRegression:
        """Fit the coefficients under their sign bounds.

        Args:
            X: (rows, columns) numbers.
            y: two classes; the second in sorted order is the positive one.
            sample_weight: optional per-row weights.

        Returns:
            self, fitted.

        Raises:
            ValueError: when `y` does not hold exactly two classes, or `monotonic_cst` is
                invalid.
        """
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=False)
        classes = np.unique(y)
        if len(classes) != 2:
            raise ValueError(f"expected two classes, got {len(classes)}: {classes!r}")
        n_features = X.shape[1]
        bounds = self.bounds(n_features)
        weights = _check_sample_weight(sample_weight, X, dtype=np.float64)
        positive = (y == classes[1]).astype(np.float64)
        # Dividing the objective by the total weight changes nothing but keeps its gradient at
        # a scale the solver's tolerances were written for.
        total = float(weights.sum())
        penalty = 1.0 / (self.C * total)

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w = theta[:n_features]
            b = theta[n_features] if self.fit_intercept else 0.0
            z = X @ w + b
            loss = float(weights @ (np.logaddexp(0.0, z) - positive * z)) / total
            residual = weights * (expit(z) - positive) / total
            gradient = np.empty_like(theta)
            gradient[:n_features] = X.T @ residual + penalty * w
            if self.fit_intercept:
                gradient[n_features] = residual.sum()
            return loss + 0.5 * penalty * float(w @ w), gradient

        start = np.zeros(n_features + int(self.fit_intercept))  # zero satisfies every bound
        result = minimize(
            objective,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds + ([(None, None)] if self.fit_intercept else []),
            # scikit-learn's own lbfgs options, so that unconstrained it stops where that does.
            options={
                "maxiter": self.max_iter,
                "maxls": 50,
                "gtol": self.tol,
                "ftol": 64 * np.finfo(float).eps,
            },
        )
        if not result.success:
            warnings.warn(
                f"L-BFGS-B did not converge in {result.nit} iterations: {result.message}",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.classes_ = classes
        self.coef_ = result.x[:n_features].reshape(1, -1)
        self.intercept_ = np.array([result.x[n_features] if self.fit_intercept else 0.0])
        self.n_iter_ = np.array([result.nit], dtype=np.int32)
        return self
