"""The batch-job store and chunk scoring without Redis or Celery: uploads, validation, chunks.

The store's tests run on both storage backends: the local folder, and a bucket on moto's S3
server on loopback (those cases are integration tests).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest
from sqlalchemy import select, update

from loanops.data import synthetic as syn
from loanops.decisions.bulk import check_columns
from loanops.decisions.database import create_engine_for
from serving.batch.chunks import decision_columns, score_chunk
from serving.batch.client import PREPARE_TASK, RECORD_PRIORITY, RECORD_TASK
from serving.batch.database import migrate
from serving.batch.job import BatchJob, is_job_id
from serving.batch.store import JobStore
from serving.batch.sweep import LostTask, claim_lost_work, sweep
from serving.batch.tables import ChunkRow, JobRow
from serving.batch.upload import BatchFileError, UploadTooLarge, detect_format
from serving.batch.validation import validate_chunk
from serving.model import LoadedModel
from tests.loaded_models import compiled_logreg
from tests.storage_fixtures import (
    BACKENDS,
    make_storage,
    s3_endpoint,  # noqa: F401  (a fixture)
)

SCHEMA = syn.SCHEMA
TYPES = ("int", "float", "category")


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    """A compiled logistic regression on synthetic loans; it declines about a fifth of them."""
    return compiled_logreg(4000, "3", seed=0)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    """A job store on each backend (files under `tmp_path`, or a bucket), state in SQLite there."""
    engine = create_engine_for(f"sqlite:///{tmp_path / 'jobs.db'}")
    migrate(engine)
    yield JobStore(make_storage(str(request.param), tmp_path, request), engine)
    engine.dispose()


def result_frame(store: JobStore, job_id: str) -> pd.DataFrame | None:
    """A succeeded job's scored file, read from its storage; None when there is none."""
    key = store.result_key(job_id)
    if key is None:
        return None
    with store.storage.local_file(key) as path:
        return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)


@pytest.fixture(scope="module")
def applicants() -> pd.DataFrame:
    return syn.generate(1000, seed=5)


async def _pieces(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def receive(
    store: JobStore,
    data: bytes,
    filename: str = "applications.csv",
    content_type: str | None = None,
    max_bytes: int = 1 << 30,
) -> BatchJob:
    return asyncio.run(
        store.receive(
            _pieces(data),
            filename=filename,
            content_type=content_type,
            max_bytes=max_bytes,
            model_name="loan-default",
            model_version="3",
            schema=SCHEMA,
        )
    )


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def nothing_left(store: JobStore) -> bool:
    """No job in the database, no job file in storage, and nothing left in staging."""
    staged = list(store.storage.scratch.iterdir()) if store.storage.scratch.exists() else []
    return store.job_ids() == [] and store.storage.keys() == [] and staged == []


# --- format and ids ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "content_type", "head", "expected"),
    [
        ("a.csv", None, b"x,y\n", "csv"),
        ("a.CSV", "application/octet-stream", b"x,y\n", "csv"),
        ("upload", "text/csv; charset=utf-8", b"x,y\n", "csv"),
        ("upload", "application/vnd.ms-excel", b"x,y\n", "csv"),
        ("upload", None, b"x,y\n", "csv"),
        ("a.parquet", None, b"PAR1....", "parquet"),
        ("upload", "application/octet-stream", b"PAR1....", "parquet"),
        ("a.csv", "text/csv", b"PAR1....", "parquet"),  # the bytes win over the name
    ],
)
def test_the_format_comes_from_bytes_name_and_type(
    filename: str, content_type: str | None, head: bytes, expected: str
) -> None:
    assert detect_format(filename, content_type, head) == expected


@pytest.mark.parametrize(
    ("filename", "content_type", "head", "message"),
    [
        ("a.parquet", None, b"x,y\n", "not a Parquet file"),
        ("upload", "application/vnd.apache.parquet", b"x,y\n", "not a Parquet file"),
        ("a.xlsx", None, b"PK\x03\x04", "unsupported file type '.xlsx'"),
        ("upload", "application/json", b"{}", "unsupported content type"),
        ("upload", None, b"\x00\x01binary", "cannot tell the file's format"),
    ],
)
def test_other_formats_are_refused_by_name(
    filename: str, content_type: str | None, head: bytes, message: str
) -> None:
    with pytest.raises(BatchFileError, match=message):
        detect_format(filename, content_type, head)


