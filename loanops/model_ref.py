"""A reference to a registered model: `models:/NAME@ALIAS` follows an alias, `models:/NAME/VERSION`
pins one version. The one place the grammar is written; settings, serving and the deploy flow
parse and build references through `ModelRef`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

# Alias characters are MLflow's (letters, digits, `_`, `-`); a version is a positive number.
_GRAMMAR: Final = re.compile(
    r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[0-9]+))"
)
GRAMMAR_HINT: Final = "models:/NAME@ALIAS or models:/NAME/VERSION"
"""How an error message names the two accepted forms."""


@dataclass(frozen=True)
class ModelRef:
    """A registered model name and either an alias to follow or a version to pin.

    Build one with `parse`, `following` or `pinned`; `str()` gives the URI MLflow understands.
    """

    name: str
    alias: str | None = None
    version: str | None = None

    def __post_init__(self) -> None:
        if (self.alias is None) == (self.version is None):
            raise ValueError("a model reference names either an alias or a version, not both")
        if _GRAMMAR.fullmatch(str(self)) is None:
            raise ValueError(f"{str(self)!r} is not {GRAMMAR_HINT}")

    @classmethod
    def parse(cls, uri: str) -> ModelRef:
        """Parse `models:/NAME@ALIAS` or `models:/NAME/VERSION`.

        Args:
            uri: The reference, e.g. `models:/loan-default@production`.

        Returns:
            The reference.

        Raises:
            ValueError: For any other form, e.g. `runs:/...`, `models:/NAME` or an alias
                without a name.
        """
        match = _GRAMMAR.fullmatch(uri)
        if match is None:
            raise ValueError(f"{uri!r} must be {GRAMMAR_HINT}")
        return cls(match["name"], match["alias"], match["version"])

    @classmethod
    def following(cls, name: str, alias: str) -> ModelRef:
        """The reference that follows `alias` of `name`: `models:/NAME@ALIAS`.

        Raises:
            ValueError: When the alias has characters MLflow refuses.
        """
        return cls(name, alias=alias)

    @classmethod
    def pinned(cls, name: str, version: str | int) -> ModelRef:
        """The reference that pins one version of `name`: `models:/NAME/VERSION`.

        Raises:
            ValueError: When the version is not a number.
        """
        return cls(name, version=str(version))

    @property
    def follows_alias(self) -> bool:
        return self.alias is not None

    def __str__(self) -> str:
        tail = f"@{self.alias}" if self.alias is not None else f"/{self.version}"
        return f"models:/{self.name}{tail}"
