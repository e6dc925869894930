"""Batch workers: the Celery app, its tasks, and the scoring of one chunk of a batch file.

A job runs as three kinds of task on one queue, with its state kept in the `JobStore`:

    prepare(job)     split the upload into chunk files; queue one `chunk` task per chunk
    chunk(job, i)    validate, score and explain chunk i; keep its output and its decisions; the
                     chunk that finds every other chunk done assembles the result
    record(job, i)   write chunk i's decisions to the decision log; lowest priority, so results
                     come first, and retried until the database takes them

Every task is acknowledged only when it returns (`acks_late`), and a task whose process dies is
put back on the queue (`reject_on_worker_lost`), so a killed worker costs a rerun of its chunk,
never a lost one. Every step is idempotent: chunk files are named by index and replaced whole,
decisions are keyed by `<job id>-<row>`, and assembly happens once under the job's lock. There is
no chord: the last chunk to land finds out from the store, which a killed worker cannot confuse.

A job is scored by the version it was submitted with. Each worker process loads the configured
model when it starts (`worker_process_init`) and keeps the last few versions it needed.
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from loanops.explain import ReasonRanking, reason_code
from loanops.schema import Feature, FeatureSchema
from loanops.settings import Settings, get_settings
from serving.jobs import PREPARE_TASK, QUEUE, BatchFileError, ChunkCounts, JobStore

if TYPE_CHECKING:
    from celery import Celery, Task
    from mlflow import MlflowClient
    from sqlalchemy import Engine

    from loanops.decisions.record import Decision
    from serving.model import LoadedModel

logger = logging.getLogger(__name__)

CHUNK_TASK = "loanops.batch.chunk"
RECORD_TASK = "loanops.batch.record"
RECORD_PRIORITY = 9
"""Priority of recording decisions; with Redis, 0 (every other task) goes first."""
RETRY_DELAYS_SECONDS = (2, 5, 15, 30, 60)
"""Waits before each retry of a task that hit a transient error; then the job fails."""
MODELS_PER_PROCESS = 2
"""Loaded versions a worker process keeps: production, and the one a job pinned before a swap."""
_PROCESS_START_TIMEOUT_S = 300.0  # loading a model from the registry can take a while
_CATEGORIES_SHOWN = 12
_VALUE_SHOWN = 40
_NAN_TEXTS = frozenset({"nan", "+nan", "-nan"})
# Prefix of the feature columns in a chunk's decisions table.
_INPUT_PREFIX = "input:"


# --- validation and scoring of one chunk, without Celery ----------------------------------------


@dataclass(frozen=True)
class ValidatedChunk:
    """A chunk's feature columns cast for the model, and which rows may be scored."""

    columns: dict[str, np.ndarray]
    """Per feature, one value per row: float64 (NaN when missing) or object (None)."""
    texts: dict[str, pa.ChunkedArray]
    """The categorical features again, as Arrow text (null when missing)."""
    rejections: np.ndarray
    """Per row, why it is rejected ("; "-joined), or None when it is valid."""
    valid: np.ndarray
    """Per row, whether it may be scored."""

    def frame(self, rows: np.ndarray) -> pd.DataFrame:
        """The features of the given row positions, as `FeatureSchema.to_frame` takes them."""
        return pd.DataFrame(
            {name: values[rows] for name, values in self.columns.items()}, copy=False
        )


class _Problems:
    """Per-row problem messages, gathered feature by feature."""

    def __init__(self, n_rows: int) -> None:
        self._by_row: dict[int, list[str]] = {}
        self.n_rows = n_rows

    def add(self, mask: np.ndarray, message: str) -> None:
        for i in np.flatnonzero(mask).tolist():
            self._by_row.setdefault(i, []).append(message)

    def add_each(self, mask: np.ndarray, messages: Sequence[str]) -> None:
        for i, message in zip(np.flatnonzero(mask).tolist(), messages, strict=True):
            self._by_row.setdefault(i, []).append(message)

    def reasons(self) -> np.ndarray:
        reasons = np.full(self.n_rows, None, dtype=object)
        for i, messages in self._by_row.items():
            reasons[i] = "; ".join(messages)
        return reasons

    def valid(self) -> np.ndarray:
        valid = np.ones(self.n_rows, dtype=bool)
        valid[list(self._by_row)] = False
        return valid


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _is_text(data_type: pa.DataType) -> bool:
    return bool(pa.types.is_string(data_type) or pa.types.is_large_string(data_type))


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column


