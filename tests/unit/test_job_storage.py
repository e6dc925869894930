"""Both storage backends behind one interface: whole objects by key, replaced whole, or missing.

The S3 cases run against moto's standalone server on loopback, through the real boto3 client.
"""

from __future__ import annotations

import threading
from pathlib import Path

import boto3
import pyarrow as pa
import pytest

from loanops.settings import BatchSettings, Settings
from serving.batch.s3 import S3Storage
from serving.batch.storage import JobStorage, LocalStorage, storage_for
from tests.storage_fixtures import (
    job_storage,  # noqa: F401  (a fixture)
    s3_endpoint,  # noqa: F401  (a fixture)
)

JOB = "0123456789abcdef0123456789abcdef"


def table(rows: int, start: int = 0) -> pa.Table:
    return pa.table(
        {"row": pa.array(range(start, start + rows)), "text": [f"r{i}" for i in range(rows)]}
    )


def test_a_table_comes_back_as_written_and_a_second_write_replaces_it(
    job_storage: JobStorage,  # noqa: F811
) -> None:
    key = f"{JOB}/out/00000.arrow"

    job_storage.write_table(key, table(100))
    first = job_storage.read_table(key)
    job_storage.write_table(key, table(7, start=500))  # a chunk scored twice

    assert first.equals(table(100))
    assert job_storage.read_table(key).equals(table(7, start=500))
    assert job_storage.keys(JOB) == [key]


def test_a_missing_key_is_file_not_found_on_every_read(
    job_storage: JobStorage,  # noqa: F811
) -> None:
    key = f"{JOB}/chunks/00003.arrow"

    assert not job_storage.exists(key)
    for read in (job_storage.read_table, job_storage.read_bytes, job_storage.size):
        with pytest.raises(FileNotFoundError):
            read(key)
    with pytest.raises(FileNotFoundError):
        b"".join(job_storage.iter_bytes(key))
    with pytest.raises(FileNotFoundError), job_storage.local_file(key):
        pass
    job_storage.delete(key)  # deleting what is not there is no error
    assert job_storage.delete_prefix(f"{JOB}/") is False


def test_a_put_file_is_consumed_and_reads_back_whole(
    job_storage: JobStorage,  # noqa: F811
) -> None:
    data = bytes(range(256)) * 20_000  # 5 MB: more than one piece of a download
    key = f"{JOB}/input.csv"
    with job_storage.staging() as folder:
        staged = folder / "input.csv"
        staged.write_bytes(data)

        job_storage.put_file(key, staged)

        assert not staged.exists()
    assert not any(job_storage.scratch.iterdir())  # the staging folder is gone too
    assert job_storage.exists(key)
    assert job_storage.size(key) == len(data)
    assert bytes(job_storage.read_bytes(key)) == data
    assert b"".join(job_storage.iter_bytes(key)) == data
    with job_storage.local_file(key) as path:
        assert path.read_bytes() == data


def test_deleting_a_job_folder_leaves_the_others(
    job_storage: JobStorage,  # noqa: F811
) -> None:
    other = "f" * 32
    for job in (JOB, other):
        job_storage.put_bytes(f"{job}/input.csv", b"a,b\n1,2\n")
        for index in range(3):
            job_storage.write_table(f"{job}/chunks/{index:05d}.arrow", table(5))
            job_storage.write_table(f"{job}/out/{index:05d}.arrow", table(5))

    assert job_storage.delete_prefix(f"{JOB}/chunks/")
    assert job_storage.keys(JOB) == [
        f"{JOB}/input.csv",
        *(f"{JOB}/out/{i:05d}.arrow" for i in range(3)),
    ]
    assert job_storage.delete_prefix(f"{JOB}/")

    assert job_storage.keys(JOB) == []
    assert len(job_storage.keys(other)) == 7
    assert job_storage.keys() == job_storage.keys(other)


def test_a_reader_sees_one_whole_version_while_a_writer_replaces_the_object(
    job_storage: JobStorage,  # noqa: F811
) -> None:
    key = f"{JOB}/out/00001.arrow"
    versions = [table(20_000 + 1000 * v, start=v) for v in range(5)]
    job_storage.write_table(key, versions[0])
    done = threading.Event()
    seen: list[int] = []

    def write() -> None:
        try:
            for round_ in range(30):
                job_storage.write_table(key, versions[round_ % len(versions)])
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    reads = 0
    while not done.is_set() and reads < 10_000:
        read = job_storage.read_table(key)  # never half a file: that would not parse
        seen.append(next(i for i, v in enumerate(versions) if v.equals(read)))
        reads += 1
    writer.join(timeout=60)

    assert not writer.is_alive()
    assert seen, "the writer finished before the first read"
    assert job_storage.read_table(key).equals(versions[29 % len(versions)])


def test_local_keys_stay_inside_the_root(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "batch-jobs")
    for key in ("", "../x", f"{JOB}/../../x", f"{JOB}//x", "/etc/passwd"):
        with pytest.raises(ValueError, match="not a storage key"):
            storage.path(key)


@pytest.mark.integration
def test_s3_objects_live_under_the_prefix_of_their_store(
    s3_endpoint: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="loanops-prefixes")
    first = S3Storage("loanops-prefixes", "a/jobs", tmp_path, endpoint_url=s3_endpoint)
    second = S3Storage("loanops-prefixes", "b", tmp_path, endpoint_url=s3_endpoint)

    first.put_bytes(f"{JOB}/input.csv", b"x\n")
    second.put_bytes(f"{JOB}/input.csv", b"y\n")
    first.delete_prefix(f"{JOB}/")

    listed = client.list_objects_v2(Bucket="loanops-prefixes")["Contents"]
    assert [item["Key"] for item in listed] == [f"b/{JOB}/input.csv"]
    assert second.read_bytes(f"{JOB}/input.csv") == b"y\n"
    assert first.keys() == []


def test_the_settings_choose_the_backend(tmp_path: Path) -> None:
    local = storage_for(Settings(home=tmp_path))
    s3 = storage_for(
        Settings(
            home=tmp_path,
            batch=BatchSettings(
                storage="s3",
                s3_bucket="loanops-batch",
                s3_prefix="/prod/jobs/",
                s3_endpoint_url="http://127.0.0.1:9",
            ),
        )
    )

    assert isinstance(local, LocalStorage)
    assert local.root == (tmp_path / "storage" / "batch-jobs").resolve()
    assert isinstance(s3, S3Storage)
    assert (s3.bucket, s3.prefix, s3.endpoint_url, s3.region) == (
        "loanops-batch",
        "prod/jobs",
        "http://127.0.0.1:9",
        None,
    )
    assert s3.describe() == "s3://loanops-batch/prod/jobs at http://127.0.0.1:9"
    assert s3.scratch == (tmp_path / "storage" / "batch-staging").resolve()


def test_s3_storage_without_a_bucket_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOANOPS_BATCH_STORAGE", "s3")

    with pytest.raises(ValueError, match="LOANOPS_BATCH_STORAGE=s3 needs LOANOPS_BATCH_S3_BUCKET"):
        Settings(home=tmp_path, _env_file=None)  # type: ignore[call-arg]