@pytest.mark.parametrize("job_id", ["", "../../etc/passwd", "A" * 32, "0" * 31, "0" * 32 + "/x"])
def test_anything_but_a_job_id_finds_no_job(tmp_path: Path, store: JobStore, job_id: str) -> None:

    assert not is_job_id(job_id)
    assert store.get(job_id) is None
    assert store.result_key(job_id) is None
    assert store.delete(job_id) is False


# --- receiving ---------------------------------------------------------------------------------


def test_a_csv_upload_is_stored_counted_and_queued(
    tmp_path: Path, store: JobStore, applicants: pd.DataFrame
) -> None:
    data = applicants.head(250).to_csv(index=False).encode()

    job = receive(store, data, filename="book.csv")

    assert (job.status, job.input_format, job.total_rows, job.filename) == (
        "queued",
        "csv",
        250,
        "book.csv",
    )
    assert (job.model_name, job.model_version, job.rows_done, job.chunks) == (
        "loan-default",
        "3",
        0,
        0,
    )
    assert is_job_id(job.job_id)
    assert store.storage.keys(job.job_id) == [f"{job.job_id}/input.csv"]
    assert bytes(store.storage.read_bytes(f"{job.job_id}/input.csv")) == data
    with store.engine.connect() as connection:  # the state is in SQL, not in storage
        assert connection.scalar(select(JobRow.status).where(JobRow.id == job.job_id)) == "queued"
    assert (
        JobStore(store.storage, store.engine).get(job.job_id) == job
    )  # another instance, as after a restart


def test_a_parquet_upload_is_counted_from_its_footer(
    tmp_path: Path, store: JobStore, applicants: pd.DataFrame
) -> None:

    job = receive(store, parquet_bytes(applicants), filename="upload", content_type=None)

    assert (job.input_format, job.total_rows) == ("parquet", 1000)


def _csv(header: str, *rows: str) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


FEATURES = ",".join(SCHEMA.feature_names)


@pytest.mark.parametrize(
    ("data", "filename", "message"),
    [
        (b"", "a.csv", "the file is empty"),
        (b"\n\n", "a.csv", "the file is empty"),
        (_csv(FEATURES), "a.csv", "has a header but no data rows"),
        (_csv("id,loan_amnt,term"), "a.csv", "missing feature columns: int_rate, installment"),
        (_csv(FEATURES + ",id,id", "1," * 21 + "1"), "a.csv", "repeated: id"),
        (_csv(FEATURES + ",probability", "1," * 20 + "1"), "a.csv", "probability are reserved"),
        (_csv(FEATURES, "1,2", "3"), "a.csv", "the CSV file cannot be read"),
        (FEATURES.encode() + b"\n\xff\xfe" + b",x" * 19 + b"\n", "a.csv", "not UTF-8"),
        (b"not parquet at all", "a.parquet", "not a Parquet file"),
        (b"PAR1 but then nothing", "a.parquet", "the Parquet file cannot be read"),
    ],
)
def test_a_bad_file_is_refused_with_a_clear_message_and_leaves_nothing(
    tmp_path: Path, store: JobStore, data: bytes, filename: str, message: str
) -> None:

    with pytest.raises(BatchFileError, match=message):
        receive(store, data, filename=filename)

    assert nothing_left(store)


def test_a_header_of_a_million_columns_is_named_as_the_problem(
    tmp_path: Path, store: JobStore
) -> None:
    # pyarrow reads the header within one block and, finding no line end, says "Empty CSV file".
    header = ",".join(f"column_{i}" for i in range(1_000_000))
    data = f"{header}\n{','.join('1' * 1_000_000)}\n".encode()

    with pytest.raises(BatchFileError, match="the CSV header row is longer than 1 MiB") as error:
        receive(store, data, filename="wide.csv")

    assert "empty" not in str(error.value)
    assert "column names in its first MiB alone" in str(error.value)
    assert nothing_left(store)


def test_an_upload_over_the_limit_is_refused_and_leaves_nothing(
    tmp_path: Path, store: JobStore, applicants: pd.DataFrame
) -> None:

    with pytest.raises(UploadTooLarge, match="larger than the limit of 5000 bytes"):
        receive(store, applicants.to_csv(index=False).encode(), max_bytes=5000)

    assert nothing_left(store)


def test_an_upload_cut_short_leaves_nothing(tmp_path: Path, store: JobStore) -> None:

    async def disconnecting() -> AsyncIterator[bytes]:
        yield _csv(FEATURES)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        asyncio.run(
            store.receive(
                disconnecting(),
                filename="a.csv",
                content_type=None,
                max_bytes=1 << 20,
                model_name="m",
                model_version="1",
                schema=SCHEMA,
            )
        )

    assert nothing_left(store)


