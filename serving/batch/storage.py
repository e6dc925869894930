"""Where batch-job files live: one interface, a local folder or an S3 bucket behind it.

A job's files are whole objects named by key, `<job id>/<name>` (see `serving.batch.files`).
Every backend keeps the same promises, which the job steps rely on:

- a reader sees a whole object or none: a local file is written under a temporary name and
  moved into place; an S3 object appears only when its upload completes;
- writing a key again replaces the object whole, so a chunk scored twice replaces its output;
- a key that is not there raises `FileNotFoundError`, whatever the backend.

What is done is kept in SQL (`serving.batch.store`), never inferred from a listing. The local
folder is the default; with the S3 backend (`serving.batch.s3`) the API and workers on any node
share nothing but the bucket and the database.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.ipc as ipc

if TYPE_CHECKING:
    from loanops.settings import Settings

JOBS_FOLDER = "batch-jobs"
STAGING_FOLDER = "batch-staging"
_STREAM_BYTES = 1 << 20
# Uncompressed: these files live minutes, and compression costs more CPU than it saves I/O.
_IPC_OPTIONS = ipc.IpcWriteOptions(compression=None)


class StorageUnavailable(RuntimeError):
    """The job storage cannot take or give an object now: an outage or a misconfiguration of
    the bucket or folder, never the client's doing."""


class JobStorage(ABC):
    """Whole objects by key: what the job steps read and write, on whichever backend."""

    def __init__(self, scratch: Path) -> None:
        """Stage files on their way in or out under `scratch`, a folder of this node's own."""
        self.scratch = Path(scratch)

    @abstractmethod
    def describe(self) -> str:
        """Where the objects are, for logs and errors."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Store a finished local file as `key`, replacing any earlier object; consumes `path`."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes | pa.Buffer:
        """The object's content, whole."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes | pa.Buffer) -> None:
        """Store `data` as `key`, replacing any earlier object."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether there is an object at `key`."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The object's length in bytes."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object at `key`, if any."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> bool:
        """Remove every object whose key starts with `prefix`; False when there was none."""

    @abstractmethod
    def keys(self, prefix: str = "") -> list[str]:
        """The keys starting with `prefix`, sorted."""

    @abstractmethod
    def iter_bytes(self, key: str) -> Iterator[bytes]:
        """The object's content in pieces, for a download that never holds it whole."""

    @abstractmethod
    @contextlib.contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        """A local path holding the object while the context lasts (a copy, for a bucket)."""

    def local_path(self, key: str) -> Path | None:
        """Where the object is on this node's disk, if the backend keeps it there."""
        return None

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh local folder for files on their way in or out; removed afterwards."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=self.scratch))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def write_table(self, key: str, table: pa.Table) -> None:
        """Store `table` as an Arrow IPC file at `key`."""
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, table.schema, options=_IPC_OPTIONS) as writer:
            writer.write_table(table)
        self.put_bytes(key, sink.getvalue())

    def read_table(self, key: str) -> pa.Table:
        """The Arrow IPC file at `key`, whole."""
        return ipc.open_file(pa.BufferReader(self.read_bytes(key))).read_all()


class LocalStorage(JobStorage):
    """Objects as files under a folder: `<root>/<key>`; the default backend."""

    def __init__(self, root: Path, scratch: Path | None = None) -> None:
        """Keep objects under `root`; stage beside it unless told otherwise.

        The staging folder must be on the same filesystem as `root`, so that putting a staged
        file is a rename.
        """
        super().__init__(scratch if scratch is not None else Path(root).parent / STAGING_FOLDER)
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def path(self, key: str) -> Path:
        """The file of `key`.

        Raises:
            ValueError: when `key` would leave the root.
        """
        parts = key.split("/")
        if not key or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"{key!r} is not a storage key")
        return self.root.joinpath(*parts)

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    def put_file(self, key: str, path: Path) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, target)
        except OSError as error:
            if error.errno != errno.EXDEV:  # staged on another filesystem
                raise
            tmp = self._temporary(target)
            try:
                shutil.copyfile(path, tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            path.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes | pa.Buffer) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._temporary(target)
        try:
            with pa.OSFile(str(tmp), "wb") as sink:
                sink.write(data)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def write_table(self, key: str, table: pa.Table) -> None:
        # Straight to the file, without a copy of the table in memory first.
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._temporary(target)
        try:
            with (
                pa.OSFile(str(tmp), "wb") as sink,
                ipc.new_file(sink, table.schema, options=_IPC_OPTIONS) as writer,
            ):
                writer.write_table(table)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def read_bytes(self, key: str) -> pa.Buffer:
        with pa.memory_map(str(self.path(key))) as source:
            return source.read_buffer()

    def read_table(self, key: str) -> pa.Table:
        with pa.memory_map(str(self.path(key))) as source:
            return ipc.open_file(source).read_all()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> bool:
        if prefix.endswith("/"):  # a job's folder, or a folder in it: gone in one go
            folder = self.path(prefix.rstrip("/"))
            if not folder.is_dir():
                return False
            shutil.rmtree(folder, ignore_errors=True)
            return True
        found = self.keys(prefix)
        for key in found:
            self.path(key).unlink(missing_ok=True)
        return bool(found)

    def keys(self, prefix: str = "") -> list[str]:
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.path(folder) if folder else self.root
        if not start.is_dir():
            return []
        found = (
            path.relative_to(self.root).as_posix()
            for path in start.rglob("*")
            if path.is_file() and not path.name.startswith(".")
        )
        return sorted(key for key in found if key.startswith(prefix))

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        with self.path(key).open("rb") as file:
            while piece := file.read(_STREAM_BYTES):
                yield piece

    @contextlib.contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no {key} in {self.root}")
        yield path

    @staticmethod
    def _temporary(target: Path) -> Path:
        return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")


def storage_for(settings: Settings) -> JobStorage:
    """The backend the settings choose: the storage folder, or the bucket (`LOANOPS_BATCH_*`)."""
    staging = settings.storage_path / STAGING_FOLDER
    if settings.batch.storage == "s3":
        from serving.batch.s3 import S3Storage

        return S3Storage.from_settings(settings.batch, scratch=staging)
    return LocalStorage(settings.storage_path / JOBS_FOLDER, scratch=staging)
