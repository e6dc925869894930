"""The challenger beside the champion: which version holds the challenger alias, and its state.

Unlike `serving.state.ModelHolder`, which retries its first load forever and never drops the
model that serves, a challenger is optional: no alias means no challenger, and a version that
fails to load or raises while scoring is dropped and not retried until the alias moves to
another version. The champion answers meanwhile; the challenger only ever adds to a decision.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from mlflow import MlflowClient

from loanops.model_ref import ModelRef
from loanops.schema import FeatureSchema
from serving.model import LoadedModel, ModelLoadError, load_version, resolve_version

logger = logging.getLogger(__name__)

ChallengerState = Literal["attached", "detached", "failed"]
FailureStage = Literal["load", "score"]


@dataclass(frozen=True)
class ChallengerError:
    """Why the challenger was dropped, as `/v1/model` reports it."""

    version: str | None
    stage: FailureStage
    message: str
    at: datetime


class ChallengerHolder:
    """The version under `ref`'s alias, loaded, or None when detached or failed."""

    def __init__(
        self,
        client_factory: Callable[[], MlflowClient],
        ref: ModelRef,
        schema: FeatureSchema,
        *,
        poll_seconds: float,
        on_failure: Callable[[FailureStage], None] = lambda stage: None,
    ) -> None:
        self._client_factory = client_factory
        self._client: MlflowClient | None = None
        self.ref = ref
        self.schema = schema
        self.poll_seconds = poll_seconds
        self._on_failure = on_failure
        self.current: LoadedModel | None = None
        self.last_error: ChallengerError | None = None
        # The version that failed; it is not loaded again until the alias names another one.
        self._failed_version: str | None = None

    @property
    def state(self) -> ChallengerState:
        if self.current is not None:
            return "attached"
        return "failed" if self._failed_version is not None else "detached"

    @property
    def version(self) -> str | None:
        """The version attached, or the one that failed."""
        return self.current.version if self.current is not None else self._failed_version

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    async def run(self) -> None:
        """Follow the alias until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(self.poll_seconds)

    async def refresh(self) -> None:
        """Bring `current` in line with the alias once; never raises."""
        try:
            version = await asyncio.to_thread(resolve_version, self.client, self.ref)
        except ModelLoadError:
            if self.current is not None or self._failed_version is not None:
                logger.info("challenger alias %s removed: challenger detached", self.ref)
            self.current, self._failed_version, self.last_error = None, None, None
            return
        except Exception as error:  # registry unreachable: keep what we have, ask again later
            logger.warning("cannot resolve the challenger %s: %s", self.ref, error)
            return
        if self.current is not None and self.current.version == version:
            return
        if self._failed_version == version:
            return
        try:
            loaded = await asyncio.to_thread(
                load_version, self.client, self.ref.name, version, expected_schema=self.schema
            )
        except Exception as error:  # a broken artifact can fail in many ways
            self.current = None
            self._fail(version, "load", error)
            return
        self.current, self._failed_version, self.last_error = loaded, None, None
        logger.info("challenger %s version %s attached", self.ref.name, version)

    def scoring_failed(self, model: LoadedModel, error: BaseException) -> None:
        """Drop `model` after it raised while scoring, if it is still the one attached."""
        if self.current is not model:
            return
        self.current = None
        self._fail(model.version, "score", error)

    def _fail(self, version: str | None, stage: FailureStage, error: BaseException) -> None:
        self._failed_version = version
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        self.last_error = ChallengerError(version, stage, message, datetime.now(UTC))
        self._on_failure(stage)
        logger.warning(
            "challenger %s version %s failed to %s: %s; detached, the champion answers alone",
            self.ref.name,
            version,
            stage,
            message,
        )