def _numbers(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A column as float64, with masks of missing values and of values that are no number.

    Null, blank text and NaN count as missing. Text is parsed in one vectorised cast; only a
    column holding something that is not a number takes the slower, per-value way round.
    """
    column = _decoded(column)
    data_type = column.type
    n_rows = len(column)
    if (
        pa.types.is_integer(data_type)
        or pa.types.is_floating(data_type)
        or pa.types.is_decimal(data_type)
    ):
        values = column.cast(pa.float64()).to_numpy().astype(np.float64, copy=True)
        return values, np.isnan(values), np.zeros(n_rows, dtype=bool)
    if not _is_text(data_type):
        missing = column.is_null().to_numpy(zero_copy_only=False)
        return np.full(n_rows, np.nan), missing, ~missing
    text = pc.utf8_trim_whitespace(column)
    blank = pc.fill_null(pc.equal(text, ""), True).to_numpy(zero_copy_only=False)
    try:
        values = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        nan_text = np.isnan(values)
    except pa.ArrowInvalid:
        raw = pd.Series(text.to_numpy(zero_copy_only=False), dtype=object)
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        nan_text = raw.str.lower().isin(_NAN_TEXTS).to_numpy(dtype=bool)
    missing = blank | (np.isnan(values) & nan_text)
    not_number = np.isnan(values) & ~missing
    return values, missing, not_number


def _texts(column: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """A column as text, null where missing (or blank), or None when it is no text.

    Whole numbers are taken as their text, so a Parquet `term` of 36 is the category "36".
    """
    column = _decoded(column)
    if not _is_text(column.type):
        if not (pa.types.is_integer(column.type) or pa.types.is_null(column.type)):
            return None
        column = column.cast(pa.string())
    blank = pc.equal(column, "")
    if pc.any(blank).as_py():
        column = pc.if_else(blank, pa.scalar(None, pa.string()), column)
    return column


def _check_number(feature: Feature, column: pa.ChunkedArray, problems: _Problems) -> np.ndarray:
    name = feature.name
    values, missing, not_number = _numbers(column)
    problems.add(not_number, f"{name}: not a number")
    if not feature.nullable:
        problems.add(missing, f"{name}: missing")
    present = ~missing & ~not_number
    finite = np.isfinite(values)
    problems.add(present & ~finite, f"{name}: must be a finite number")
    usable = present & finite
    if feature.kind == "int":
        with np.errstate(invalid="ignore"):
            problems.add(usable & (values != np.floor(values)), f"{name}: must be a whole number")
    with np.errstate(invalid="ignore"):
        if feature.minimum is not None:
            problems.add(
                usable & (values < feature.minimum),
                f"{name}: must be >= {_number_text(feature.minimum)}",
            )
        if feature.maximum is not None:
            problems.add(
                usable & (values > feature.maximum),
                f"{name}: must be <= {_number_text(feature.maximum)}",
            )
    values[missing] = np.nan
    return values


def _check_category(
    feature: Feature, column: pa.ChunkedArray, problems: _Problems
) -> tuple[np.ndarray, pa.ChunkedArray]:
    name = feature.name
    categories = feature.categories or ()
    texts = _texts(column)
    if texts is None:
        missing = column.is_null().to_numpy(zero_copy_only=False)
        problems.add(~missing, f"{name}: must be text, one of {_listing(categories)}")
        texts = pa.chunked_array([pa.nulls(len(column), pa.string())])
    else:
        missing = texts.is_null().to_numpy(zero_copy_only=False)
        known = pc.is_in(texts, value_set=pa.array(categories, pa.string()))
        unknown = ~known.to_numpy(zero_copy_only=False) & ~missing
        if unknown.any():
            shown = _listing(categories)
            problems.add_each(
                unknown,
                [
                    f"{name}: {_shown(v)} is not one of {shown}"
                    for v in texts.filter(pa.array(unknown)).to_pylist()
                ],
            )
    if not feature.nullable:
        problems.add(missing, f"{name}: missing")
    values = texts.to_numpy(zero_copy_only=False).astype(object, copy=False)
    return values, texts


def _listing(categories: Sequence[str]) -> str:
    if len(categories) <= _CATEGORIES_SHOWN:
        return ", ".join(categories)
    return f"{', '.join(categories[:_CATEGORIES_SHOWN])}, … ({len(categories)} values)"


def _shown(value: Any) -> str:
    text = str(value)
    if len(text) > _VALUE_SHOWN:
        text = text[: _VALUE_SHOWN - 1] + "…"
    return repr(text)


def validate_chunk(table: pa.Table, schema: FeatureSchema) -> ValidatedChunk:
    """Check every row of a chunk against the schema's rules, a column at a time.

    The rules are those of `FeatureSchema.request_model`: numbers within the feature's range,
    counts whole, floats finite, categories among the declared values, and a value present
    unless the feature is nullable. A file carries no JSON types, so numeric text and whole
    floats are taken as numbers, and whole numbers as category text.

    Args:
        table: rows of the batch file, holding at least the feature columns.
        schema: the model's feature schema.

    Returns:
        The cast feature columns and, per row, its rejection reason: each broken rule as
        `feature: what is wrong`, joined with "; " (None for a valid row).
    """
    problems = _Problems(table.num_rows)
    columns: dict[str, np.ndarray] = {}
    texts: dict[str, pa.ChunkedArray] = {}
    for feature in schema.features:
        column = table.column(feature.name)
        if feature.is_categorical:
            columns[feature.name], texts[feature.name] = _check_category(feature, column, problems)
        else:
            columns[feature.name] = _check_number(feature, column, problems)
    return ValidatedChunk(
        columns=columns, texts=texts, rejections=problems.reasons(), valid=problems.valid()
    )


@dataclass(frozen=True)
class ScoredChunk:
    """One chunk, scored: the output rows, the decisions to record, and its counts."""

    table: pa.Table
    """The input columns plus `row`, `probability`, `decision`, `reason_codes` and
    `rejection_reason`, one row per input row, in order."""
    decisions: pa.Table
    """One row per scored row: `row`, `probability`, `decision`, `reasons` (JSON) and the
    features as validated (`input:<name>`); the model, threshold, job and time ride in the
    schema's metadata.
    `decisions_from_table` turns it into decision-log records."""
    counts: ChunkCounts


def score_chunk(
    table: pa.Table,
    model: LoadedModel,
    *,
    first_row: int,
    job_id: str,
    top_reasons: int,
    decided_at: datetime | None = None,
) -> ScoredChunk:
    """Validate, score and explain one chunk of a batch file.

    Args:
        table: the chunk's input rows, every column of the file.
        model: the version the job is pinned to.
        first_row: input position of the chunk's first row.
        job_id: the job, for the decisions' request ids `<job id>-<row>`.
        top_reasons: most adverse-action reasons per declined row.
        decided_at: time stamp of the decisions; now by default.

    Returns:
        The scored chunk. Declined rows carry their adverse-action reason codes (";"-joined);
        approved and rejected rows carry none.
    """
    n_rows = table.num_rows
    checked = validate_chunk(table, model.schema)
    valid = checked.valid
    scored_rows = np.flatnonzero(valid)
    features = checked.frame(scored_rows)
    probability = np.full(n_rows, np.nan)
    decision = np.full(n_rows, None, dtype=object)
    codes = np.full(n_rows, None, dtype=object)
    reasons = np.full(len(scored_rows), "[]", dtype=object)
    if len(scored_rows):
        p, decided = model.score_frame(features, cast=False)  # validate_chunk cast it already
        probability[scored_rows] = p
        decision[scored_rows] = decided
        declined = np.flatnonzero(decided == "decline")
        if len(declined):
            ranking = model.explainer.rank_reasons(
                features.iloc[declined],
                p[declined],
                functools.partial(model.scorer.score_frame, cast=False),
                top=top_reasons,
            )
            reasons[declined], codes[scored_rows[declined]] = _reason_texts(ranking)
    rows = np.arange(first_row, first_row + n_rows, dtype=np.int64)
    output = (
        table.append_column("row", pa.array(rows))
        .append_column("probability", pa.array(probability, mask=~valid, type=pa.float64()))
        .append_column("decision", pa.array(decision, type=pa.string()))
        .append_column("reason_codes", pa.array(codes, type=pa.string()))
        .append_column("rejection_reason", pa.array(checked.rejections, type=pa.string()))
    )
    metadata = {
        "job_id": job_id,
        "model_name": model.name,
        "model_version": model.version,
        "threshold": repr(float(model.threshold)),
        "decided_at": (decided_at or datetime.now(UTC)).isoformat(),
    }
    decisions = pa.table(
        {
            "row": pa.array(rows[scored_rows]),
            "probability": pa.array(probability[scored_rows], type=pa.float64()),
            "decision": pa.array(decision[scored_rows], type=pa.string()),
            "reasons": pa.array(reasons, type=pa.string()),
            **{
                f"{_INPUT_PREFIX}{feature.name}": _input_column(checked, feature, valid)
                for feature in model.schema.features
            },
        }
    ).replace_schema_metadata(metadata)
    counts = ChunkCounts(rows=n_rows, valid=len(scored_rows), rejected=n_rows - len(scored_rows))
    return ScoredChunk(table=output, decisions=decisions, counts=counts)


def _reason_texts(ranking: ReasonRanking) -> tuple[list[str], list[str]]:
    """Per row, its reasons as decision-log JSON and its reason codes joined with ";"."""
    codes = [reason_code(name) for name in ranking.features]
    # Each reason is `{"code": ..., "text": ..., "impact": ...}`; all but the impact is fixed
    # per feature, so it is encoded once.
    heads = [
        orjson.dumps({"code": code, "text": text}).decode()[:-1] + ',"impact":'
        for code, text in zip(codes, ranking.texts, strict=True)
    ]
    as_json: list[str] = []
    joined: list[str] = []
    for row_order, row_impacts in zip(
        ranking.order.tolist(), ranking.impacts.tolist(), strict=True
    ):
        kept = [(j, impact) for j, impact in zip(row_order, row_impacts, strict=True) if impact > 0]
        as_json.append("[" + ",".join(f"{heads[j]}{impact!r}}}" for j, impact in kept) + "]")
        joined.append(";".join(codes[j] for j, _ in kept))
    return as_json, joined


def _input_column(checked: ValidatedChunk, feature: Feature, valid: np.ndarray) -> pa.Array:
    """A validated feature of the scored rows as the decision log keeps it."""
    if feature.is_categorical:
        return checked.texts[feature.name].filter(pa.array(valid)).combine_chunks()
    array = pa.array(checked.columns[feature.name][valid], from_pandas=True)
    # Validated counts are whole, so the cast is exact; a missing value stays null.
    return array.cast(pa.int64()) if feature.kind == "int" else array


def decisions_from_table(table: pa.Table) -> list[Decision]:
    """Decision-log records from a chunk's decisions table (see `ScoredChunk.decisions`).

    Request ids are `<job id>-<row>`, so writing the same chunk twice records nothing more.
    """
    from loanops.decisions.record import Decision

    metadata = {
        key.decode(): value.decode() for key, value in (table.schema.metadata or {}).items()
    }
    job_id = metadata["job_id"]
    decided_at = datetime.fromisoformat(metadata["decided_at"])
    threshold = float(metadata["threshold"])
    names = [name for name in table.column_names if name.startswith(_INPUT_PREFIX)]
    columns = [table.column(name).to_pylist() for name in names]
    names = [name.removeprefix(_INPUT_PREFIX) for name in names]
    inputs = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    return [
        Decision(
            request_id=f"{job_id}-{row}",
            decided_at=decided_at,
            model_name=metadata["model_name"],
            model_version=metadata["model_version"],
            threshold=threshold,
            inputs=row_inputs,
            probability=probability,
            decision=decision,
            reasons=orjson.loads(reasons) if reasons != "[]" else [],
            source="batch",
            job_id=job_id,
        )
        for row, row_inputs, probability, decision, reasons in zip(
            table.column("row").to_pylist(),
            inputs,
            table.column("probability").to_pylist(),
            table.column("decision").to_pylist(),
            table.column("reasons").to_pylist(),
            strict=True,
        )
    ]


# --- what a worker process holds ---------------------------------------------------------------


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
            _freeze_heap()
            logger.info("worker %d loaded %s v%s", os.getpid(), name, version)
            return model

    def warm(self) -> None:
        """Load the configured model now; a failure is logged, and loading retried on demand."""
        from serving.model import ModelRef, resolve_version

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
        """
        from loanops.decisions.write import write_decisions

        records = decisions_from_table(decisions)
        write_decisions(self.engine, records)
        return len(records)

    def process_started(self, **_: Any) -> None:
        """`worker_process_init`: one thread for numerical libraries, and the model loaded."""
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
        self.models.warm()
        _freeze_heap()


def _freeze_heap() -> None:
    """Keep what the process holds for good (modules, models) out of the garbage collector.

    A worker holds a few hundred thousand long-lived objects, and each chunk makes enough
    short-lived ones to trigger full collections, which walked all of them: a third of the
    chunks took twice as long. Frozen objects are still freed by reference counting.
    """
    gc.collect()
    gc.freeze()


def is_transient(error: BaseException) -> bool:
    """Whether a retry may succeed: the registry, the database, Redis or the network let us down.

    A model that cannot serve, a bad file or a bug is no such error: retrying changes nothing.
    """
    import redis
    import requests
    from kombu.exceptions import OperationalError as QueueError
    from mlflow.exceptions import MlflowException
    from sqlalchemy import exc as sql_errors

    if isinstance(error, MlflowException):
        try:
            return int(error.get_http_status_code()) >= 500
        except (TypeError, ValueError):
            return False
    if isinstance(error, sql_errors.DBAPIError):
        return bool(error.connection_invalidated) or isinstance(
            error, sql_errors.OperationalError | sql_errors.InterfaceError
        )
    return isinstance(
        error,
        ConnectionError
        | TimeoutError
        | requests.ConnectionError
        | requests.Timeout
        | sql_errors.TimeoutError
        | sql_errors.DisconnectionError
        | redis.ConnectionError
        | redis.TimeoutError
        | QueueError,
    )


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# --- the Celery app ----------------------------------------------------------------------------


def create_celery(settings: Settings) -> Celery:
    """The Celery app of the batch workers, with its tasks, on the settings' Redis.

    Chunks are acknowledged late and requeued when their process dies; each process takes one
    message at a time, so a killed process holds at most one chunk; a message not acknowledged
    within `batch_visibility_seconds` goes to another worker.

    Raises:
        ValueError: when `redis_url` is not set.
    """
    from celery import Celery
    from celery.exceptions import Retry
    from celery.signals import worker_process_init

    if not settings.redis_url:
        raise ValueError("batch jobs need Redis: set LOANOPS_REDIS_URL")
    app = Celery(
        "loanops", broker=settings.redis_url, backend=settings.redis_url, set_as_current=False
    )
    transport = {
        "visibility_timeout": settings.batch_visibility_seconds,
        "socket_connect_timeout": 5,
        "socket_timeout": 30,
    }
    app.conf.update(
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_proc_alive_timeout=_PROCESS_START_TIMEOUT_S,
        worker_hijack_root_logger=False,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    runtime = WorkerRuntime(settings)
    worker_process_init.connect(
        runtime.process_started, weak=False, dispatch_uid=f"loanops-warm-{id(app)}"
    )
    options: dict[str, Any] = {
        "bind": True,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "max_retries": len(RETRY_DELAYS_SECONDS),
        "ignore_result": True,
    }

    def guarded(task: Task, job_id: str, what: str, work: Any) -> None:
        """Run `work`; retry what is transient, and fail the job on anything else."""
        try:
            work()
        except Retry:
            raise
        except FileNotFoundError:
            if runtime.store.get(job_id) is None:
                logger.info("batch job %s was deleted; dropping %s", job_id, what)
                return
            runtime.store.mark_failed(job_id, f"{what} failed: a job file is missing")
            raise
        except BatchFileError as error:
            runtime.store.mark_failed(job_id, str(error))
        except Exception as error:
            from serving.model import ModelLoadError

            retries = task.request.retries
            if is_transient(error) and retries < len(RETRY_DELAYS_SECONDS):
                delay = RETRY_DELAYS_SECONDS[retries]
                logger.warning(
                    "batch job %s: %s hit %s; retry %d in %d s",
                    job_id,
                    what,
                    _describe(error),
                    retries + 1,
                    delay,
                )
                raise task.retry(exc=error, countdown=delay) from error
            runtime.store.mark_failed(job_id, f"{what} failed: {_describe(error)}")
            if not isinstance(error, ModelLoadError):
                raise

    @app.task(name=PREPARE_TASK, **options)
    def prepare(self: Task, job_id: str) -> None:
        """Split a job's input into chunks and queue the chunks not yet scored."""
        store = runtime.store

        def work() -> None:
            job = store.get(job_id)
            if job is None or job.finished:
                return
            store.mark_running(job_id)
            store.split_input(job_id, settings.batch_chunk_rows)
            pending = store.pending_chunks(job_id)
            for index in pending:
                score.apply_async((job_id, index), queue=QUEUE)
            if not pending:
                store.assemble(job_id)

        guarded(self, job_id, "splitting the file", work)

    @app.task(name=CHUNK_TASK, **options)
    def score(self: Task, job_id: str, index: int) -> None:
        """Score one chunk with the job's version; assemble the result if it was the last."""
        store = runtime.store

        def work() -> None:
            job = store.get(job_id)
            if job is None:
                return
            if not job.finished and not store.chunk_done(job_id, index):
                plan = store.plan(job_id)
                if plan.chunk_starts is None:
                    raise ValueError(f"chunk {index} of job {job_id} arrived before the split")
                model = runtime.models.get(job.model_name, job.model_version)
                started, cpu = time.perf_counter(), time.process_time()
                scored = score_chunk(
                    store.read_chunk(job_id, index),
                    model,
                    first_row=plan.chunk_starts[index],
                    job_id=job_id,
                    top_reasons=settings.reasons_top,
                )
                store.write_chunk_output(
                    job_id, index, scored.table, scored.counts, scored.decisions
                )
                logger.info(
                    "batch job %s: chunk %d, %d rows (%d rejected) in %.3f s, CPU %.3f s",
                    job_id,
                    index,
                    scored.counts.rows,
                    scored.counts.rejected,
                    time.perf_counter() - started,
                    time.process_time() - cpu,
                )
            # Also when the job has finished meanwhile: a redelivered chunk whose first run was
            # killed after its output but before this line is the only one that can queue it.
            if store.chunk_done(job_id, index) and not store.decisions_recorded(job_id, index):
                # Behind every chunk still to score: the result first, then the log.
                record.apply_async((job_id, index), queue=QUEUE, priority=RECORD_PRIORITY)
            if not job.finished and not store.pending_chunks(job_id):
                store.assemble(job_id)

        guarded(self, job_id, f"chunk {index}", work)

    @app.task(name=RECORD_TASK, **{**options, "max_retries": None})
    def record(self: Task, job_id: str, index: int) -> None:
        """Write one scored chunk's decisions to the decision log; retried until it can."""
        store = runtime.store
        try:
            job = store.get(job_id)
            decisions = None if job is None else store.read_decisions(job_id, index)
            if job is None or decisions is None:
                return
            count = runtime.record(decisions)
            store.mark_recorded(job_id, index, count)
        except FileNotFoundError:
            if store.get(job_id) is None:
                return  # the job was deleted
            raise
        except Exception as error:
            if not is_transient(error):
                # The decisions stay on the volume, where an operator can replay them.
                logger.exception("batch job %s: chunk %d's decisions not recorded", job_id, index)
                raise
            delay = RETRY_DELAYS_SECONDS[min(self.request.retries, len(RETRY_DELAYS_SECONDS) - 1)]
            logger.warning(
                "batch job %s: recording chunk %d hit %s; retry in %d s",
                job_id,
                index,
                _describe(error),
                delay,
            )
            raise self.retry(exc=error, countdown=delay) from error

    return app


def run_worker(
    settings: Settings,
    *,
    concurrency: int = 1,
    loglevel: str = "INFO",
    extra_args: Sequence[str] = (),
) -> None:
    """Run a batch worker in the foreground until it is stopped (SIGTERM: warm shutdown).

    Args:
        settings: configuration; `redis_url` must be set.
        concurrency: worker processes, each scoring one chunk at a time.
        loglevel: Celery's log level.
        extra_args: more `celery worker` arguments.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # A long-running service's log is no place for download progress bars.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    app = create_celery(settings)
    _preload()
    _freeze_heap()  # before the pool forks: the processes inherit it
    argv = [
        "worker",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel}",
        f"--queues={QUEUE}",
        "--pool=prefork",
        f"--hostname=loanops-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
        *extra_args,
    ]
    app.worker_main(argv)


def _preload() -> None:
    """Import what pool processes need before they fork, so a replaced one starts in a moment."""
    import importlib

    for module in (
        "alembic.command",
        "mlflow.sklearn",
        "mlflow.store.tracking.sqlalchemy_store",
        "mlflow.store.model_registry.sqlalchemy_store",
        "skops.io",
        "loanops.decisions.write",
        "loanops.registry",
        "serving.model",
    ):
        try:
            importlib.import_module(module)
        except ImportError:  # an optional store or format; the process imports what it needs
            logger.debug("not preloading %s", module)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m serving.worker`: a worker configured from `LOANOPS_*` variables."""
    parser = argparse.ArgumentParser(description="Run a loanops batch worker.")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--loglevel", default="INFO")
    args, extra = parser.parse_known_args(argv)
    run_worker(
        get_settings(), concurrency=args.concurrency, loglevel=args.loglevel, extra_args=extra
    )


if __name__ == "__main__":
    main()
