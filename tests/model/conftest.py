"""Session-scoped trained models for the behaviour tests, one per model family."""

from __future__ import annotations

from functools import cache

import pytest

from loanops.data import synthetic as syn
from loanops.settings import ModelFamily
from tests.factories import LENDING_CLUB, lending_club_frame
from tests.model.fitting import CONFIGS, SEED, Fitted, fit_model, unconstrained_logreg

SYNTHETIC_ROWS = 30_000


@cache
def _on_lending_club(family: ModelFamily) -> Fitted:
    # Shared by the fixtures below, so that asking for one family fits it once per session.
    return fit_model(LENDING_CLUB, lending_club_frame(), family)


@pytest.fixture(scope="session", params=list(CONFIGS))
def lending_club_model(request: pytest.FixtureRequest) -> Fitted:
    """A calibrated model on the whole lending_club dataset, once per model family."""
    return _on_lending_club(request.param)


@pytest.fixture(scope="session")
def unconstrained_lending_club_logreg() -> Fitted:
    """lending_club's logistic regression fitted without the schema's sign constraints: on
    lending_club it learns a PD that falls as some declared risks rise."""
    return unconstrained_logreg(_on_lending_club("logreg"))


@pytest.fixture(scope="session", params=list(CONFIGS))
def synthetic_model(request: pytest.FixtureRequest) -> Fitted:
    """A calibrated model on 30,000 synthetic loans, which unlike lending_club carry `dti`."""
    return fit_model(syn.SCHEMA, syn.generate(SYNTHETIC_ROWS, seed=SEED), request.param)
