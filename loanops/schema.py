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


class FeatureSchema(BaseModel):
    """The inputs and label of one dataset, in model input order."""

    model_config = ConfigDict(frozen=True)

    name: str
    features: tuple[Feature, ...]
    target: Target

    @model_validator(mode="after")
    def _names_unique(self) -> FeatureSchema:
        names = [f.name for f in self.features]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"duplicate feature names: {duplicated}")
        if self.target.name in names:
            raise ValueError(f"target {self.target.name!r} is also listed as a feature")
        return self

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
