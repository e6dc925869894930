"""The packages import in one direction: cli -> flows -> loanops <- serving.

Every import statement counts, including those inside functions, because a lazy import
still ties the two packages together at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What each first-party package must never import.
FORBIDDEN: dict[str, frozenset[str]] = {
    "loanops": frozenset({"flows", "serving", "cli"}),
    "flows": frozenset({"serving", "cli"}),
    "serving": frozenset({"flows", "cli"}),
}


def imported_packages(path: Path) -> set[tuple[int, str]]:
    """The top-level package of every absolute import in a module, with its line."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module.split(".")[0]))
    return found


def violations(package: str) -> list[str]:
    forbidden = FORBIDDEN[package]
    return [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, target in sorted(imported_packages(path))
        if target in forbidden
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_in_the_allowed_direction(package: str) -> None:
    assert (ROOT / package / "__init__.py").is_file()
    assert violations(package) == []


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from serving.app import create_app\n    import flows.train\n")
    assert imported_packages(module) == {(2, "serving"), (3, "flows")}


def test_relative_imports_stay_inside_their_package(tmp_path: Path) -> None:
    module = tmp_path / "relative.py"
    module.write_text("from . import sibling\nfrom .serving import x\n")
    assert imported_packages(module) == set()
