"""ModelRef: the one grammar of registry references, parsed and printed back unchanged."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from loanops.model_ref import ModelRef


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/loan-default@production", ModelRef("loan-default", alias="production")),
        ("models:/pd@champion_2", ModelRef("pd", alias="champion_2")),
        ("models:/loan-default/7", ModelRef("loan-default", version="7")),
    ],
)
def test_parse_reads_both_forms_and_str_gives_them_back(uri: str, expected: ModelRef) -> None:
    assert ModelRef.parse(uri) == expected
    assert str(ModelRef.parse(uri)) == uri


@pytest.mark.parametrize(
    "uri",
    ["models:/pd", "models:/pd/latest", "runs:/abc/model", "models:/pd@", "pd/7", "models:/@a"],
)
def test_parse_refuses_every_other_form(uri: str) -> None:
    with pytest.raises(ValueError, match="models:/NAME@ALIAS or models:/NAME/VERSION"):
        ModelRef.parse(uri)


def test_constructors_build_what_parse_reads() -> None:
    assert ModelRef.following("pd", "live") == ModelRef.parse("models:/pd@live")
    assert ModelRef.pinned("pd", 3) == ModelRef.parse("models:/pd/3")
    assert ModelRef.pinned("pd", "3").follows_alias is False
    assert ModelRef.following("pd", "live").follows_alias is True


@pytest.mark.parametrize(
    "build",
    [
        lambda: ModelRef.pinned("pd", "v3"),
        lambda: ModelRef.following("pd", "has space"),
        lambda: ModelRef("pd"),
        lambda: ModelRef("pd", alias="live", version="3"),
    ],
)
def test_constructors_refuse_what_the_grammar_refuses(build: Callable[[], ModelRef]) -> None:
    with pytest.raises(ValueError):
        build()
