"""An output folder on an object store (``s3://``, ``az://``, ``abfs://``, ``gs://``, ``file://``, ``memory://``).

Object stores have no append, truncate, fsync or rename, so the journal of :mod:`batchinfer.output`
cannot be an offset into one growing object there. A remote run therefore works in a disposable
local *staging* folder, exactly as a local run does (journal, row file, logs, manifest), and
:class:`RemoteFolder` mirrors that folder to the store so that the store alone is the record:

- while running, the new bytes of the append-only staging files (the row file, the journal, and
  Parquet's Arrow parts) are shipped at most about once a second as one immutable **segment**
  object ``.batchinfer/segments/<seq>-<run>.seg``: a JSON header line (seq, run, the segment it
  follows, and each piece's file, offset and length) then the pieces. One PUT is atomic, so a
  segment is whole or absent, and its journal lines always come with their rows;
- at the end, the row file and the journal are uploaded whole, then ``.batchinfer/base.json``
  naming the last segment they include and their lengths, then those segments are removed;
- ``job.json`` and ``manifest.json`` are uploaded as soon as the folder is prepared, before the first
  segment, so a run killed at any point leaves a folder the next run recognises and fingerprints;
  the script's files (``output_dir()``) go up before the segment that commits their mini-batch;
- on ``file://`` every object is written to a temporary name, fsynced and renamed over the old one
  (fsspec's local filesystem writes in place, which a kill would leave torn);
- a run restores the staging folder from the base and the segments that continue it (each
  piece must start where the restored file ends); a segment that does not continue the chain
  (a zombie run's, written after its lease was taken over) or follows a gap is ignored and removed.

One run at a time: :meth:`RemoteFolder.open` takes the folder's lease (:mod:`batchinfer.lease`),
which renews itself every few seconds carrying the live status (``batchinfer status URL``). A run
whose lease was taken over (:attr:`Lease.lost`) writes nothing more: the next segment upload,
``ship()`` and the base each check it first and raise a one-line :class:`OutputError`.

The segment format and the chain check are :mod:`batchinfer.segments`.

Uploads run in one background thread, in order; the scheduler never waits on the network unless
:data:`QUEUE_BOUND` segments are pending (then its flush waits for the oldest to go out).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batchinfer.errors import BatchInferError, OutputError
from batchinfer.layout import LOGS_DIR, STATE_DIR, SUMMARY_FILE
from batchinfer.lease import Lease
from batchinfer.redact import redact_url
from batchinfer.segments import (
    BASE,
    JOURNAL,
    PACK,
    PARTS,
    SEGMENTS,
    candidates,
    continues,
    decode_segment,
    encode_segment,
    is_part,
    last_end,
    segment_name,
    segment_seq,
)
from batchinfer.storage import call as storage_call
from batchinfer.storage import check_reachable, filesystem, protocol_of

log = logging.getLogger("batchinfer")

# uploaded at the end, restored at the start (the journal and rows are restored from base and segments)
STATE_OBJECTS = (f"{STATE_DIR}/job.json", f"{STATE_DIR}/manifest.json", SUMMARY_FILE)
SHIP_INTERVAL_S = 1.0  # at most one segment a second...
SHIP_BYTES = 4 * 2**20  # ...unless this much is pending
QUEUE_BOUND = 8  # segments waiting for the uploader before the scheduler's flush waits
FETCH_CONCURRENCY = 16  # segments fetched at once by a restore
LOG_INTERVAL_S = 30.0  # changed log files are uploaded this often while running
# a write keeps being retried this long (a throttling burst must not end a run of hours), well within
# the lease's 30 s: a run that cannot write for longer stops, and the next one resumes from the record
WRITE_BUDGET_S = 20.0


def is_remote(raw: str | None) -> bool:
    """Whether an output given as ``raw`` is a URL (``file://`` included), not a local path or ``-``."""
    return bool(raw) and raw != "-" and "://" in raw


# ---------------------------------------------------------------- the folder


class RemoteFolder:
    """The store's output folder seen through a local staging folder: see the module docstring."""

    def __init__(self, url: str, fs: Any, root: str, row_name: str | None, append: bool = True) -> None:
        self.url = url.rstrip("/")
        self.fs = fs
        self.root = root.rstrip("/")
        self.row_name = row_name  # the row file (txt/csv/jsonl/parquet), None for summary_only
        self.append = append  # the row file is append-only (txt/csv/jsonl), not Parquet's assembled file
        self.local = protocol_of(url) == "file"
        self.staging = Path(tempfile.mkdtemp(prefix="batchinfer-out-"))
        self.run = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f") + uuid.uuid4().hex[:6]
        self.lease: Any = None
        self.had_lease = False  # the folder held a lease before this run took it
        self._appended = {JOURNAL, *([row_name] if row_name and append else [])}  # restored from base and segments
        # what the store holds of the append-only files: shipped up to here
        self.sent = {JOURNAL: 0}
        self.parts_sent: set[str] = set()
        self.seq, self.prev_run = 0, ""  # the last segment shipped (or restored)
        self.base_seq = 0
        self.segments_written = 0
        self.objects_written = 0
        self._last_ship = time.monotonic()
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_BOUND)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._uploaded: dict[str, tuple[int, int]] = {}  # staging file -> (size, mtime_ns) uploaded
        self._last_logs = time.monotonic()

    # ------------------------------------------------ open, restore

    @classmethod
    def open(cls, url: str, storage_options: dict[str, Any] | None, row_name: str | None,
             append: bool = True) -> RemoteFolder:
        """Reach the store (the bucket checked), take the lease; one line, exit 2, for what fails."""
        fs, root = filesystem(url, storage_options)
        folder = cls(url, fs, root, row_name, append)
        try:
            folder._check_bucket(storage_options)
            # a lease left behind is proof enough that the folder is batchinfer's (see restore_state)
            folder.had_lease = folder._exists(f"{STATE_DIR}/lease.json")
            # renewed every few seconds by its own thread, carrying the live status (progress.LeaseStatus)
            folder.lease = Lease.acquire(fs, folder.root, url=url)
        except BaseException:
            shutil.rmtree(folder.staging, ignore_errors=True)
            raise
        return folder

    def _check_bucket(self, storage_options: dict[str, Any] | None) -> None:
        if protocol_of(self.url) in ("file", "memory"):
            self.fs.makedirs(self.root, exist_ok=True)
            return
        with warnings.catch_warnings():  # adlfs warns (on stderr) before the error it then raises
            warnings.simplefilter("ignore")
            check_reachable(self.url, storage_options, "output")  # one line: no bucket, refused credentials

    def _remote(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def _call(self, call: Any, doing: str, rel: str = "", write: bool = False) -> Any:
        """``call()`` through the retry policy (writes: for up to :data:`WRITE_BUDGET_S`, since a run
        of hours must not end on a short burst of throttling); what still fails is one line naming the store."""
        return storage_call(call, self.url + (f"/{rel}" if rel else ""), "output", doing,
                            budget_s=WRITE_BUDGET_S if write else None)

    def _get(self, rel: str) -> bytes | None:
        def cat() -> bytes | None:
            try:
                return self.fs.cat_file(self._remote(rel))
            except FileNotFoundError:
                return None
        return self._call(cat, "reading", rel)

    def _put(self, rel: str, data: bytes) -> None:
        def pipe() -> None:
            if self.local:
                _replace_local(self._remote(rel), lambda f: f.write(data))
            else:
                self.fs.pipe_file(self._remote(rel), data)
        self._call(pipe, "writing", rel, write=True)
        self.objects_written += 1

    def _put_file(self, rel: str, vanishing: bool = False) -> None:
        """Upload the staging file ``rel``. ``vanishing``: the script's own file (or a log), which may be
        removed while it is uploaded: then it is skipped (only ``.batchinfer/`` files may fail the run)."""
        src = self.staging / rel
        try:
            info = os.stat(src)  # before the upload: a change made meanwhile is uploaded next time
        except FileNotFoundError:
            if vanishing:
                return
            raise

        def put() -> bool:
            try:
                if self.local:
                    with open(src, "rb") as source:
                        _replace_local(self._remote(rel), lambda f: shutil.copyfileobj(source, f, 2**20))
                else:
                    self.fs.put_file(str(src), self._remote(rel))
            except FileNotFoundError:
                if vanishing and not src.exists():
                    return False
                raise
            return True
        if self._call(put, "uploading", rel, write=True):
            self.objects_written += 1
            self._uploaded[rel] = (info.st_size, info.st_mtime_ns)

    def _exists(self, rel: str) -> bool:
        def exists() -> bool:
            self.fs.invalidate_cache()
            return bool(self.fs.exists(self._remote(rel)))
        return self._call(exists, "reading", rel)

    def _delete(self, rels: list[str]) -> None:
        for rel in rels:
            def rm(rel: str = rel) -> None:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(self._remote(rel))
            self._call(rm, "removing", rel, write=True)

    def _list(self, rel: str) -> list[str]:
        """Relative names of the objects under ``rel`` (recursively)."""
        def find() -> list[str]:
            self.fs.invalidate_cache()
            try:
                return list(self.fs.find(self._remote(rel)))
            except FileNotFoundError:
                return []
        prefix = self.root + "/"
        return sorted(p[len(prefix):] for p in self._call(find, "listing", rel) if p.startswith(prefix))

    def restore_state(self, restart: bool = False) -> set[str]:
        """Download job.json, manifest.json, summary.json and logs/* into the staging folder; the names restored.

        A folder that holds objects but is not batchinfer's (no job.json, no manifest.json, no segment,
        no base, no lease) is refused, as a local one is (see ``manifest.check_folder``): batchinfer
        writes only where it can tell its files. Segments without a job.json (a run killed before
        this release uploaded job.json at its start) cannot be told to be this job's: refused unless
        ``restart``.
        """
        restored = set()
        logs = [rel for rel in self._list(LOGS_DIR) if not _is_local_tmp(rel)]
        for rel in (*STATE_OBJECTS, *logs):
            data = self._get(rel)
            if data is not None:
                self._write_staging(rel, data)
                restored.add(rel)
                info = os.stat(self.staging / rel)
                self._uploaded[rel] = (info.st_size, info.st_mtime_ns)
        if not restored & set(STATE_OBJECTS[:2]):
            own = [rel for rel in self._list(STATE_DIR) if rel.startswith(SEGMENTS + "/") or rel in (BASE, PACK)]
            if own and not restart:
                raise OutputError(
                    f"output {redact_url(self.url)} holds committed rows ({own[0]!r}) but no {STATE_OBJECTS[0]}, "
                    "so they cannot be told to be this job's", hint="run again with --restart to start the "
                    "folder afresh, or choose another folder with --output")
            other = next((rel for rel in self._top() if rel != STATE_DIR), None)
            if other is not None and not own and not self.had_lease:
                raise OutputError(
                    f"output {redact_url(self.url)} is not empty (it holds {other!r}) and is not a batchinfer "
                    "output folder", hint="choose a new or empty folder with --output: batchinfer writes only "
                    "where it can tell its files from yours")
            # batchinfer's, but of a run that never got as far as its job.json: start afresh (its logs are
            # replaced as this run writes its own; the local check of prepare_output sees an empty folder)
            for child in self.staging.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            self._uploaded.clear()
            restored = set()
        return restored

    def _top(self) -> list[str]:
        """The names directly in the folder."""
        def ls() -> list[str]:
            self.fs.invalidate_cache()
            try:
                return [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
            except FileNotFoundError:
                return []
        return self._call(ls, "listing")

    def _write_staging(self, rel: str, data: bytes, offset: int | None = None) -> None:
        path = self.staging / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if offset is None:
            path.write_bytes(data)
            return
        with open(path, "r+b" if path.exists() else "wb") as f:
            f.seek(offset)
            f.write(data)

    def after_prepare(self, restored: set[str], restart: bool, reused: bool) -> None:
        """After ``prepare_output`` decided on the staging folder: clear in the store what it cleared
        (batchinfer's own objects only), else restore the committed rows when the job will run."""
        cleared = restart or any(not (self.staging / rel).exists() for rel in restored)
        if cleared:
            gone = [rel for rel in restored if not (self.staging / rel).exists()]
            own = [rel for rel in self._list(STATE_DIR) if rel.startswith((SEGMENTS + "/", PARTS + "/"))]
            rows = [self.row_name] if self.row_name else []
            self._delete(sorted(set(gone) | set(own) | {BASE, PACK, JOURNAL, *rows}))
        elif not reused:
            self.restore_rows()
        if not reused and SUMMARY_FILE in restored:
            # the summary of an earlier run (a --retry-failed's, a resume's) is stale once this run commits
            # a segment: a kill before this run's own summary must not leave it to be reused by the next run
            self._delete([SUMMARY_FILE])
            self._uploaded.pop(SUMMARY_FILE, None)
        if not reused:
            # job.json (the fingerprint) and manifest.json in the store before the first segment can be
            # queued: a run killed at any later point leaves a folder the next run recognises and checks
            self._upload_if_changed(STATE_OBJECTS[:2])

    def restore_rows(self) -> None:
        """The journal, row file and parts as the store holds them: the base, then the segments that continue it."""
        base = self._get(BASE)
        if base is not None:
            doc = self._base_doc(base)
            self.seq, self.prev_run = int(doc["seq"]), str(doc.get("run", ""))
            self.base_seq = self.seq
            for rel, length in doc["files"].items():
                if rel not in self._appended:
                    continue
                data = self._get(rel) or b""
                if len(data) < length:
                    raise OutputError(f"output {redact_url(self.url)}: {rel} is shorter than {BASE} says",
                                      hint="the folder was changed by something other than batchinfer; "
                                      "run again with --restart")
                self._write_staging(rel, data[:length])  # a longer file: uploaded before a base.json that never came
                self.sent[rel] = length
            if doc.get("pack"):
                try:
                    _, pieces = decode_segment(self._get(PACK) or b"")
                except (ValueError, KeyError, TypeError):
                    raise self._torn(PACK) from None
                for name, _offset, data in pieces:
                    if is_part(name):
                        self._write_staging(name, data)
                        self.parts_sent.add(name)
        by_seq, stale = candidates(self._list(SEGMENTS), self.base_seq)
        broken = False
        fetched = self._fetch_in_order([rel for names in by_seq.values() for rel in names])
        try:
            for seq, names in by_seq.items():
                chosen = None
                if not broken:  # fetched FETCH_CONCURRENCY ahead, applied in order
                    pairs = [(rel, next(fetched)) for rel in names]
                    if seq == self.seq + 1:
                        chosen = next((rel for rel, data in pairs if self._apply(rel, seq, data)), None)
                stale += [rel for rel in names if rel != chosen]
                broken = broken or chosen is None
        finally:
            fetched.close()
        if stale:
            log.info("output %s: removing %d segment(s) that do not continue the committed record",
                     redact_url(self.url), len(stale))
            self._delete(stale)

    def _torn(self, rel: str) -> OutputError:
        return OutputError(f"output {redact_url(self.url)}: {rel} is not whole (torn, or changed by something "
                           "other than batchinfer)", hint="run again with --restart to score the job afresh")

    def _base_doc(self, data: bytes) -> dict[str, Any]:
        """base.json, checked: {"seq": int, "run": str, "files": {name: int}, "pack": bool}."""
        try:
            doc = json.loads(data)
            ok = (isinstance(doc, dict) and type(doc.get("seq")) is int and isinstance(doc.get("files"), dict)
                  and all(isinstance(k, str) and type(v) is int and v >= 0 for k, v in doc["files"].items()))
        except ValueError:
            ok = False
        if not ok:
            raise self._torn(BASE)
        return doc

    def _fetch_in_order(self, rels: list[str]) -> Iterator[bytes | None]:
        """The objects ``rels``, in order, fetched :data:`FETCH_CONCURRENCY` at a time (one GET each: a
        restore of many segments waits on the store's latency once per window, not once per segment)."""
        pool = ThreadPoolExecutor(FETCH_CONCURRENCY, thread_name_prefix="batchinfer-restore")
        try:
            pending: deque[Future] = deque()
            names = iter(rels)
            for rel in names:
                pending.append(pool.submit(self._get, rel))
                if len(pending) >= FETCH_CONCURRENCY:
                    break
            while pending:
                data = pending.popleft().result()
                if (rel := next(names, None)) is not None:
                    pending.append(pool.submit(self._get, rel))
                yield data
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _apply(self, rel: str, seq: int, obj: bytes | None) -> bool:
        """Write the segment's pieces (``obj``: the object ``rel``) into the staging files when it continues
        them exactly; else False."""
        def part_size(name: str) -> int | None:
            path = self.staging / name
            return path.stat().st_size if path.exists() else None

        ends = {name: self.sent.get(name, 0) for name in self._appended}
        try:
            header, pieces = decode_segment(obj or b"")
            if not continues(header, pieces, seq, [self.seq, self.prev_run], ends, part_size):
                return False
        except (ValueError, KeyError, TypeError):
            return False
        for name, offset, data in pieces:
            if name in self._appended:
                self._write_staging(name, data, offset)
                self.sent[name] = offset + len(data)
            else:
                self._write_staging(name, data)
                self.parts_sent.add(name)
        self.seq, self.prev_run = seq, str(header["run"])
        return True

    # ------------------------------------------------ while running

    def wrap(self, sink: Any) -> Any:
        """The sink, shipping a segment after its flushes (see :class:`SegmentSink`); starts the uploader."""
        self._thread = threading.Thread(target=self._upload_loop, name="batchinfer-remote-output", daemon=True)
        self._thread.start()
        return SegmentSink(sink, self)

    def ship(self, force: bool = False) -> None:
        """Queue a segment of what the staging files gained since the last one (at most about once a
        second, or when :data:`SHIP_BYTES` are pending; ``force``: now)."""
        self._raise_upload_error()
        self._still_ours()
        now = time.monotonic()
        if not force and now - self._last_ship < SHIP_INTERVAL_S and self._pending_bytes() < SHIP_BYTES:
            return
        pieces, data = self._pending()
        if not pieces:
            return
        self._last_ship = now
        self.seq += 1
        header = {"seq": self.seq, "run": self.run, "prev": [self.seq - 1, self.prev_run], "pieces": pieces}
        self.prev_run = self.run
        segment = encode_segment(header, data)
        while True:  # bounded: past QUEUE_BOUND pending segments the scheduler waits here
            try:
                self._queue.put((segment_name(self.seq, self.run), segment), timeout=1.0)
                break
            except queue.Full:
                self._raise_upload_error()
        self.segments_written += 1

    def _pending_bytes(self) -> int:
        """About how much a segment would hold now (the staging files' growth; Parquet parts not counted)."""
        total = 0
        for rel in (JOURNAL, self.row_name if self.append else None):
            if rel is not None:
                with contextlib.suppress(FileNotFoundError):
                    total += (self.staging / rel).stat().st_size - self.sent.get(rel, 0)
        return total

    def _pending(self) -> tuple[list[dict[str, Any]], list[bytes]]:
        pieces: list[dict[str, Any]] = []
        data: list[bytes] = []

        def add(rel: str, offset: int, chunk: bytes) -> None:
            if chunk:
                pieces.append({"file": rel, "offset": offset, "length": len(chunk)})
                data.append(chunk)

        journal_size = (self.staging / JOURNAL).stat().st_size if (self.staging / JOURNAL).exists() else 0
        journal_bytes = _read(self.staging / JOURNAL, self.sent[JOURNAL], journal_size)
        journal_bytes = journal_bytes[: journal_bytes.rfind(b"\n") + 1]  # whole lines only
        if self.row_name and self.append and journal_bytes:
            end = last_end(journal_bytes)
            start = self.sent.get(self.row_name, 0)
            if end > start:
                add(self.row_name, start, _read(self.staging / self.row_name, start, end))
                self.sent[self.row_name] = end
        parts = self.staging / PARTS
        if parts.is_dir():
            for path in sorted(parts.glob("*.arrow")):
                rel = f"{PARTS}/{path.name}"
                if rel not in self.parts_sent:
                    add(rel, 0, path.read_bytes())
                    self.parts_sent.add(rel)
        add(JOURNAL, self.sent[JOURNAL], journal_bytes)
        self.sent[JOURNAL] += len(journal_bytes)
        return pieces, data

    def _still_ours(self) -> None:
        """:class:`OutputError` once the lease is lost (another run took the folder over): from then on
        this run commits nothing to the store, so the new holder's record stays its own."""
        if self.lease is not None and self.lease.lost:
            raise OutputError(f"output {redact_url(self.url)}: this run stopped: {self.lease.lost_reason}",
                              hint="the rows it committed before are in the folder; the other run continues it")

    def _raise_upload_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _upload_loop(self) -> None:
        while True:
            try:
                task = self._queue.get(timeout=1.0)
            except queue.Empty:
                task = None
            if task == "stop":
                return
            try:
                self._still_ours()  # a run that lost its lease writes nothing more to the folder
                if task is not None:
                    # the script's files first: the segment commits their mini-batches, so once it is
                    # in the store their files must be too (a kill in between would lose them for good)
                    self._upload_changed(user_files=True)
                    self._put(*task)
                self._periodic()
            except BaseException as exc:  # noqa: BLE001 - raised in the scheduler's thread by ship()
                self._error = exc
                while True:  # unblock a waiting ship(); nothing more is uploaded
                    try:
                        if self._queue.get_nowait() == "stop":
                            return
                    except queue.Empty:
                        time.sleep(0.05)

    def _periodic(self) -> None:
        now = time.monotonic()
        if now - self._last_logs >= LOG_INTERVAL_S:
            self._last_logs = now
            self._upload_changed(logs=True)

    def _upload_changed(self, logs: bool = False, user_files: bool = False) -> None:
        """Upload the files new or changed (size, mtime) since their last upload: logs/*, or the script's own."""
        for rel in self._walk(logs, user_files):
            try:
                info = os.stat(self.staging / rel)
            except FileNotFoundError:
                continue
            if self._uploaded.get(rel) != (info.st_size, info.st_mtime_ns):
                self._put_file(rel, vanishing=True)

    def _walk(self, logs: bool, user_files: bool) -> list[str]:
        own = {SUMMARY_FILE, SUMMARY_FILE + ".tmp"}
        if self.row_name:
            own |= {self.row_name, self.row_name + ".tmp"}
        found = []
        for dirpath, dirs, files in os.walk(self.staging):
            rel_dir = os.path.relpath(dirpath, self.staging)
            if rel_dir == ".":
                dirs[:] = [d for d in dirs if d != STATE_DIR and (d != LOGS_DIR or logs)]
                if not user_files:
                    dirs[:] = [d for d in dirs if d == LOGS_DIR]
            for name in files:
                rel = name if rel_dir == "." else f"{Path(rel_dir).as_posix()}/{name}"
                in_logs = rel.startswith(LOGS_DIR + "/")
                if (in_logs and logs) or (not in_logs and user_files and rel not in own and not name.endswith(".tmp")):
                    found.append(rel)
        return sorted(found)

    def drain(self) -> None:
        """Ship what is left and wait for every segment to be in the store (before the summary is written)."""
        try:
            self.ship(force=True)
        finally:
            self._stop_thread()
        self._raise_upload_error()
        log.info("output %s: %d segment(s) and %d other object(s) written while running",
                 redact_url(self.url), self.segments_written, self.objects_written - self.segments_written)

    def _stop_thread(self) -> None:
        if self._thread is not None:
            self._queue.put("stop")
            self._thread.join()
            self._thread = None

    # ------------------------------------------------ the end

    def finish(self) -> None:
        """The run's end (succeeded, failed or interrupted): base files, then base.json, then the
        segments they include removed; then summary, logs, state and the script's files."""
        self.drain()
        # still ours? a run whose lease was taken over must not replace the new holder's base
        self.lease.renew()
        self._still_ours()
        files: dict[str, int] = {}
        if self.row_name and (self.staging / self.row_name).is_file():
            self._put_file(self.row_name)  # fsspec's put_file: multipart where the store has it
            if self.append:
                files[self.row_name] = self.sent.get(self.row_name, 0)
        if (self.staging / JOURNAL).is_file():
            self._put_file(JOURNAL)
            files[JOURNAL] = self.sent[JOURNAL]
        pack = self._pack()
        if pack is not None:
            self._put(PACK, pack)
        if self.seq > self.base_seq or pack is not None:
            self._put(BASE, json.dumps({"format": 1, "seq": self.seq, "run": self.prev_run, "files": files,
                                        "pack": pack is not None}).encode())
            self._delete([rel for rel in self._list(SEGMENTS)
                          if (seq := segment_seq(rel)) is not None and seq <= self.seq])
        self.upload_state()

    def _pack(self) -> bytes | None:
        """Parquet's Arrow parts, all in one object (the parts' base), or None when there are none."""
        parts = sorted((self.staging / PARTS).glob("*.arrow")) if (self.staging / PARTS).is_dir() else []
        if not parts:
            return None
        data = [p.read_bytes() for p in parts]
        pieces = [{"file": f"{PARTS}/{p.name}", "offset": 0, "length": len(d)} for p, d in zip(parts, data)]
        return encode_segment({"seq": self.seq, "run": self.prev_run, "prev": None, "pieces": pieces}, data)

    def upload_state(self) -> None:
        """summary.json, logs/*, the script's files, then manifest.json and job.json (changed ones)."""
        self._upload_changed(logs=True, user_files=True)
        self._upload_if_changed((SUMMARY_FILE, *STATE_OBJECTS))

    def _upload_if_changed(self, rels: tuple[str, ...]) -> None:
        for rel in rels:
            if (self.staging / rel).is_file():
                info = os.stat(self.staging / rel)
                if self._uploaded.get(rel) != (info.st_size, info.st_mtime_ns):
                    self._put_file(rel)

    def close(self) -> None:
        """Stop the uploader (if still running), release the lease and remove the staging folder."""
        self._stop_thread()
        if self.lease is not None:
            with contextlib.suppress(Exception):
                self.lease.release()
            self.lease = None
        shutil.rmtree(self.staging, ignore_errors=True)

    # ------------------------------------------------ names

    def shown(self, path: Path | str) -> str:
        """The URL (redacted) of a staging path: what summaries and messages name."""
        rel = os.path.relpath(path, self.staging)
        url = self.url if rel == "." else f"{self.url}/{Path(rel).as_posix()}"
        return redact_url(url)

    @contextlib.contextmanager
    def translated(self) -> Any:
        """Errors that name the staging folder name the URL instead."""
        try:
            yield
        except BatchInferError as exc:
            staging = str(self.staging)
            exc.message = exc.message.replace(staging, redact_url(self.url))
            if exc.hint:
                exc.hint = exc.hint.replace(staging, redact_url(self.url))
            raise


class SegmentSink:
    """A row sink (``RowSink``, ``NullSink``) whose flushes also ship a segment (see :meth:`RemoteFolder.ship`)."""

    def __init__(self, sink: Any, folder: RemoteFolder) -> None:
        self.sink = sink
        self.folder = folder
        self.journal = sink.journal

    def commit(self, entry: Any, rows: bytes, header: bytes | None) -> None:
        """As the wrapped sink."""
        self.sink.commit(entry, rows, header)

    def flush(self) -> None:
        """Rows then journal to the staging files (the wrapped sink's rule), then maybe a segment."""
        self.sink.flush()
        self.folder.ship()

    def finish(self) -> None:
        """As the wrapped sink (the last segment is shipped by :meth:`RemoteFolder.drain`)."""
        self.sink.finish()

    def close(self) -> None:
        """As the wrapped sink."""
        self.sink.close()


def _is_local_tmp(rel: str) -> bool:
    """A temporary name of :func:`_replace_local` left by a kill: not an object of the folder."""
    name = rel.rsplit("/", 1)[-1]
    return name.startswith(".batchinfer-") and name.endswith(".tmp")


def _replace_local(path: str, write: Any) -> None:
    """file://: ``write(f)`` into a temporary name beside ``path``, fsync, then ``os.replace``, so that a
    kill leaves the old object or the new one, never a shorter one (fsspec's LocalFileSystem writes in place)."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".batchinfer-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself made durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _read(path: Path, start: int, end: int) -> bytes:
    if end <= start:
        return b""
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)

