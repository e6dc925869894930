"""The Jinja2 environment of loanops's HTML pages (the model card, the compare report)."""

from __future__ import annotations

from functools import cache

import jinja2


@cache
def templates() -> jinja2.Environment:
    """Templates from `loanops/templates`, escaped, failing on any undefined name."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("loanops", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
