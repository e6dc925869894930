"""How grouped settings keep their flat `LOANOPS_*` environment variables.

The settings are nested by concern (`settings.gate.min_auc`), but the variables that set them
stay flat (`LOANOPS_PROMOTION_MIN_AUC`), because the ConfigMap, the Secret and the compose file
name them. Each field of a group declares its variable as its validation alias: a group gives a
prefix for most of its fields and an explicit alias for the few that do not follow it. The
settings sources here read those variables from the environment and the `.env` file with
pydantic-settings' own parsing (JSON for lists and mappings, the same case rules) and hand each
group a dict keyed by variable, so a validation error names the variable to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import AliasGenerator, BaseModel, ConfigDict
from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource, PydanticBaseSettingsSource, SettingsError

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

ENV_PREFIX = "LOANOPS_"


def variables_prefixed(prefix: str) -> ConfigDict:
    """Group config naming each field's variable `LOANOPS_<prefix><FIELD>`.

    Args:
        prefix: what comes between `LOANOPS_` and the field name, e.g. `PROMOTION_`; empty for
            a group whose variables are its field names.

    Returns:
        The config to assign to the group's `model_config`; fields with an explicit
        `validation_alias` keep theirs.
    """
    return ConfigDict(
        alias_generator=AliasGenerator(
            validation_alias=lambda name: f"{ENV_PREFIX}{prefix}{name}".upper()
        )
    )


class SettingsGroup(BaseModel):
    """One concern's settings, set from flat `LOANOPS_*` variables through `Settings`.

    Construct a group by field name (`GateSettings(min_auc=0.7)`); the variable names are the
    aliases the environment sources use.
    """

    model_config = ConfigDict(
        extra="forbid", validate_by_name=True, validate_by_alias=True, hide_input_in_errors=True
    )


@dataclass(frozen=True)
class Variable:
    """One `LOANOPS_*` environment variable and the settings field it sets."""

    name: str
    group: str | None
    """The group holding the field, or None for a field of `Settings` itself."""
    field: str
    info: FieldInfo

    @property
    def path(self) -> str:
        """Where the value lives, e.g. `gate.min_auc`."""
        return self.field if self.group is None else f"{self.group}.{self.field}"

    @property
    def flat_name(self) -> str:
        """The variable without its prefix, lower case: the field's name before the grouping."""
        return self.name.removeprefix(ENV_PREFIX).lower()

    def value(self, settings: BaseModel) -> Any:
        """This variable's value in `settings`."""
        holder = settings if self.group is None else getattr(settings, self.group)
        return getattr(holder, self.field)


def groups_of(settings_cls: type[BaseModel]) -> Iterator[tuple[str, type[SettingsGroup]]]:
    """The group fields of a settings class, with each group's class."""
    for name, info in settings_cls.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, SettingsGroup):
            yield name, annotation


def variable_name(info: FieldInfo) -> str:
    """The environment variable a group field is read from: its validation alias."""
    if not isinstance(info.validation_alias, str):
        raise TypeError("a group field's validation alias must name its environment variable")
    return info.validation_alias


def variables_of(settings_cls: type[BaseModel]) -> dict[str, Variable]:
    """Every `LOANOPS_*` variable of a settings class, by name.

    Args:
        settings_cls: the root settings class, whose own fields are read as `LOANOPS_<FIELD>`.

    Returns:
        The variables in field order: the root's scalar fields, then each group's.
    """
    grouped = dict(groups_of(settings_cls))
    found: dict[str, Variable] = {}
    for name, info in settings_cls.model_fields.items():
        if name not in grouped:
            variable = f"{ENV_PREFIX}{name}".upper()
            found[variable] = Variable(variable, None, name, info)
    for group, group_cls in grouped.items():
        for name, info in group_cls.model_fields.items():
            variable = variable_name(info)
            if variable in found:
                raise TypeError(f"{variable} sets both {found[variable].path} and {group}.{name}")
            found[variable] = Variable(variable, group, name, info)
    return found


class GroupedEnvironmentSource(PydanticBaseSettingsSource):
    """Reads the groups' flat variables through a stock environment or `.env` source.

    The stock source reads the root's own fields as usual; this one adds a dict per group,
    keyed by variable name, parsed as the stock source parses a field of that type.
    """

    def __init__(self, settings_cls: type[BaseSettings], flat: EnvSettingsSource) -> None:
        super().__init__(settings_cls)
        self.flat = flat

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ reads the groups itself. Required by the abstract base.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        grouped = dict(groups_of(self.settings_cls))
        # The stock `.env` source also returns unknown prefixed variables as extras, and a
        # group field would be read from LOANOPS_<GROUP>: keep the root's own fields only.
        root_fields = set(self.settings_cls.model_fields) - set(grouped)
        data = {key: value for key, value in self.flat().items() if key in root_fields}
        for group, group_cls in grouped.items():
            values = self._read_group(group_cls)
            if values:
                data[group] = values
        return data

    def _read_group(self, group_cls: type[SettingsGroup]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, info in group_cls.model_fields.items():
            variable = variable_name(info)
            key = variable if self.flat.case_sensitive else variable.lower()
            raw = self.flat.env_vars.get(key)
            if raw is None:
                continue
            try:
                value = self.flat.prepare_field_value(name, info, raw, False)
            except ValueError as error:
                raise SettingsError(
                    f"error parsing {variable} from source {type(self.flat).__name__}"
                ) from error
            if value is not None:
                values[variable] = value
        return values


class GroupedInitSource(PydanticBaseSettingsSource):
    """Keyword arguments of `Settings(...)`, with each group's values keyed by variable.

    A group may be given as a dict of field names or as an instance; either way only the fields
    given override the environment, field by field, as a flat keyword did before the grouping.
    A flat name of a grouped field (`promotion_min_auc=`) is refused with its new place.
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        init: Callable[[], dict[str, Any]],
        moved: Mapping[str, Variable],
    ) -> None:
        super().__init__(settings_cls)
        self.init = init
        self.moved = moved

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data = self.init()
        for key in data:
            if key in self.moved:
                variable = self.moved[key]
                raise TypeError(
                    f"{self.settings_cls.__name__}() got {key}=, which is "
                    f"{variable.path} now: pass {variable.group}={{{variable.field!r}: ...}} "
                    f"(its environment variable is still {variable.name})"
                )
        for group, group_cls in groups_of(self.settings_cls):
            if group in data:
                data[group] = self._keyed_by_variable(group_cls, data[group])
        return data

    @staticmethod
    def _keyed_by_variable(group_cls: type[SettingsGroup], given: Any) -> Any:
        if isinstance(given, group_cls):
            given = {name: getattr(given, name) for name in given.model_fields_set}
        if not isinstance(given, Mapping):
            return given  # let validation say what is wrong with it
        fields = group_cls.model_fields
        return {
            variable_name(fields[key]) if key in fields else key: value
            for key, value in given.items()
        }