# --- validating and scoring a chunk ------------------------------------------------------------


def test_each_broken_rule_is_named_for_its_row(applicants: pd.DataFrame) -> None:
    frame = applicants.head(9).astype(object).astype(str)
    frame.loc[frame["emp_length"] == "None", "emp_length"] = ""
    frame.loc[0, "loan_amnt"] = "10"
    frame.loc[1, "grade"] = "Z"
    frame.loc[2, "annual_inc"] = ""
    frame.loc[3, "int_rate"] = "13.5%"
    frame.loc[4, "delinq_2yrs"] = "1.5"
    frame.loc[5, "dti"] = "inf"
    frame.loc[6, ["loan_amnt", "term"]] = ["50000", ""]
    frame.loc[7, "emp_length"] = ""  # nullable: fine
    frame.loc[8, "loan_amnt"] = " 5000.0 "  # a whole number, padded: fine
    table = pa.Table.from_pandas(frame, preserve_index=False)

    checked = validate_chunk(table, SCHEMA)

    assert checked.rejections.tolist() == [
        "loan_amnt: must be >= 1000",
        "grade: 'Z' is not one of A, B, C, D, E, F, G",
        "annual_inc: missing",
        "int_rate: not a number",
        "delinq_2yrs: must be a whole number",
        "dti: must be a finite number",
        "loan_amnt: must be <= 40000; term: missing",
        None,
        None,
    ]
    assert checked.valid.tolist() == [False] * 7 + [True, True]
    assert checked.columns["loan_amnt"][8] == 5000.0
    assert checked.columns["emp_length"][7] is None


def test_typed_columns_are_checked_as_well(applicants: pd.DataFrame) -> None:
    frame = applicants.head(4).copy()
    frame["term"] = frame["term"].astype(int)  # whole numbers stand for their text
    frame["int_rate"] = [10.0, np.nan, 12.0, 13.0]
    frame["addr_state"] = ["CA", "XX", "NY", "TX"]
    frame["delinq_2yrs"] = [0, 1, 2, 99]
    table = pa.Table.from_pandas(frame, preserve_index=False)

    checked = validate_chunk(table, SCHEMA)

    assert checked.rejections.tolist() == [
        None,
        "int_rate: missing; addr_state: 'XX' is not one of AK, AL, AR, AZ, CA, CO, CT, DC, "
        "DE, FL, GA, HI, … (51 values)",
        None,
        "delinq_2yrs: must be <= 50",
    ]
    assert checked.columns["term"].tolist()[0] in ("36", "60")


def test_a_scored_chunk_has_one_row_per_input_row_and_decisions_for_the_valid_ones(
    model: LoadedModel, applicants: pd.DataFrame
) -> None:
    frame = applicants.head(300).drop(columns=["default", "pd_true"])
    frame.loc[7, "grade"] = "Z"
    table = pa.Table.from_pandas(frame, preserve_index=False)
    when = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)

    scored = score_chunk(table, model, first_row=1000, job_id="job", top_reasons=3, decided_at=when)

    out = scored.table.to_pandas()
    assert list(out.columns) == [
        *frame.columns,
        "row",
        "probability",
        "decision",
        "reason_codes",
        "rejection_reason",
    ]
    assert out["row"].tolist() == list(range(1000, 1300))
    assert (scored.counts.rows, scored.counts.valid, scored.counts.rejected) == (300, 299, 1)
    assert out.loc[7, ["probability", "decision", "reason_codes"]].isna().all()
    valid = out.drop(index=7)
    expected = model.scorer.score_frame(SCHEMA.to_frame(frame.drop(index=7)))
    np.testing.assert_allclose(valid["probability"], expected, rtol=0, atol=1e-12)
    declined = valid[valid["decision"] == "decline"]
    assert 0 < len(declined) < len(valid)
    assert valid.loc[valid["decision"] == "approve", "reason_codes"].isna().all()

    model_name, model_version, logged = decision_columns(scored.decisions)
    check_columns(model_name, model_version, logged)  # the log would take it as it is
    assert (model_name, model_version, logged.num_rows) == (model.name, "3", 299)
    by_id = {row["request_id"]: row for row in logged.to_pylist()}
    first = declined.iloc[0]
    decision = by_id[f"job-{first['row']}"]
    assert (decision["decision"], decision["source"], decision["job_id"]) == (
        "decline",
        "batch",
        "job",
    )
    assert decision["decided_at"] == when
    assert decision["probability"] == pytest.approx(first["probability"], abs=0)
    row = frame.loc[first["row"] - 1000].to_dict()
    expected_reasons = model.explainer.reasons(
        SCHEMA.to_frame(frame.loc[[first["row"] - 1000]]).to_dict("records")[0],
        decision["probability"],
        top=3,
    )
    reasons = orjson.loads(decision["reasons"])
    assert [r["code"] for r in reasons] == [r.code for r in expected_reasons]
    assert first["reason_codes"] == ";".join(r.code for r in expected_reasons)
    assert [r["impact"] for r in reasons] == pytest.approx(
        [r.impact for r in expected_reasons], abs=1e-12
    )
    assert decision["in:loan_amnt"] == row["loan_amnt"]
    assert logged.schema.field("in:loan_amnt").type == pa.int64()
    assert decision["in:emp_length"] == (row["emp_length"] or None)
    inputs = [name for name in logged.column_names if name.startswith("in:")]
    assert inputs == [f"in:{name}" for name in SCHEMA.feature_names]


