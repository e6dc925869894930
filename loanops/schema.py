"""The feature schema: one declaration per dataset of what a model takes as input.

A `FeatureSchema` is the single source of truth for the pandas dtypes, the validation rules
(see `loanops.validation`), the MLflow model signature, and later the API request model and
Evidently's column mapping. It round-trips through JSON so that it travels with the model.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    create_model,
    model_validator,
)

if TYPE_CHECKING:
    # MLflow takes seconds to import; serving and validation use the schema without it.
    from mlflow.models import ModelSignature

FeatureKind = Literal["int", "float", "category"]
RiskDirection = Literal["increasing", "decreasing"]
SegmentUse = Literal["fair_lending", "reporting"]

_PANDAS_DTYPES: dict[FeatureKind, str] = {"int": "int64", "float": "float64", "category": "object"}
_MLFLOW_TYPES: dict[str, Literal["long", "double", "string"]] = {
    "int64": "long",
    "float64": "double",
    "object": "string",
}


class Feature(BaseModel):
    """One model input: its type, the values it may take, and what it means."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: FeatureKind
    description: str
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] | None = None
    nullable: bool = False
    risk: RiskDirection | None = Field(
        default=None,
        description="How default risk moves as the value grows, where credit policy says so.",
    )
    reason: str | None = Field(
        default=None,
        description="Adverse-action text when this feature raises an applicant's risk.",
    )

    @model_validator(mode="after")
    def _rules_fit_kind(self) -> Feature:
        if self.kind == "category":
            if not self.categories:
                raise ValueError(f"categorical feature {self.name!r} needs its categories")
            if self.minimum is not None or self.maximum is not None:
                raise ValueError(f"categorical feature {self.name!r} cannot have a range")
            if self.risk is not None:
                raise ValueError(f"categorical feature {self.name!r} cannot have a risk direction")
        elif self.categories is not None:
            raise ValueError(f"numeric feature {self.name!r} cannot have categories")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"feature {self.name!r} has minimum above maximum")
        return self

    @property
    def pandas_dtype(self) -> str:
        # A nullable integer column is carried as float so NaN needs no special dtype.
        if self.kind == "int" and self.nullable:
            return "float64"
        return _PANDAS_DTYPES[self.kind]

    @property
    def is_categorical(self) -> bool:
        return self.kind == "category"


class Target(BaseModel):
    """The label column and which of its values means default."""

    model_config = ConfigDict(frozen=True)

    name: str
    positive: str | int = Field(description="Value meaning the loan defaulted.")
    negative: str | int = Field(description="Value meaning the loan repaid.")


def _mapping_as_pairs(value: Any) -> Any:
    # Declared as a mapping (YAML, JSON); held as pairs so that the frozen schema stays hashable.
    if isinstance(value, dict):
        return tuple((label, tuple(members)) for label, members in value.items())
    return value


