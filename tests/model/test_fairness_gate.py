"""The promotion gate's adverse-impact check on trained models, as the promote flow scores them.

A proxy effect in the synthetic book (the minority's creditworthiness sits lower, so the features
it drives stand in for group membership) makes a model approve that group less; the same draw
without it gives a model that treats the groups alike. Both are trained as the flow trains and
scored by the flow's own `gate_scores`.
"""

from __future__ import annotations

import pytest
from mlflow.entities.model_registry import ModelVersion

from flows.promote import gate_scores
from loanops.data.synthetic import SCHEMA, generate
from loanops.promotion import GateDecision, GateScores, decide
from tests.factories import gate_policy
from tests.model.fitting import fit_model


def scored(proxy_effect: float) -> GateScores:
    fitted = fit_model(SCHEMA, generate(20_000, seed=11, proxy_effect=proxy_effect), "logreg")
    version = ModelVersion(name="loan-default", version="3", creation_timestamp=0)
    return gate_scores(
        version,
        fitted.model.model,
        fitted.schema,
        fitted.raw_test,
        threshold=fitted.model.threshold,
        segments=SCHEMA.segments_for("fair_lending"),
        min_group_rows=30,
    )


@pytest.fixture(scope="module")
def fair() -> GateScores:
    return scored(proxy_effect=0)


@pytest.fixture(scope="module")
def proxied() -> GateScores:
    return scored(proxy_effect=2.0)


def adverse_impact_reasons(decision: GateDecision) -> list[str]:
    return [r for r in decision.reasons if r.startswith("adverse impact:")]


def test_a_model_that_treats_the_groups_alike_passes_and_its_ratio_is_reported(
    fair: GateScores,
) -> None:
    decision = decide(fair, None, gate_policy())
    (impact,) = fair.adverse_impact
    assert impact.segment == "protected group"
    assert impact.low <= impact.ratio <= impact.high
    assert impact.ratio > 0.9
    (line,) = adverse_impact_reasons(decision)
    assert line.startswith("adverse impact: protected group approval ratio ")
    assert line.endswith(">= floor 0.80")
    assert fair.metrics["adverse_impact_protected_group"] == impact.ratio


def test_a_proxy_effect_fails_the_floor_and_the_refusal_names_the_segment(
    proxied: GateScores,
) -> None:
    decision = decide(proxied, None, gate_policy())
    assert not decision.promote
    (line,) = adverse_impact_reasons(decision)
    assert "protected group approval ratio" in line
    assert "'minority' vs 'majority'" in line
    assert line.endswith("< floor 0.80")
    (impact,) = proxied.adverse_impact
    assert impact.high < 0.8


def test_a_challenger_that_worsens_the_champions_ratio_beyond_the_tolerance_is_refused(
    fair: GateScores, proxied: GateScores
) -> None:
    # A floor low enough to pass both: only the comparison with the champion can refuse.
    policy = gate_policy(min_adverse_impact_ratio=0.0, auc_tolerance=0.1)
    decision = decide(proxied, fair, policy)
    assert not decision.promote
    (line,) = adverse_impact_reasons(decision)
    assert "adverse impact: protected group ratio change -" in line
    assert "vs champion v3 beyond tolerance -0.05" in line
    assert decide(fair, proxied, policy).promote