# --- the whole job on the store, without a queue -----------------------------------------------


def run_chunk(store: JobStore, model: LoadedModel, job_id: str, index: int) -> None:
    plan = store.plan(job_id)
    assert plan.chunk_starts is not None
    scored = score_chunk(
        store.read_chunk(job_id, index),
        model,
        first_row=plan.chunk_starts[index],
        job_id=job_id,
        top_reasons=4,
    )
    store.write_chunk_output(job_id, index, scored.table, scored.counts, scored.decisions)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_job_split_scored_twice_and_assembled_keeps_each_row_once(
    tmp_path: Path, store: JobStore, model: LoadedModel, applicants: pd.DataFrame, fmt: str
) -> None:
    frame = applicants.drop(columns=["default", "pd_true"])
    frame.loc[[5, 500, 999], "loan_amnt"] = [1, 2, 3]
    data = frame.to_csv(index=False).encode() if fmt == "csv" else parquet_bytes(frame)
    job = receive(store, data, filename=f"book.{fmt}")

    plan = store.split_input(job.job_id, chunk_rows=90)
    assert plan.chunk_starts == list(range(0, 1000, 90))
    assert store.split_input(job.job_id, chunk_rows=300) == plan  # a finished split stays
    split = store.get(job.job_id)
    assert split is not None and split.chunks == 12

    for index in store.pending_chunks(job.job_id):
        run_chunk(store, model, job.job_id, index)
        if index == 3:
            run_chunk(store, model, job.job_id, 3)  # a redelivered chunk replaces its output
            running = store.get(job.job_id)
            assert running is not None and running.rows_done == 360
    assert store.pending_chunks(job.job_id) == []

    done = store.assemble(job.job_id)
    assert done is not None and done.status == "succeeded"
    assert (done.rows_done, done.rows_valid, done.rows_rejected) == (1000, 997, 3)
    assert store.assemble(job.job_id) == done  # idempotent
    assert store.result_key(job.job_id) == f"{job.job_id}/result.{fmt}"
    result = result_frame(store, job.job_id)
    assert result is not None
    assert result["row"].tolist() == list(range(1000))
    assert result["id"].tolist() == frame["id"].tolist()
    assert (
        result.loc[[5, 500, 999], "rejection_reason"].tolist() == ["loan_amnt: must be >= 1000"] * 3
    )
    assert result["probability"].notna().sum() == 997
    assert store.storage.keys(f"{job.job_id}/chunks/") == []
    assert store.storage.keys(f"{job.job_id}/out/") == []

    assert done.decisions_recorded == 0
    for index in range(12):
        decisions = store.read_decisions(job.job_id, index)
        assert decisions is not None
        store.mark_recorded(job.job_id, index, decisions.num_rows)
        assert store.read_decisions(job.job_id, index) is None
    recorded = store.get(job.job_id)
    assert recorded is not None and recorded.decisions_recorded == 997
    assert store.storage.keys(f"{job.job_id}/log/") == []
    assert JobStore(store.storage, store.engine).rows_processed_total() == 1000


