"""Which model the API serves now, and how it changes: start-up loading and alias hot swap.

`ModelHolder.current` is one reference. A request reads it once and scores with what it got, so
a swap never changes the model under a request in flight. Loading runs in a worker thread: MLflow
I/O and compilation must not stall the event loop that answers requests meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from tenacity import AsyncRetrying, retry_if_result, wait_exponential

from loanops.model_ref import ModelRef
from loanops.schema import FeatureSchema
from serving.model import LoadedModel, ModelLoadError, load_version, resolve_version

logger = logging.getLogger(__name__)

_FIRST_BACKOFF_SECONDS = 0.5
_MAX_RETRY_SECONDS = 300.0


@dataclass(frozen=True)
class ReloadError:
    """The last failure to load a model, as `/v1/model` reports it."""

    version: str | None
    message: str
    at: datetime


class ModelHolder:
    """The serving model, loaded from `ref` and kept in step with its alias."""

    def __init__(
        self,
        client_factory: Callable[[], MlflowClient],
        ref: ModelRef,
        schema: FeatureSchema,
        *,
        poll_seconds: float,
        max_backoff_seconds: float,
        on_loaded: Callable[[LoadedModel], None] = lambda model: None,
        on_failure: Callable[[], None] = lambda: None,
    ) -> None:
        self._client_factory = client_factory
        self._client: MlflowClient | None = None
        self.ref = ref
        self.schema = schema
        self.poll_seconds = poll_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._on_loaded = on_loaded
        self._on_failure = on_failure
        self.current: LoadedModel | None = None
        self.last_error: ReloadError | None = None
        self.reload_failures = 0
        # (version, monotonic time before which it is not retried, failed attempts)
        self._retry: tuple[str, float, int] | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    async def run(self) -> None:
        """Load the first model, retrying with backoff, then follow the alias until cancelled."""
        first_load = AsyncRetrying(
            retry=retry_if_result(lambda loaded: not loaded),
            wait=wait_exponential(multiplier=_FIRST_BACKOFF_SECONDS, max=self.max_backoff_seconds),
        )
        await first_load(self.refresh)
        if not self.ref.follows_alias:
            return
        while True:
            await asyncio.sleep(self.poll_seconds)
            await self.refresh()

    async def refresh(self) -> bool:
        """Bring `current` in line with `ref` once; True when it is (already or now).

        Failures are recorded, counted and logged, and never raised: the model that serves keeps
        serving.
        """
        version: str | None = None
        try:
            version = await asyncio.to_thread(resolve_version, self.client, self.ref)
            if self.current is not None and self.current.version == version:
                self.last_error = None  # e.g. the alias went back from a broken version
                return True
            if self._waiting_to_retry(version):
                return False
            loaded = await asyncio.to_thread(
                load_version, self.client, self.ref.name, version, expected_schema=self.schema
            )
        except (ModelLoadError, MlflowException, OSError) as error:
            self._failed(version, error)
            return False
        except Exception as error:  # a broken artifact can fail in many ways; never crash serving
            logger.exception("unexpected error loading %s version %s", self.ref, version)
            self._failed(version, error)
            return False
        previous = self.current
        self.current = loaded
        self.last_error = None
        self._on_loaded(loaded)
        logger.info(
            "serving %s version %s (was %s)",
            self.ref.name,
            loaded.version,
            previous.version if previous else "none",
        )
        return True

    def _waiting_to_retry(self, version: str) -> bool:
        """Whether `version` failed lately: a broken version is retried with backoff, not on
        every poll, so it costs neither a download nor a warning every few seconds."""
        if self._retry is None or self._retry[0] != version:
            return False
        return time.monotonic() < self._retry[1]

    def _failed(self, version: str | None, error: BaseException) -> None:
        if version is not None:
            attempts = self._retry[2] + 1 if self._retry and self._retry[0] == version else 1
            delay = min(self.poll_seconds * 2**attempts, _MAX_RETRY_SECONDS)
            self._retry = (version, time.monotonic() + delay, attempts)
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        self.last_error = ReloadError(version=version, message=message, at=datetime.now(UTC))
        self.reload_failures += 1
        self._on_failure()
        serving = f"; still serving version {self.current.version}" if self.current else ""
        logger.warning(
            "cannot load %s (version %s): %s%s", self.ref, version or "?", message, serving
        )
