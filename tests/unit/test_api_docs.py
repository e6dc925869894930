"""docs/api.md is what tools/api_docs.py makes of the API's OpenAPI schema today.

The reference is generated, never edited: a route, a field or a description changed in
`serving/` without `make api-docs` fails here, naming the first line that differs.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("api_docs", ROOT / "tools" / "api_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


api_docs = _load_tool()


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    document: dict[str, Any] = api_docs.openapi_schema()
    return document


def test_docs_api_md_is_current(schema: dict[str, Any]) -> None:
    committed = (ROOT / "docs" / "api.md").read_text()
    generated = api_docs.render(schema)
    if committed != generated:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(keepends=True),
                    generated.splitlines(keepends=True),
                    "docs/api.md (committed)",
                    "docs/api.md (from the schema)",
                )
            )[:40]
        )
        pytest.fail(f"docs/api.md is stale: run `make api-docs`.\n{diff}")


def test_every_operation_and_schema_has_a_section(schema: dict[str, Any]) -> None:
    text = api_docs.render(schema)
    headings = {line[4:] for line in text.splitlines() if line.startswith("### ")}
    for path, item in schema["paths"].items():
        for method in item:
            assert f"{method.upper()} {path}" in headings
    for name in schema["components"]["schemas"]:
        assert f"{name} (schema)" in headings
    # Every link inside the document lands on a heading of it.
    anchors = {api_docs.anchor(heading) for heading in headings}
    for target in set(re.findall(r"\]\(#([^)]+)\)", text)):
        assert target in anchors, target


def test_type_of_reads_like_the_schema() -> None:
    assert api_docs.type_of({"type": "integer", "minimum": 500.0, "maximum": 40000}) == (
        "integer, ≥ 500, ≤ 40000"
    )
    assert api_docs.type_of({"anyOf": [{"type": "string"}, {"type": "null"}]}) == ("string or null")
    assert api_docs.type_of(
        {"type": "array", "items": {"$ref": "#/components/schemas/Outcome"}, "maxItems": 5}
    ) == ("array of [Outcome](#outcome-schema), items ≤ 5")
    assert api_docs.anchor("GET /v1/batch-jobs/{job_id}") == "get-v1batch-jobsjob_id"
