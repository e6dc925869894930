"""The notebooks are stored clean: no outputs, no execution counts, one papermill parameters cell.

An executed copy saved over its source would commit one run's outputs (and data) into the
repository; papermill needs exactly one cell tagged `parameters` to know where to inject.
`tests/integration/test_notebooks.py` executes them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_found() -> None:
    names = {path.name for path in NOTEBOOKS}
    assert {
        "01-explore-data.ipynb",
        "02-review-candidate.ipynb",
        "03-monitoring.ipynb",
    } <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)

    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {index} has outputs"
            assert cell.execution_count is None, f"cell {index} has an execution count"
        assert "papermill" not in cell.metadata, f"cell {index} comes from an executed copy"
    assert "papermill" not in notebook.metadata, "an executed copy, not the source"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_has_one_parameters_cell_first(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    injected = [
        cell for cell in notebook.cells if "injected-parameters" in cell.metadata.get("tags", [])
    ]

    assert len(tagged) == 1, f"{len(tagged)} cells tagged parameters"
    assert code and tagged[0] is code[0], "the parameters cell must be the first code cell"
    assert not injected, "papermill's injected parameters were saved into the source"
    # Plain `name = literal` lines: what papermill can list (--help-notebook) and override.
    for statement in ast.parse(tagged[0].source).body:
        assert isinstance(statement, ast.Assign), ast.unparse(statement)
        assert [type(target) for target in statement.targets] == [ast.Name]
        ast.literal_eval(statement.value)
