"""The promotion gate checks the declared risk directions on trained models, as the flow scores.

The gate data is the frozen test split; the scores come from the promote flow's `gate_scores`, so
the finite-difference effects reach `decide` exactly as they do in `loanops promote`.
"""

from __future__ import annotations

from mlflow.entities.model_registry import ModelVersion

from flows.promote import gate_scores
from loanops.promotion import GateDecision, decide
from tests.factories import gate_policy
from tests.model.fitting import Fitted

CONTRADICTED = {"revol_util", "delinq_2yrs", "annual_inc"}
"""Declared risks lending_club's unconstrained logistic regression contradicts, among others (see
test_direction.py): with the grade fixed, its PD falls as these burdens rise."""


def gate(fitted: Fitted) -> GateDecision:
    version = ModelVersion(name="loan-default", version="2", creation_timestamp=0)
    scores = gate_scores(
        version,
        fitted.model.model,
        fitted.schema,
        fitted.raw_test,
        threshold=fitted.model.threshold,
        segments=fitted.schema.segments_for("fair_lending"),
        min_group_rows=30,
    )
    # Floors low enough that only the direction check can refuse: lending_club's test split
    # holds some 90 defaults, too few for a steady calibration error.
    return decide(scores, None, gate_policy(min_auc=0.5, max_ece=0.5, max_calibration_z=10))


def test_every_family_passes_the_direction_check(lending_club_model: Fitted) -> None:
    decision = gate(lending_club_model)
    assert decision.promote, decision.summary
    declared = sum(f.risk is not None for f in lending_club_model.schema.features)
    (line,) = [r for r in decision.reasons if r.startswith("directions:")]
    assert f"each of the {declared} declared features moves toward risk" in line
    assert {e.feature for e in decision.challenger.directions} == {
        f.name for f in lending_club_model.schema.features if f.risk is not None
    }


def test_a_challenger_that_contradicts_a_declared_direction_is_refused_by_name(
    unconstrained_lending_club_logreg: Fitted,
) -> None:
    decision = gate(unconstrained_lending_club_logreg)
    assert not decision.promote
    named = {r.split()[4] for r in decision.reasons if r.startswith("direction: PD falls as")}
    assert named >= CONTRADICTED, decision.summary
    for reason in decision.reasons:
        assert reason.startswith("direction: PD falls as "), reason
        assert "gate loans); risk is declared " in reason