def _age(store: JobStore, job_id: str) -> None:
    """Make every task of the job look as if it was sent an hour ago."""
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    with store.engine.begin() as connection:
        connection.execute(update(JobRow).where(JobRow.id == job_id).values(sent_at=an_hour_ago))
        connection.execute(
            update(ChunkRow).where(ChunkRow.job_id == job_id).values(sent_at=an_hour_ago)
        )


class _Client:
    """Stands in for the Celery client: keeps what would have been sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[object], int]] = []

    def send_task(self, name: str, *, args: list[object], priority: int, **_: object) -> None:
        self.sent.append((name, args, priority))


def test_the_sweep_sends_again_what_waited_too_long_once_each(
    tmp_path: Path, store: JobStore, model: LoadedModel, applicants: pd.DataFrame
) -> None:
    frame = applicants.drop(columns=["default", "pd_true"]).head(300)
    job = receive(store, frame.to_csv(index=False).encode())
    assert claim_lost_work(store.engine, 60) == []  # just sent

    _age(store, job.job_id)
    assert claim_lost_work(store.engine, 60) == [LostTask("prepare", job.job_id)]
    assert claim_lost_work(store.engine, 60) == []  # taken: another sweeper finds nothing

    store.mark_running(job.job_id)
    store.split_input(job.job_id, chunk_rows=100)
    run_chunk(store, model, job.job_id, 0)
    _age(store, job.job_id)
    # The chunks still to score, and the scored one's decisions.
    assert sorted(claim_lost_work(store.engine, 60), key=str) == [
        LostTask("chunk", job.job_id, 1),
        LostTask("chunk", job.job_id, 2),
        LostTask("record", job.job_id, 0),
    ]

    for index in (1, 2):
        run_chunk(store, model, job.job_id, index)
    _age(store, job.job_id)
    client = _Client()
    lost = sweep(store, client, 60)
    assert sorted(lost, key=str) == sorted(
        [LostTask("prepare", job.job_id), *(LostTask("record", job.job_id, i) for i in range(3))],
        key=str,
    )
    assert (PREPARE_TASK, [job.job_id], 0) in client.sent
    assert (RECORD_TASK, [job.job_id, 2], RECORD_PRIORITY) in client.sent

    store.mark_failed(job.job_id, "boom")
    _age(store, job.job_id)
    assert claim_lost_work(store.engine, 60) == []  # a failed job needs nothing more


def test_a_failed_job_keeps_its_reason_and_is_never_changed_again(
    tmp_path: Path, store: JobStore, applicants: pd.DataFrame
) -> None:
    job = receive(store, applicants.head(10).to_csv(index=False).encode())

    failed = store.mark_failed(job.job_id, "chunk 0 failed: boom")
    store.mark_running(job.job_id)

    assert failed is not None
    again = store.get(job.job_id)
    assert again is not None
    assert (again.status, again.error) == ("failed", "chunk 0 failed: boom")
    assert again.finished_at is not None
    assert store.result_key(job.job_id) is None
    assert store.delete(job.job_id)
    assert store.get(job.job_id) is None
    assert store.storage.keys(job.job_id) == []


# --- which errors are worth a retry ------------------------------------------------------------


def _s3_error(kind: type[BaseException], code: str, status: int) -> BaseException:
    """A bucket's error answer, as botocore raises it once its own retries are spent."""
    response = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return kind(response, "PutObject")


def _transient_cases() -> list[tuple[BaseException, bool]]:
    import redis
    from botocore.exceptions import ClientError, EndpointConnectionError
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_DOES_NOT_EXIST
    from sqlalchemy.exc import IntegrityError, OperationalError

    from serving.model import ModelLoadError

    return [
        (MlflowException("registry down", error_code=INTERNAL_ERROR), True),
        (MlflowException("no such version", error_code=RESOURCE_DOES_NOT_EXIST), False),
        (OperationalError("INSERT", {}, Exception("database is locked")), True),
        (IntegrityError("INSERT", {}, Exception("constraint")), False),
        (ConnectionRefusedError(), True),
        (redis.ConnectionError("gone"), True),
        (ModelLoadError("v3 cannot serve"), False),
        (_s3_error(ClientError, "SlowDown", 503), True),
        (_s3_error(ClientError, "NoSuchBucket", 404), False),
        (_s3_error(ClientError, "AccessDenied", 403), False),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), True),
        (ValueError("a bug"), False),
    ]


def test_only_errors_a_retry_can_fix_are_retried() -> None:
    from serving.batch.tasks import is_transient

    assert [is_transient(error) for error, _ in _transient_cases()] == [
        expected for _, expected in _transient_cases()
    ]
