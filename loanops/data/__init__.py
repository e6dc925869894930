"""Datasets, selected by name.

Each module in this package that defines a module-level `DATASET` is a dataset: adding one means
writing a module with its schema and loader, and nothing else. A dataset can also be declared in a
YAML file (see `loanops.data.declaration`), named by its path wherever a dataset name is taken.
Loading returns the frame with its schema, provenance and a content hash for lineage.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

import pandas as pd

from loanops.schema import FeatureSchema

INCOME_BAND_EDGES = (0.0, 40_000.0, 75_000.0, 120_000.0, float("inf"))
"""Annual-income band edges (USD) of the bundled datasets' income segment: the usual
retail-lending cut points, fixed so that cards of different versions compare band for band."""

Loader = Callable[[int | None, int], pd.DataFrame]
"""Build the raw frame: `loader(rows, seed)`. `rows` is None for the dataset's natural size."""


class UnknownDatasetError(KeyError):
    """Raised for a dataset name that no module in `loanops.data` defines."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Dataset:
    """A named source of loans: its schema, how to load it, and where it comes from."""

    name: str
    schema: FeatureSchema
    loader: Loader
    description: str
    provenance: Mapping[str, str] = field(default_factory=dict)
    generated: bool = False
    """Generated datasets draw `rows` rows; fixed ones are subsampled when `rows` is given."""
    default_rows: int | None = None


@dataclass(frozen=True)
class LoadedDataset:
    """A loaded frame with everything lineage needs."""

    dataset: Dataset
    frame: pd.DataFrame
    sha256: str
    source: str
    """Where the rows came from: the dataset's own loader, or a file."""

    @property
    def name(self) -> str:
        return self.dataset.name

    @property
    def schema(self) -> FeatureSchema:
        return self.dataset.schema


@cache
def catalog() -> dict[str, Dataset]:
    """Every dataset defined in this package, by name."""
    found: dict[str, Dataset] = {}
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        dataset = getattr(module, "DATASET", None)
        if isinstance(dataset, Dataset):
            if dataset.name in found:
                raise RuntimeError(f"dataset {dataset.name!r} is defined twice")
            found[dataset.name] = dataset
    return found


def get_dataset(name: str) -> Dataset:
    """The dataset called `name`, or the one declared in the file `name` (`.yaml` or `.yml`).

    Raises:
        UnknownDatasetError: naming the datasets that do exist.
        DeclarationError: for a declaration file that breaks a rule (file, line, field, rule).
    """
    from loanops.data.declaration import is_declaration

    if is_declaration(name):
        path = Path(name).resolve()
        return declared_dataset(path, path.stat().st_mtime_ns if path.exists() else 0)
    datasets = catalog()
    if name not in datasets:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; choose one of: {', '.join(sorted(datasets))}"
        )
    return datasets[name]


@cache
def declared_dataset(path: Path, modified_ns: int) -> Dataset:
    """The dataset a declaration file declares, read once per version of the file.

    Raises:
        DeclarationError: for a declaration that breaks a rule.
    """
    from loanops.data.declaration import read_declaration, read_source, source_location

    declaration = read_declaration(path)

    def load(rows: int | None, seed: int) -> pd.DataFrame:
        # The database URL is a secret setting, read when the rows are, never from the file.
        from loanops.settings import get_settings

        url = get_settings().training.source_database_url
        return read_source(declaration, url.get_secret_value() if url is not None else None)

    return Dataset(
        name=declaration.schema.name,
        schema=declaration.schema,
        loader=load,
        description=declaration.description,
        provenance={"source": source_location(declaration), "declaration": str(path)},
    )


def load_dataset(name: str, rows: int | None = None, seed: int = 0) -> LoadedDataset:
    """Load a dataset by name.

    Args:
        name: a registered dataset name.
        rows: rows to draw (generated) or a seeded random subsample (fixed); None for all.
        seed: seed for generation or subsampling.

    Returns:
        The frame, its dataset and the frame's sha256.
    """
    dataset = get_dataset(name)
    if dataset.generated:
        frame = dataset.loader(rows or dataset.default_rows, seed)
    else:
        frame = dataset.loader(None, seed)
        if rows is not None and rows < len(frame):
            frame = frame.sample(n=rows, random_state=seed).sort_index()
    frame = frame.reset_index(drop=True)
    source = dataset.provenance.get("source", f"loanops.data.{name}")
    return LoadedDataset(dataset, frame, frame_sha256(frame), source=source)


def load_training_data(
    name: str, *, rows: int | None, seed: int, data_path: str | None
) -> LoadedDataset:
    """The rows a training run uses: the file at `data_path` (following dataset `name`'s
    schema) when given, else the dataset itself (`load_dataset`)."""
    if data_path is not None:
        return load_file(name, Path(data_path))
    return load_dataset(name, rows=rows, seed=seed)


def load_file(name: str, path: Path) -> LoadedDataset:
    """Load rows from a CSV or Parquet file that follows the schema of dataset `name`.

    Raises:
        UnknownDatasetError: for an unknown dataset name.
        FileNotFoundError: when the file does not exist.
        ValueError: for a file type other than CSV or Parquet.
    """
    dataset = get_dataset(name)
    schema = dataset.schema
    frame = read_frame(path, text_columns=schema.categorical_features)
    # A float column whose values happen to be whole numbers reads back as integers.
    for feature in schema.features:
        if feature.kind == "float" and feature.name in frame:
            if pd.api.types.is_integer_dtype(frame[feature.name]):
                frame[feature.name] = frame[feature.name].astype("float64")
    frame = frame.reset_index(drop=True)
    return LoadedDataset(dataset, frame, frame_sha256(frame), source=str(path.resolve()))


def frame_file_format(path: Path) -> Literal["csv", "parquet"] | None:
    """The file format its name says (`.csv`, `.csv.gz`, `.parquet`, `.pq`, any case), or None."""
    suffixes = "".join(path.suffixes).lower()
    if suffixes.endswith((".parquet", ".pq")):
        return "parquet"
    if suffixes.endswith((".csv", ".csv.gz")):
        return "csv"
    return None


def read_frame(
    path: Path, text_columns: list[str] | None = None, *, all_text: bool = False
) -> pd.DataFrame:
    """Read a CSV or Parquet file into a frame, choosing the reader by suffix.

    Args:
        path: the file.
        text_columns: CSV columns to keep as text, so category codes such as "36" stay strings.
        all_text: Read every CSV cell as the text written, none turned into NaN (for checks
            that must see exactly what a file holds).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: for a file type other than CSV or Parquet.
    """
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    file_format = frame_file_format(path)
    if file_format is None:
        raise ValueError(f"unsupported file type {path.name!r}: use .csv, .csv.gz or .parquet")
    if file_format == "parquet":
        return pd.read_parquet(path)
    if all_text:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    return pd.read_csv(path, dtype=dict.fromkeys(text_columns or [], "object"))


def frame_sha256(frame: pd.DataFrame) -> str:
    """A content hash of a frame: column names, dtypes and every value, in order."""
    digest = hashlib.sha256()
    digest.update(repr([(c, str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
