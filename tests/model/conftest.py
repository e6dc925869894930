"""Session-scoped trained models for the behaviour tests, one per model family."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from threadpoolctl import threadpool_limits

from loanops.data import synthetic as syn
from tests.factories import LENDING_CLUB, lending_club_frame
from tests.model.fitting import CONFIGS, SEED, Fitted, fit_model

SYNTHETIC_ROWS = 30_000


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """BLAS and OpenMP threads only contend with each other on a 2-core runner."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session", params=list(CONFIGS))
def lending_club_model(request: pytest.FixtureRequest) -> Fitted:
    """A calibrated model on the whole lending_club dataset, once per model family."""
    return fit_model(LENDING_CLUB, lending_club_frame(), request.param)


@pytest.fixture(scope="session", params=list(CONFIGS))
def synthetic_model(request: pytest.FixtureRequest) -> Fitted:
    """A calibrated model on 30,000 synthetic loans, which unlike lending_club carry `dti`."""
    return fit_model(syn.SCHEMA, syn.generate(SYNTHETIC_ROWS, seed=SEED), request.param)
