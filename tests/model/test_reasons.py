"""Adverse-action reasons on trained models: faithful, ordered, and never pointing the wrong way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

from loanops.explain import Explainer, reason_code
from tests.model.fitting import Fitted

APPLICANTS = 100


_EXPLAINERS: dict[int, tuple[Explainer, dict[str, Any]]] = {}


def explainer_for(fitted: Fitted) -> tuple[Explainer, dict[str, Any]]:
    """The explainer a model version would ship with, built once per session model."""
    if id(fitted) not in _EXPLAINERS:
        favourable = fitted.model.favourable_values(fitted.splits.train.X, fitted.schema, seed=0)

        def score_rows(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
            return fitted.score(pd.DataFrame(list(rows)))

        _EXPLAINERS[id(fitted)] = (Explainer(fitted.schema, favourable, score_rows), favourable)
    return _EXPLAINERS[id(fitted)]


def riskiest(fitted: Fitted) -> list[dict[str, Any]]:
    X = fitted.splits.test.X
    p = fitted.model.predict_pd(X)
    top = np.argsort(-p)[:APPLICANTS]
    return [X.iloc[i].where(X.iloc[i].notna(), None).to_dict() for i in top]


def check_top_reason_is_faithful(fitted: Fitted) -> None:
    explainer, favourable = explainer_for(fitted)
    explained = 0
    for row in riskiest(fitted):
        pd_ = float(fitted.score(pd.DataFrame([row]))[0])
        reasons = explainer.reasons(row, pd_)
        if not reasons:
            continue
        explained += 1
        top = reasons[0]
        moved = {**row, top.feature: favourable[top.feature]}
        rescored = float(fitted.score(pd.DataFrame([moved]))[0])
        assert rescored < pd_
        assert rescored == pytest.approx(pd_ - top.impact, abs=1e-12)
    assert explained >= APPLICANTS * 0.9


def test_moving_the_top_reason_to_its_favourable_value_lowers_the_score(
    lending_club_model: Fitted,
) -> None:
    check_top_reason_is_faithful(lending_club_model)


def test_top_reason_is_faithful_on_synthetic_loans_with_null_categories(
    synthetic_model: Fitted,
) -> None:
    check_top_reason_is_faithful(synthetic_model)


def test_reasons_are_ranked_positive_and_carry_stable_codes_and_texts(
    lending_club_model: Fitted,
) -> None:
    fitted = lending_club_model
    explainer, _ = explainer_for(fitted)
    texts = {f.name: f.reason for f in fitted.schema.features}
    for row in riskiest(fitted)[:50]:
        reasons = explainer.reasons(row, float(fitted.score(pd.DataFrame([row]))[0]), top=4)
        impacts = [r.impact for r in reasons]
        assert len(reasons) <= 4
        assert impacts == sorted(impacts, reverse=True)
        assert all(impact > 0 for impact in impacts)
        for reason in reasons:
            assert reason.code == reason_code(reason.feature) == reason.feature.upper()
            assert reason.text == texts[reason.feature]


def test_directional_features_are_compared_with_the_policy_end_of_their_range(
    synthetic_model: Fitted,
) -> None:
    fitted = synthetic_model
    _, favourable = explainer_for(fitted)
    train = fitted.splits.train.X
    directional = [f for f in fitted.schema.features if f.risk is not None]
    assert directional
    for feature in directional:
        low, high = train[feature.name].quantile([0.10, 0.90])
        if feature.risk == "increasing":
            assert favourable[feature.name] <= low, feature.name
        else:
            assert favourable[feature.name] >= high, feature.name


def test_an_applicant_at_every_favourable_value_has_no_reasons(
    lending_club_model: Fitted,
) -> None:
    fitted = lending_club_model
    explainer, favourable = explainer_for(fitted)
    row = dict(favourable)
    assert explainer.reasons(row, float(fitted.score(pd.DataFrame([row]))[0])) == []


def declared_impacts(fitted: Fitted) -> np.ndarray:
    """How much each test loan's PD would fall with a declared feature moved from the risky side
    of its favourable value to that value: (loans, declared features), NaN where the loan's value
    is not on the risky side."""
    explainer, favourable = explainer_for(fitted)
    X = fitted.splits.test.X
    ranking = explainer.rank_reasons(
        X, fitted.model.predict_pd(X), fitted.model.predict_pd, top=len(fitted.schema.features)
    )
    every = np.full((len(X), len(ranking.features)), np.nan)
    np.put_along_axis(every, ranking.order, ranking.impacts, axis=1)
    columns = []
    for i, name in enumerate(ranking.features):
        risk = fitted.schema.feature(name).risk
        if risk is None:
            continue
        values = X[name].to_numpy(dtype=np.float64)
        risky = values > favourable[name] if risk == "increasing" else values < favourable[name]
        columns.append(np.where(risky, every[:, i], np.nan))
    return np.column_stack(columns)


def test_no_declared_direction_is_contradicted_so_no_reason_is_suppressed(
    lending_club_model: Fitted,
) -> None:
    # The explainer drops a reason whose impact is not positive. For a loan on the risky side of
    # a declared feature's favourable value, that happens only when the model contradicts the
    # declaration; every family now obeys it.
    assert np.nanmin(declared_impacts(lending_club_model)) >= -1e-12


def test_a_linear_model_without_sign_constraints_would_have_its_reasons_suppressed(
    unconstrained_lending_club_logreg: Fitted,
) -> None:
    assert np.nanmin(declared_impacts(unconstrained_lending_club_logreg)) < -1e-3
