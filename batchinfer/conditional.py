"""Conditional writes of one small object (the lease): create if absent, replace or delete only if unchanged.

Each store does it with its own primitives; :func:`objects_for` picks them for an fsspec filesystem:

- S3 (s3fs): ``PutObject`` with ``IfNoneMatch='*'`` (create) or ``IfMatch=<ETag>`` (replace),
  ``DeleteObject`` with ``IfMatch``. The store's clock is the ``Date`` header of the read.
- Azure Blob (adlfs): ``upload_blob(overwrite=False)``, or with ``etag`` and
  ``MatchConditions.IfNotModified``; ``delete_blob`` likewise. The store's clock: the ``Date`` header.
- A local folder (``file://``): every operation under an ``flock`` of the folder that holds the
  object, the object written to a temporary name and renamed (never through a symlink). Exact.
- ``memory://``: every operation under one lock of this process (the only one that sees it). Exact.
- Any other filesystem (GCS included): exists-check, write, read back and compare. **Best effort**:
  two writers in the same instant can both believe they won. gcsfs's ``mode="create"`` makes the
  create itself exact on GCS; replace and delete stay best effort there.

An "etag" here is an opaque version of the object: the store's ETag where it has one, else a hash
of the content (which changes with every write, since the lease's content holds a fresh time).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from batchinfer.statefiles import private_dir, write_atomic

MAX_BYTES = 1 << 20  # a lease is a few kB; a larger object is not one


@dataclass(frozen=True)
class Read:
    """An object as read: its bytes, its version, and the store's time of the read."""

    data: bytes
    etag: str
    now: datetime  # the store's clock where it says (HTTP Date), else this machine's (UTC)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _http_date(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return _utcnow()


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def is_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says a condition did not hold: 412, S3's 409
    ConditionalRequestConflict, Azure's BlobAlreadyExists, or fsspec's FileExistsError."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, FileExistsError):
            return True
        response = getattr(current, "response", None)
        if isinstance(response, dict):  # botocore's ClientError
            code = response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return True
        if type(current).__name__ in ("ResourceExistsError", "ResourceModifiedError"):
            return True
        if getattr(current, "status_code", None) == 412:
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_missing(exc: BaseException) -> bool:
    return isinstance(exc, FileNotFoundError) or type(exc).__name__ == "ResourceNotFoundError"


class Objects:
    """The operations; ``None`` (create, replace) or ``False`` (delete) when the condition did not hold."""

    exact = True  # False: best effort (see the module's docstring)

    def read(self, path: str) -> Read | None:  # pragma: no cover - interface
        """The object at ``path``, or None when absent."""
        raise NotImplementedError

    def create(self, path: str, data: bytes) -> str | None:  # pragma: no cover - interface
        """Write ``data`` at ``path`` only if nothing is there; its etag, or None."""
        raise NotImplementedError

    def replace(self, path: str, data: bytes, etag: str) -> str | None:  # pragma: no cover - interface
        """Overwrite ``path`` only if it is still at version ``etag``; the new etag, or None."""
        raise NotImplementedError

    def delete(self, path: str, etag: str) -> bool:  # pragma: no cover - interface
        """Delete ``path`` only if it is still at version ``etag``."""
        raise NotImplementedError


class S3Objects(Objects):
    """s3fs, through its botocore client (``call_s3``): the conditions are the server's."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def _key(self, path: str) -> dict[str, str]:
        bucket, key, _ = self.fs.split_path(path)
        return {"Bucket": bucket, "Key": key}

    def read(self, path: str) -> Read | None:
        from fsspec.asyn import sync

        async def get() -> Read:
            resp = await self.fs._call_s3("get_object", **self._key(path))
            body = resp["Body"]
            try:
                data = await body.read(MAX_BYTES + 1)
            finally:
                body.close()
            date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
            return Read(data, resp["ETag"], _http_date(date))

        try:
            return sync(self.fs.loop, get)
        except FileNotFoundError:
            return None

    def _put(self, path: str, data: bytes, **condition: str) -> str | None:
        try:
            resp = self.fs.call_s3("put_object", Body=data, **self._key(path), **condition)
        except Exception as exc:
            if is_conflict(exc) or ("IfMatch" in condition and _is_missing(exc)):
                return None
            raise
        self.fs.invalidate_cache(path)
        return resp["ETag"]

    def create(self, path: str, data: bytes) -> str | None:
        return self._put(path, data, IfNoneMatch="*")

    def replace(self, path: str, data: bytes, etag: str) -> str | None:
        return self._put(path, data, IfMatch=etag)

    def delete(self, path: str, etag: str) -> bool:
        try:
            self.fs.call_s3("delete_object", IfMatch=etag, **self._key(path))
        except Exception as exc:
            if is_conflict(exc) or _is_missing(exc):
                return False
            raise
        self.fs.invalidate_cache(path)
        return True


class AzureObjects(Objects):
    """adlfs, through its azure-storage-blob client: the conditions are the server's."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def _call(self, path: str, method: str, **kwargs: Any) -> tuple[Any, datetime]:
        from fsspec.asyn import sync

        container, blob, _ = self.fs.split_path(path)
        dates: list[Any] = []

        async def call() -> Any:
            async with self.fs.service_client.get_blob_client(container=container, blob=blob) as client:
                result = await getattr(client, method)(
                    raw_response_hook=lambda r: dates.append(r.http_response.headers.get("Date")), **kwargs)
                if method == "download_blob":
                    return result.properties.etag, await result.readall()
                return result

        result = sync(self.fs.loop, call)
        return result, _http_date(dates[-1] if dates else None)

    def read(self, path: str) -> Read | None:
        try:
            (etag, data), now = self._call(path, "download_blob")
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise
        return Read(data, etag, now)

    def _upload(self, path: str, data: bytes, **condition: Any) -> str | None:
        try:
            result, _ = self._call(path, "upload_blob", data=data, **condition)
        except Exception as exc:
            if is_conflict(exc) or ("etag" in condition and _is_missing(exc)):  # replace: the blob went away
                return None
            raise
        self.fs.invalidate_cache(path)
        return result["etag"]

    def create(self, path: str, data: bytes) -> str | None:
        return self._upload(path, data, overwrite=False)

    def replace(self, path: str, data: bytes, etag: str) -> str | None:
        from azure.core import MatchConditions

        return self._upload(path, data, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified)

    def delete(self, path: str, etag: str) -> bool:
        from azure.core import MatchConditions

        try:
            self._call(path, "delete_blob", etag=etag, match_condition=MatchConditions.IfNotModified)
        except Exception as exc:
            if is_conflict(exc) or _is_missing(exc):
                return False
            raise
        self.fs.invalidate_cache(path)
        return True


