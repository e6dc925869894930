"""/docs and /redoc work without internet when the Swagger UI files are installed.

FastAPI's own pages load Swagger UI and ReDoc from a CDN. With the `fastapi-offline` package
installed, the API serves the same files itself under /docs-assets; without it, it falls back
to FastAPI's pages. tests/integration/test_ui_browser.py renders the page in Chromium.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import serving.app as app_module
from loanops.settings import Settings, TrainingSettings

ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")


def client(tmp_path: Path) -> TestClient:
    # No `with`: the lifespan (model loading, decision log) never starts.
    settings = Settings(home=tmp_path / "home", training=TrainingSettings(dataset="synthetic"))
    return TestClient(app_module.create_app(settings))


def test_the_pages_use_the_installed_assets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assets = tmp_path / "static"
    assets.mkdir()
    for name in ASSETS:
        (assets / name).write_text(f"/* {name} */")
    monkeypatch.setattr(app_module, "offline_docs_assets", lambda: assets)
    api = client(tmp_path)

    docs = api.get("/docs")
    assert docs.status_code == 200
    assert "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "/docs-assets/swagger-ui.css" in docs.text
    assert "'/openapi.json'" in docs.text or '"/openapi.json"' in docs.text
    redoc = api.get("/redoc")
    assert redoc.status_code == 200 and "/docs-assets/redoc.standalone.js" in redoc.text
    for page in (docs.text, redoc.text):
        assert "https://" not in page.replace("https://fastapi.tiangolo.com", ""), page
    script = api.get("/docs-assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and script.text == "/* swagger-ui-bundle.js */"
    # The pages and their files are not operations of the API.
    paths = api.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]


def test_without_the_assets_fastapi_pages_remain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "offline_docs_assets", lambda: None)
    api = client(tmp_path)
    docs = api.get("/docs")
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text
    assert api.get("/docs-assets/swagger-ui.css").status_code == 404


def test_the_installed_package_is_found_when_present() -> None:
    # fastapi-offline is a declared runtime dependency, so it is always present.
    found = app_module.offline_docs_assets()
    assert found is not None
    assert all((found / name).is_file() for name in ASSETS[:3])
