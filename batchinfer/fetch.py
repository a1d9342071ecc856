"""In the worker: download a file mini-batch's URLs into its private folder, many at once, ahead of run().

One :class:`Fetcher` per worker owns a pool of ``TRANSFERS`` threads. :meth:`Fetcher.start` submits
every URL of a mini-batch at once and returns a :class:`Fetch` at once, so the worker can start
the next mini-batch's downloads while ``run()`` works on the current one (see worker.py's
``Inbox``). Each transfer is one ``fs.get_file`` (one GET; never ``fs.get``, which reads ``?``
in a signed URL as a glob) through :func:`batchinfer.retry.retrying`. Local files are never
copied: they are checked to be regular files and handed to ``run()`` as they are.

What a fetch raises, for worker.py to turn into the try's outcome:

- :class:`~batchinfer.retry.StorageUnavailable`: the store kept failing (kind ``storage``);
- :class:`MissingInput`: an object listed by the coordinator is gone (kind ``exception``);
- any other error of the store (denied, bad request), as it is.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import threading
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from batchinfer.readers import check_regular, is_url
from batchinfer.redact import redact_url
from batchinfer.retry import retrying

# Transfers in flight per worker. A GET of a small object is mostly waiting on the store, so one
# worker keeps many in flight; about 16 per worker reach moto's ceiling here (~150-200 GETs/s) with
# two workers, while a large object's transfer still gets a fair share of the bandwidth.
# (s3fs's own connection pool, botocore's max_pool_connections, is 10 per filesystem unless
# storage_options raise it: config_kwargs: {max_pool_connections: 32}.)
TRANSFERS = 16


class MissingInput(FileNotFoundError):
    """An input file that the coordinator listed no longer exists (deleted after listing)."""


def local_name(remote: str) -> str:
    """The file name to save a remote file under: its last path part, without a query string."""
    return os.path.basename(urllib.parse.urlsplit(remote).path.rstrip("/")) or "download"


def _transfer(url: str, target: str, storage_options: dict[str, Any]) -> None:
    """One download, as written (a signed URL's query string is kept), to ``target``."""
    from batchinfer.storage import filesystem

    fs, path = filesystem(url, storage_options)
    try:
        fs.get_file(path, target)
    except FileNotFoundError:
        raise MissingInput(f"input {redact_url(url)} no longer exists (deleted after the job listed it?)") from None
    except BaseException:
        try:
            os.unlink(target)  # no partial file for run() or a later try
        except OSError:
            pass
        raise


class Fetch:
    """The downloads of one mini-batch: :meth:`paths` waits for them; :meth:`discard` removes them."""

    def __init__(self, local: list[str | None], futures: dict[int, Future], folder: str | None) -> None:
        self._local = local
        self._futures = futures
        self.folder = folder

    @property
    def remote(self) -> bool:
        """Whether anything is downloaded for this mini-batch."""
        return self.folder is not None

    def paths(self) -> list[str]:
        """The local paths, in the mini-batch's order, once every file is here; the first
        failure (in the mini-batch's order) is raised, and the other transfers are cancelled."""
        try:
            for future in self._futures.values():
                future.result()
        except BaseException:
            self.cancel()
            raise
        return [p for p in self._local if p is not None]

    def cancel(self) -> None:
        for future in self._futures.values():
            future.cancel()

    def discard(self) -> None:
        """Stop what has not started, wait for what has, and remove the downloaded files."""
        self.cancel()
        for future in self._futures.values():
            if not future.cancelled():
                try:
                    future.exception()
                except BaseException:  # noqa: BLE001 - CancelledError: nothing was written
                    pass
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)


class Fetcher:
    """A worker's pool of transfer threads, downloading into folders under ``scratch``."""

    def __init__(self, scratch: str, transfers: int = TRANSFERS) -> None:
        self.scratch = scratch
        self._pool: ThreadPoolExecutor | None = None
        self._transfers = transfers
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:  # made on first use: a worker of local files never starts a thread
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._transfers, thread_name_prefix="batchinfer-fetch")
            return self._pool

    def start(self, batch_id: int, files: tuple[str, ...], storage_options: dict[str, Any]) -> Fetch:
        """Start downloading the URLs among ``files``; local files are checked now, never copied
        (one that is not a regular file fails :meth:`Fetch.paths`, as reading it would)."""
        local: list[str | None] = []
        futures: dict[int, Future] = {}
        folder = None
        for i, path in enumerate(files):
            if not is_url(path):
                local.append(path)
                checked: Future = Future()  # a FIFO or a folder fails the try when its paths are asked for
                try:
                    check_regular(path)
                    checked.set_result(None)
                except OSError as exc:
                    checked.set_exception(exc)
                    futures[i] = checked
                continue
            folder = folder or tempfile.mkdtemp(prefix=f"mb{batch_id}-", dir=self.scratch)
            # a folder per item: run() sees each file under its own name (scripts key rows on it),
            # and two files of the same name from different folders do not collide
            os.mkdir(os.path.join(folder, str(i)))
            target = os.path.join(folder, str(i), local_name(path))
            what = f"reading {redact_url(path)}"
            futures[i] = self._executor().submit(retrying, functools.partial(_transfer, path, target, storage_options), what)
            local.append(target)
        return Fetch(local, futures, folder)

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

