"""Serving settings: the model the API runs, its request limits and its API keys."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from loanops.model_ref import ModelRef
from loanops.settings.environment import SettingsGroup, variables_prefixed


class ServingSettings(SettingsGroup):
    """The API and the batch workers' model; each field is read from `LOANOPS_<FIELD>`."""

    model_config = variables_prefixed("")

    model_ref: str | None = Field(
        default=None,
        description=(
            "Model the serving tier runs: `models:/NAME@ALIAS` follows an alias, "
            "`models:/NAME/VERSION` pins one. Unset follows `production_alias` of `model_name`."
        ),
    )
    model_poll_seconds: float = Field(
        default=10.0, gt=0, description="How often serving checks whether its alias has moved."
    )
    model_load_max_backoff_seconds: float = Field(
        default=30.0, gt=0, description="Longest wait between attempts to load the model at start."
    )
    reasons_top: int = Field(
        default=4, ge=1, le=10, description="Adverse-action reasons returned per application."
    )
    max_sync_batch: int = Field(
        default=1000, ge=1, description="Most applications one `/v1/predict/batch` call may hold."
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest JSON request body the API accepts."
    )
    max_upload_bytes: int = Field(
        default=4 * 1024**3, ge=1024, description="Largest batch-job file the API accepts."
    )
    body_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Longest wait for the next part of a request body (or upload) before the "
        "API answers 408.",
    )
    challenger_alias: str = Field(
        default="challenger",
        min_length=1,
        description="Alias of the model version the API scores beside the champion, if set.",
    )
    challenger_share: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of applicants who receive the challenger's decision; 0 is shadow only.",
    )
    challenger_seed: int = Field(
        default=0, description="Seed of the applicant hash that picks the challenger's share."
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description=(
            "Comma-separated keys accepted in `X-API-Key`. Required outside dev; unset in dev "
            "leaves the scoring endpoints open."
        ),
    )

    @property
    def api_key_values(self) -> tuple[str, ...]:
        """The accepted API keys; empty when auth is off."""
        if self.api_keys is None:
            return ()
        return tuple(k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip())

    @field_validator("model_ref")
    @classmethod
    def _model_ref_is_a_registry_uri(cls, ref: str | None) -> str | None:
        if ref is not None:
            try:
                ModelRef.parse(ref)
            except ValueError as error:
                raise ValueError(f"model_ref {error}") from None
        return ref
