"""Batch-job files in an S3 API bucket (AWS S3, MinIO, Ceph, R2, ...), through boto3.

Objects are `<prefix>/<key>` in one bucket. S3 gives what the job steps need without any
locking of ours: an object appears only once its upload (single or multipart) completes, a
second PUT of a key replaces the object whole, and reads after a write see it (strong
read-after-write consistency). Credentials come from boto3's own chain: the standard
`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` variables, a profile, or the node's workload
identity.

Each process makes its own client (from the one session): a Celery pool process is forked from
the worker's main process, and a connection pool must not be shared across a fork.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from serving.batch.storage import JobStorage

if TYPE_CHECKING:
    from loanops.settings import BatchSettings

_DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys
_STREAM_BYTES = 1 << 20
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class S3Storage(JobStorage):
    """Objects in a bucket, under a prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        scratch: Path,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        """Keep objects at `s3://<bucket>/<prefix>/<key>`; stage downloads under `scratch`.

        Args:
            bucket: an existing bucket.
            prefix: folder of the jobs in the bucket; may be empty.
            scratch: a local folder of this node's own, for uploads and results on their way.
            endpoint_url: an S3-compatible server's URL; None for AWS itself.
            region: the bucket's region; None for boto3's default.
        """
        super().__init__(scratch)
        if not bucket:
            raise ValueError("the S3 backend needs a bucket: set LOANOPS_BATCH_S3_BUCKET")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self._lock = threading.Lock()
        import boto3

        # One session, made here: a pool process forked after this inherits its loaded service
        # model, and makes its own client from it in milliseconds rather than a tenth of a second.
        self._session = boto3.session.Session()
        self._client: Any = None
        self._client_pid = 0
        self.client  # noqa: B018  (loads the service model before any fork)

    @classmethod
    def from_settings(cls, batch: BatchSettings, scratch: Path) -> S3Storage:
        """The bucket of `LOANOPS_BATCH_S3_*`."""
        return cls(
            batch.s3_bucket,
            batch.s3_prefix,
            scratch,
            endpoint_url=batch.s3_endpoint_url,
            region=batch.s3_region,
        )

    @property
    def client(self) -> Any:
        """This process's boto3 S3 client."""
        with self._lock:
            if self._client is None or self._client_pid != os.getpid():
                from botocore.config import Config

                self._client = self._session.client(
                    "s3",
                    endpoint_url=self.endpoint_url,
                    region_name=self.region,
                    # Standard mode retries throttling and 5xx answers with backoff itself.
                    config=Config(
                        retries={"mode": "standard", "max_attempts": 5},
                        connect_timeout=10,
                        read_timeout=120,
                    ),
                )
                self._client_pid = os.getpid()
            return self._client

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return f"{where} at {self.endpoint_url}" if self.endpoint_url else where

    def object_key(self, key: str) -> str:
        """The object's key in the bucket."""
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, key: str, path: Path) -> None:
        # upload_file goes multipart for a large file; the object appears when it completes.
        self.client.upload_file(str(path), self.bucket, self.object_key(key))
        path.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes | pa.Buffer) -> None:
        body = data.to_pybytes() if isinstance(data, pa.Buffer) else data
        self.client.put_object(Bucket=self.bucket, Key=self.object_key(key), Body=body)

    def read_bytes(self, key: str) -> bytes:
        with self._missing_as_file_not_found(key):
            answer = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
            return bytes(answer["Body"].read())

    def exists(self, key: str) -> bool:
        try:
            with self._missing_as_file_not_found(key):
                self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        with self._missing_as_file_not_found(key):
            answer = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        return int(answer["ContentLength"])

    def delete(self, key: str) -> None:
        # S3 answers a delete of a missing key with success.
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def delete_prefix(self, prefix: str) -> bool:
        keys = [self.object_key(key) for key in self.keys(prefix)]
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
        return bool(keys)

    def keys(self, prefix: str = "") -> list[str]:
        start = len(self.object_key(""))
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.object_key(prefix)
        )
        return sorted(item["Key"][start:] for page in pages for item in page.get("Contents", []))

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        with self._missing_as_file_not_found(key):
            answer = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        body = answer["Body"]
        try:
            yield from body.iter_chunks(_STREAM_BYTES)
        finally:
            body.close()

    @contextlib.contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        with self.staging() as folder:
            path = folder / key.rsplit("/", 1)[-1]
            with self._missing_as_file_not_found(key):
                self.client.download_file(self.bucket, self.object_key(key), str(path))
            yield path

    @contextlib.contextmanager
    def _missing_as_file_not_found(self, key: str) -> Iterator[None]:
        from botocore.exceptions import ClientError

        try:
            yield
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _MISSING_CODES:
                raise FileNotFoundError(f"no {key} in {self.describe()}") from error
            raise