class Segment(BaseModel):
    """A way to split applicants for review: which column, how its values group, and what for.

    A fair-lending segment (a protected class, or its stand-in) is judged by the promotion
    gate's adverse-impact check and reported on the model card; a reporting segment is only
    reported. The column need not be a model input: a protected attribute usually is not, and
    the training data carries it beside the features for review alone.
    """

    # An open-ended band's infinite edge must survive the JSON the schema travels in.
    model_config = ConfigDict(frozen=True, ser_json_inf_nan="strings")

    name: str = Field(description="How reports name the segment, such as 'income band'.")
    column: str = Field(description="The data column its values come from.")
    use: SegmentUse
    description: str = ""
    edges: tuple[float, ...] | None = Field(
        default=None,
        description="Band edges for a numeric column: each band holds [edge, next edge).",
    )
    prefix: int | None = Field(
        default=None, ge=1, description="Group text values by their first characters."
    )
    groups: Annotated[
        tuple[tuple[str, tuple[str, ...]], ...] | None, BeforeValidator(_mapping_as_pairs)
    ] = Field(
        default=None,
        description="Group text values under a label each (a mapping of label to values); a "
        "value listed under no label is left out of the segment.",
    )

    @model_validator(mode="after")
    def _one_grouping(self) -> Segment:
        chosen = [k for k in ("edges", "prefix", "groups") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ValueError(f"segment {self.name!r} sets {' and '.join(chosen)}: choose one")
        if self.edges is not None:
            if len(self.edges) < 2 or list(self.edges) != sorted(set(self.edges)):
                raise ValueError(f"segment {self.name!r}: edges must be two or more, increasing")
        if self.groups is not None:
            values = [v for _, members in self.groups for v in members]
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"segment {self.name!r} puts {repeated} in two groups")
        return self

    def labels(self, frame: pd.DataFrame) -> pd.Series:
        """Each row's segment value, as text aligned with `frame`; missing stays missing.

        Raises:
            KeyError: when the frame lacks the segment's column.
        """
        if self.column not in frame:
            raise KeyError(f"segment {self.name!r} needs column {self.column!r}")
        column = frame[self.column]
        if self.edges is not None:
            edges = list(self.edges)
            names = [_band_label(low, high) for low, high in zip(edges, edges[1:], strict=False)]
            bands = pd.cut(column.astype("float64"), edges, right=False, labels=names)
            return bands.astype("string")
        text = column.astype("string")
        if self.prefix is not None:
            return text.str[: self.prefix]
        if self.groups is not None:
            lookup = {v: label for label, members in self.groups for v in members}
            return text.map(lookup, na_action="ignore").astype("string")
        return text


def _band_label(low: float, high: float) -> str:
    if low == float("-inf"):
        return f"< {_number(high)}"
    if high == float("inf"):
        return f"≥ {_number(low)}"
    return f"{_number(low)}–{_number(high)}"


def _number(value: float) -> str:
    if abs(value) >= 1000 and value % 1000 == 0:
        return f"{value / 1000:g}k"
    return f"{value:g}"


