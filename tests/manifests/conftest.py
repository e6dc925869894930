"""The manifest tier: the kustomize overlays and the container image, checked offline.

Every overlay is rendered once per session with the real kustomize (kubectl's), and the tests
read that render: schemas (kubernetes-validate), meaning (test_semantics), security (checkov),
settings keys, and the committed golden files. No Kubernetes API server runs here, and no test
claims one does.
"""

from __future__ import annotations

import pytest

from tests.manifests.kube import OVERLAYS, Render, render


@pytest.fixture(scope="session")
def renders() -> dict[str, Render]:
    """Every overlay, rendered."""
    return {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, renders: dict[str, Render]) -> Render:
    """One overlay's render; tests using it run once per overlay."""
    return renders[request.param]
