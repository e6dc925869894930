"""What a batch worker process holds: the job store, the models it loaded and the decision log.

A job is scored by the version it was submitted with. Each worker process loads the configured
model when it starts (`worker_process_init`) and keeps the last few versions it needed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from loanops.settings import Settings
from serving.batch.chunks import decision_columns
from serving.batch.store import JobStore
from serving.heap import freeze_heap

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from sqlalchemy import Engine

    from serving.model import LoadedModel

logger = logging.getLogger(__name__)

MODELS_PER_PROCESS = 3
"""Loaded versions a worker process keeps: production, the one a job pinned before a swap, and
the challenger that shadows jobs."""


class ModelCache:
    """The versions a worker process has loaded, the most recently used few of them."""

    def __init__(self, settings: Settings, size: int = MODELS_PER_PROCESS) -> None:
        self._settings = settings
        self._size = size
        self._models: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._client: MlflowClient | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from loanops.registry import connect

            self._client = connect(self._settings)
        return self._client

    @property
    def versions(self) -> list[tuple[str, str]]:
        """(name, version) of each loaded model, least recently used first."""
        return list(self._models)

    def get(self, name: str, version: str) -> LoadedModel:
        """The loaded version, loading it (and dropping the least recently used) if need be.

        Raises:
            ModelLoadError: when the version cannot serve.
            MlflowException: when the registry cannot be reached (transient).
        """
        from serving.model import load_version

        key = (name, str(version))
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
            model = load_version(self.client, name, str(version))
            self._models[key] = model
            while len(self._models) > self._size:
                self._models.popitem(last=False)
            freeze_heap()
            logger.info("worker %d loaded %s v%s", os.getpid(), name, version)
            return model

    def warm(self) -> None:
        """Load the configured model now; a failure is logged, and loading retried on demand."""
        from loanops.model_ref import ModelRef
        from serving.model import resolve_version

        ref = ModelRef.parse(self._settings.model_uri)
        try:
            self.get(ref.name, resolve_version(self.client, ref))
        except Exception as error:  # the worker still starts; tasks load what they need
            logger.warning("worker %d could not load %s at start: %s", os.getpid(), ref, error)


class WorkerRuntime:
    """Per-process state of a worker: the job store, loaded models and the decision log."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = JobStore.from_settings(settings)
        self.models = ModelCache(settings)
        self._engine: Engine | None = None
        self._engine_pid: int | None = None

    @property
    def engine(self) -> Engine:
        """The decision log's engine, created (and the database migrated) once per process."""
        if self._engine is None or self._engine_pid != os.getpid():
            from loanops.decisions.database import create_engine_for, migrate

            engine = create_engine_for(self.settings.decision_db_url)
            migrate(engine)
            self._engine, self._engine_pid = engine, os.getpid()
        return self._engine

    def record(self, decisions: pa.Table) -> int:
        """Write a chunk's decisions to the log; idempotent, so a rerun adds nothing.

        Returns:
            How many decisions the chunk holds.

        Raises:
            ValueError: A decision cannot be stored (the log refuses the chunk whole).
        """
        from loanops.decisions.bulk import write_segment

        model_name, model_version, columns = decision_columns(decisions)
        write_segment(self.engine, model_name, model_version, columns)
        return columns.num_rows

    def process_started(self, **_: Any) -> None:
        """`worker_process_init`: one thread for numerical libraries, and the model loaded."""
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
        # The parent's pooled connections are the parent's: this process opens its own.
        self.store.engine.dispose(close=False)
        self.models.warm()
        freeze_heap()


def preload() -> None:
    """Import what pool processes need before they fork, so a replaced one starts in a moment."""
    import importlib

    for module in (
        "alembic.command",
        "boto3",  # the S3 storage backend's client; half a second to import
        "mlflow.sklearn",
        "mlflow.store.tracking.sqlalchemy_store",
        "mlflow.store.model_registry.sqlalchemy_store",
        "skops.io",
        "loanops.decisions",
        "loanops.registry",
        "loanops.validation",
        "serving.model",
    ):
        try:
            importlib.import_module(module)
        except ImportError:  # an optional store or format; the process imports what it needs
            logger.debug("not preloading %s", module)
    _register_validation_backends()


def _register_validation_backends() -> None:
    """Validate once, so that pool processes inherit pandera's backends, registered on first use.

    Registering takes about half a second, which every replaced pool process would otherwise
    spend on its first chunk.
    """
    import pandas as pd
    import pandera.pandas as pandera

    rule = pandera.Column(checks=[pandera.Check.in_range(0, 1)], nullable=True)
    pandera.DataFrameSchema({"x": rule}).validate(pd.DataFrame({"x": [0.5]}), lazy=True)