class FeatureSchema(BaseModel):
    """The inputs and label of one dataset, in model input order, and how it is reviewed."""

    model_config = ConfigDict(frozen=True)

    name: str
    features: tuple[Feature, ...]
    target: Target
    segments: tuple[Segment, ...] = ()
    applicant_key: str | None = Field(
        default=None,
        description="Column that identifies an applicant across applications, where one exists.",
    )
    issue_date: str | None = Field(
        default=None, description="Column holding each loan's issue date, where one exists."
    )

    @model_validator(mode="after")
    def _names_unique(self) -> FeatureSchema:
        names = [f.name for f in self.features]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"duplicate feature names: {duplicated}")
        if self.target.name in names:
            raise ValueError(f"target {self.target.name!r} is also listed as a feature")
        segment_names = [s.name for s in self.segments]
        repeated = sorted({n for n in segment_names if segment_names.count(n) > 1})
        if repeated:
            raise ValueError(f"duplicate segment names: {repeated}")
        for segment in self.segments:
            if segment.column == self.target.name:
                raise ValueError(f"segment {segment.name!r} cannot split on the target")
        return self

    def input_contract(self) -> tuple[tuple[Any, ...], ...]:
        """What a model takes as input. Descriptions, reasons, risk directions and segments can
        change without changing what a client sends."""
        return tuple(
            (f.name, f.kind, f.categories, f.nullable, f.minimum, f.maximum) for f in self.features
        )

    def segments_for(self, use: SegmentUse) -> tuple[Segment, ...]:
        return tuple(s for s in self.segments if s.use == use)

    @property
    def review_columns(self) -> list[str]:
        """Columns that segments need beyond the model inputs: kept with the gate data."""
        features = set(self.feature_names)
        return list(dict.fromkeys(s.column for s in self.segments if s.column not in features))

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric_features(self) -> list[str]:
        return [f.name for f in self.features if not f.is_categorical]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.features if f.is_categorical]

    def with_risk(self, directions: dict[str, RiskDirection]) -> FeatureSchema:
        """This schema with the credit-policy direction of risk set on the named features.

        Raises:
            ValueError: when a name is not a feature.
        """
        unknown = sorted(set(directions) - set(self.feature_names))
        if unknown:
            raise ValueError(f"risk directions for unknown features: {unknown}")
        features = tuple(
            f.model_copy(update={"risk": directions[f.name]}) if f.name in directions else f
            for f in self.features
        )
        return self.model_validate({**self.model_dump(), "features": features})

    def with_segments(self, *segments: Segment) -> FeatureSchema:
        """This schema with these segments declared for review, replacing any it had."""
        return self.model_validate({**self.model_dump(), "segments": segments})

    def with_reasons(self, reasons: dict[str, str]) -> FeatureSchema:
        """This schema with adverse-action texts set, one per feature.

        Raises:
            ValueError: when a text names no feature, or a feature has no text.
        """
        unknown = sorted(set(reasons) - set(self.feature_names))
        missing = sorted(set(self.feature_names) - set(reasons))
        if unknown or missing:
            raise ValueError(f"reason texts: unknown features {unknown}, missing {missing}")
        features = tuple(f.model_copy(update={"reason": reasons[f.name]}) for f in self.features)
        return self.model_validate({**self.model_dump(), "features": features})

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def pandas_dtypes(self) -> dict[str, str]:
        return {f.name: f.pandas_dtype for f in self.features}

    def to_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The feature columns of `frame`, in schema order and cast to the schema's dtypes.

        Raises:
            KeyError: when a feature column is missing.
            ValueError: when a column cannot be cast.
        """
        missing = [n for n in self.feature_names if n not in frame.columns]
        if missing:
            raise KeyError(f"missing feature columns: {missing}")
        features = frame[self.feature_names].astype(self.pandas_dtypes())
        for name in self.categorical_features:
            # Model input carries None for a missing category, never the float NaN pandas leaves.
            column = features[name]
            features[name] = column.where(column.notna(), None)
        return features

    def labels(self, frame: pd.DataFrame) -> np.ndarray:
        """The target as 0/1, where 1 means default."""
        return (frame[self.target.name] == self.target.positive).to_numpy(dtype=np.int8)

    def request_model(self) -> type[BaseModel]:
        """The pydantic model of one application: a flat object keyed by feature name.

        Types are strict, so "13.5%" is not a rate and 1.5 is not a count (505.0 is one, as in
        JSON Schema); floats must be finite; categories must be one of the declared values;
        nullable features may be null or left out; any other key is refused. Each rule names its
        field when it fails.
        """
        return _request_model(self)

    def mlflow_signature(self) -> ModelSignature:
        """Signature of a model that takes these features and returns P(repaid), P(default)."""
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema, TensorSpec

        inputs = Schema(
            [
                ColSpec(_MLFLOW_TYPES[f.pandas_dtype], f.name, required=not f.nullable)
                for f in self.features
            ]
        )
        outputs = Schema([TensorSpec(np.dtype("float64"), (-1, 2))])
        return ModelSignature(inputs=inputs, outputs=outputs)


@cache
def _request_model(schema: FeatureSchema) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for feature in schema.features:
        annotation: Any
        constraints: dict[str, Any] = {"description": feature.description}
        if feature.kind == "category":
            annotation = Literal[feature.categories]
        else:
            annotation = int if feature.kind == "int" else float
            if feature.kind == "float":
                constraints["allow_inf_nan"] = False
            if feature.minimum is not None:
                constraints["ge"] = feature.minimum
            if feature.maximum is not None:
                constraints["le"] = feature.maximum
        field: Any = Annotated[annotation, Field(**constraints)]
        if feature.kind == "int":
            field = Annotated[field, BeforeValidator(_whole_float_as_int)]
        if feature.nullable:
            fields[feature.name] = (field | None, None)
        else:
            fields[feature.name] = (field, ...)
    model: type[BaseModel] = create_model(
        f"{_camel(schema.name)}Application",
        __config__=ConfigDict(extra="forbid", strict=True, frozen=True),
        __doc__=f"One loan application, with the features of the {schema.name} schema.",
        **fields,
    )
    return model


def _whole_float_as_int(value: Any) -> Any:
    # JSON Schema counts 505.0 as an integer, and the OpenAPI document says `integer`; 1.5 still
    # fails the strict int rule.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
