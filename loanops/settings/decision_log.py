"""Decision-log settings: where decisions are recorded and how the writer batches them."""

from __future__ import annotations

from pydantic import Field, SecretStr

from loanops.settings.environment import SettingsGroup, variables_prefixed


class DecisionLogSettings(SettingsGroup):
    """The decision log; fields are read from `LOANOPS_DECISION_LOG_<FIELD>`, the URL from
    `LOANOPS_DATABASE_URL`."""

    model_config = variables_prefixed("DECISION_LOG_")

    database_url: SecretStr | None = Field(
        default=None,
        validation_alias="LOANOPS_DATABASE_URL",
        description=(
            "SQLAlchemy URL of the decision log; unset means SQLite under `home`. A secret: it "
            "can carry a password."
        ),
    )
    batch_size: int = Field(
        default=500, ge=1, description="Most decisions the log writes in one transaction."
    )
    flush_seconds: float = Field(
        default=0.25, gt=0, description="Longest a decision waits before the log writes it."
    )
    writer_nice: int = Field(
        default=19,
        ge=0,
        le=19,
        description=(
            "How far the API's writer process yields the CPU to request handling (its Unix "
            "nice increment, 0 to 19). It writes in bursts, and a request that waits behind "
            "one waits a scheduler slice. On a node whose every core is busy it writes only "
            "what the requests leave it: if /readyz reports a backlog while the database is "
            "healthy, lower this."
        ),
    )
    ready_backlog: int = Field(
        default=5_000,
        ge=1,
        description=(
            "Decisions recorded but not yet in the database above which /readyz answers 503: "
            "the log is falling behind."
        ),
    )
    memory_backlog: int = Field(
        default=20_000,
        ge=1,
        description=(
            "Most decisions the API holds in memory for the writer; beyond it new ones go to "
            "overflow files under the storage folder, written once the database is back."
        ),
    )
