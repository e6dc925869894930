"""Session-scoped trained models for the behaviour tests, one per model family."""

from __future__ import annotations

import pytest

from loanops.data import synthetic as syn
from tests.factories import LENDING_CLUB, lending_club_frame
from tests.model.fitting import CONFIGS, SEED, Fitted, fit_model

SYNTHETIC_ROWS = 30_000


@pytest.fixture(scope="session", params=list(CONFIGS))
def lending_club_model(request: pytest.FixtureRequest) -> Fitted:
    """A calibrated model on the whole lending_club dataset, once per model family."""
    return fit_model(LENDING_CLUB, lending_club_frame(), request.param)


@pytest.fixture(scope="session", params=list(CONFIGS))
def synthetic_model(request: pytest.FixtureRequest) -> Fitted:
    """A calibrated model on 30,000 synthetic loans, which unlike lending_club carry `dti`."""
    return fit_model(syn.SCHEMA, syn.generate(SYNTHETIC_ROWS, seed=SEED), request.param)
