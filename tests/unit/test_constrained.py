"""The sign-constrained logistic regression: scikit-learn's fit when free, bounded signs if not."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from loanops.constrained import SignConstrainedLogisticRegression


def relation_data(rows: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three standardised columns: risk rises with the first, falls with the second; the third
    is noise that a one-hot column would be."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, 3))
    logit = -2.0 + 0.8 * X[:, 0] - 0.5 * X[:, 1]
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_without_constraints_it_fits_what_logistic_regression_fits(C: float) -> None:
    X, y = relation_data()
    expected = LogisticRegression(C=C, max_iter=2000).fit(X, y)
    fitted = SignConstrainedLogisticRegression(C=C, max_iter=2000).fit(X, y)
    np.testing.assert_allclose(fitted.coef_, expected.coef_, atol=1e-6)
    np.testing.assert_allclose(fitted.intercept_, expected.intercept_, atol=1e-6)
    np.testing.assert_allclose(fitted.predict_proba(X), expected.predict_proba(X), atol=1e-7)


def test_constraints_the_data_agrees_with_change_nothing() -> None:
    X, y = relation_data()
    # A tight tolerance: the bounds change the solver's path, not where it ends.
    free = SignConstrainedLogisticRegression(C=1.0, tol=1e-10).fit(X, y)
    bound = SignConstrainedLogisticRegression([1, -1], C=1.0, tol=1e-10).fit(X, y)
    np.testing.assert_allclose(bound.coef_, free.coef_, atol=1e-6)


def test_a_constraint_against_the_data_pins_its_coefficient_at_zero() -> None:
    X, y = relation_data()
    fitted = SignConstrainedLogisticRegression([-1, 1, 0], C=1.0).fit(X, y)
    first, second, free = fitted.coef_[0]
    assert first == 0.0 and second == 0.0  # at the bound exactly, so the PD is flat in them
    assert free != 0.0  # an unconstrained column is still fitted
    assert list(fitted.classes_) == [0, 1]


def test_labels_need_not_be_zero_and_one() -> None:
    X, y = relation_data()
    named = np.where(y == 1, "default", "repaid")
    fitted = SignConstrainedLogisticRegression([1]).fit(X, named)
    reference = SignConstrainedLogisticRegression([1]).fit(X, (named == "repaid").astype(int))
    assert list(fitted.classes_) == ["default", "repaid"]  # "repaid" sorts second: positive
    np.testing.assert_allclose(fitted.coef_, reference.coef_)


def test_it_clones_with_its_constraints_and_only_the_parameters_it_honours() -> None:
    model = SignConstrainedLogisticRegression([1, -1], C=0.5, max_iter=300)
    assert clone(model).get_params() == {
        "monotonic_cst": [1, -1],
        "C": 0.5,
        "fit_intercept": True,
        "tol": 1e-4,
        "max_iter": 300,
    }
    assert isinstance(model, LogisticRegression)  # what the compiled fast path looks for


@pytest.mark.parametrize(
    ("monotonic_cst", "message"),
    [([1, 0, -1, 1], "4 entries for 3 input columns"), ([2], r"must be -1, 0 or 1, got \[2\]")],
)
def test_invalid_constraints_are_refused(monotonic_cst: list[int], message: str) -> None:
    X, y = relation_data(rows=200)
    with pytest.raises(ValueError, match=message):
        SignConstrainedLogisticRegression(monotonic_cst).fit(X, y)


def test_one_class_is_refused() -> None:
    X, _ = relation_data(rows=50)
    with pytest.raises(ValueError, match="two classes"):
        SignConstrainedLogisticRegression().fit(X, np.zeros(50, dtype=int))
