"""Client settings: how the CLI reaches a running scoring API (`loanops batch ...`)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from loanops.settings.environment import SettingsGroup, variables_prefixed


class ClientSettings(SettingsGroup):
    """The API the CLI calls; fields are read from `LOANOPS_API_<FIELD>`.

    The CLI's, not a pod's: the API itself reads its accepted keys from `LOANOPS_API_KEYS`.
    """

    model_config = variables_prefixed("API_")

    url: str = Field(
        default="http://127.0.0.1:8000",
        pattern=r"^https?://",
        description="Base URL of the scoring API, e.g. `http://127.0.0.1:8000` (`make stack`).",
    )
    key: SecretStr | None = Field(
        default=None,
        description="The `X-API-Key` the CLI sends: one of the API's `LOANOPS_API_KEYS`.",
    )