class GuardedObjects(Objects):
    """Content-hash versions, each operation under :meth:`guard`: exact where the guard excludes
    every other writer (a local folder's flock, memory://'s process lock), else best effort."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    @contextlib.contextmanager
    def guard(self, path: str) -> Iterator[None]:
        yield

    def _read(self, path: str) -> bytes | None:
        try:
            with self.fs.open(path, "rb") as f:
                return f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return None

    def _write(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(path, data)

    def _remove(self, path: str) -> None:
        self.fs.rm_file(path)

    def read(self, path: str) -> Read | None:
        with self.guard(path):
            data = self._read(path)
        return None if data is None else Read(data, _hash(data), _utcnow())

    def _write_checked(self, path: str, data: bytes) -> str | None:
        self._write(path, data)
        # best effort: a writer that raced us shows here (or not at all, if it wrote just after)
        return _hash(data) if self._read(path) == data else None

    def create(self, path: str, data: bytes) -> str | None:
        with self.guard(path):
            if self._read(path) is not None:
                return None
            return self._write_checked(path, data)

    def replace(self, path: str, data: bytes, etag: str) -> str | None:
        with self.guard(path):
            current = self._read(path)
            if current is None or _hash(current) != etag:
                return None
            return self._write_checked(path, data)

    def delete(self, path: str, etag: str) -> bool:
        with self.guard(path):
            current = self._read(path)
            if current is None or _hash(current) != etag:
                return False
            self._remove(path)
            return True


class BestEffortObjects(GuardedObjects):
    """A filesystem with no conditional writes batchinfer knows of (see the module's docstring)."""

    exact = False

    def create(self, path: str, data: bytes) -> str | None:
        try:  # gcsfs (ifGenerationMatch=0), memory and others that know mode="create"
            self.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return None
        except TypeError:  # an older fsspec: no mode argument
            return super().create(path, data)
        return _hash(data) if self._read(path) == data else None


class LocalObjects(GuardedObjects):
    """A local folder: an exclusive ``flock`` on the object's folder around each operation."""

    @contextlib.contextmanager
    def guard(self, path: str) -> Iterator[None]:
        folder = Path(path).parent
        private_dir(folder)  # .batchinfer/ is the owner's only, as in a local output folder
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # lets the lock go

    def _read(self, path: str) -> bytes | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as f:
            return f.read(MAX_BYTES + 1)

    def _write(self, path: str, data: bytes) -> None:
        write_atomic(Path(path), data, private=True)

    def _remove(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)


_MEMORY_LOCK = threading.Lock()


class MemoryObjects(GuardedObjects):
    """memory://: one lock for this process, the only one that can see the filesystem."""

    @contextlib.contextmanager
    def guard(self, path: str) -> Iterator[None]:
        with _MEMORY_LOCK:
            yield


def objects_for(fs: Any) -> Objects:
    """The conditional operations of ``fs`` (an fsspec filesystem)."""
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    if "s3" in protocols:
        return S3Objects(fs)
    if "abfs" in protocols or "az" in protocols:
        return AzureObjects(fs)
    if "file" in protocols or "local" in protocols:
        return LocalObjects(fs)
    if "memory" in protocols:
        return MemoryObjects(fs)
    return BestEffortObjects(fs)
