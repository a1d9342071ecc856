"""One run at a time per remote output folder: a lease object, ``<output>/.batchinfer/lease.json``.

An object store has no ``flock``, so a remote folder (``s3://``, ``az://``, ``gs://``, ``file://``,
``memory://``) is held by a lease: an object created only if absent (see
:mod:`batchinfer.conditional` for how each store does it), which the holder rewrites every
:data:`RENEW_INTERVAL_S` seconds (5 s) from a thread of its own, with the live status of the job
in it, and deletes at its end. A lease not rewritten for its ``ttl_s`` (:data:`TTL_S`, 30 s) is
expired: the next run takes it over (replacing it only if it is still the version it read, so
of two runs taking over at once only one wins). A lease whose holder ran on this same host (same
host name, boot and pid namespace) with a pid that no longer exists is expired at once: a run
killed with SIGKILL and started again on the same machine continues immediately; from another
machine, or in another container, it continues once the lease has expired (at most 30 s).

Before each rewrite the holder makes sure the lease is still its own (the write is conditional on
the version it last wrote): when another run took it (this one stalled for longer than the TTL),
the lease is :attr:`Lease.lost` and the job must stop.

Clock: ``renewed_at`` is the holder's UTC clock; its age is measured against the store's clock
(the HTTP ``Date`` of the read, on S3 and Azure) or this machine's (elsewhere). The assumption:
the holder's clock and the store's (or the reader's) agree within a few seconds, as NTP keeps
them; a skew close to the TTL would make a live lease look expired, or a dead one live longer.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

from pydantic import Field, ValidationError

from batchinfer.conditional import MAX_BYTES, Objects, Read, objects_for
from batchinfer.errors import BatchInferError, OutputError
from batchinfer.layout import STATE_DIR
from batchinfer.lock import pid_alive
from batchinfer.redact import for_log, redact_url
from batchinfer.retry import retrying
from batchinfer.statefiles import ReadBack, StatusDoc, why_invalid
from batchinfer.storage import store_error

LEASE_FILE = "lease.json"  # in <output>/.batchinfer/
LEASE_FORMAT = 1
TTL_S = 30.0  # a lease not renewed for this long is expired
RENEW_INTERVAL_S = 5.0  # the holder rewrites it this often (so a few lost writes do not expire it)
ACQUIRE_TRIES = 5  # creating and taking over race with other runs: look again this many times

log = logging.getLogger("batchinfer.lease")


class LeaseDoc(ReadBack):
    """The lease object, read back (so validated)."""

    format: int = Field(ge=1)
    run_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    pid: int = Field(gt=0)
    host: str = Field(max_length=300)
    started_at: datetime
    renewed_at: datetime
    ttl_s: float = Field(gt=0, le=86_400, allow_inf_nan=False)
    command: str = Field("", max_length=10_000)
    pid_space: Optional[str] = Field(None, max_length=200)  # see pid_space_of_this_process()
    status: Optional[dict[str, Any]] = None


def lease_path(folder_path: str) -> str:
    """Where the lease of the folder at ``folder_path`` (a path within its filesystem) lives."""
    return f"{folder_path.rstrip('/')}/{STATE_DIR}/{LEASE_FILE}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def pid_space_of_this_process() -> str | None:
    """Where a pid means one process: this boot of this kernel and this pid namespace (Linux), or
    None where that cannot be told. Two containers (or machines) may share a host name: a pid of
    another pid space is never looked up here."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        return f"{boot} {os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


@dataclass(frozen=True)
class SeenLease:
    """A lease as read from the store, and what can be said of it at the time of the read."""

    doc: LeaseDoc
    etag: str
    now: datetime  # the store's time of the read (see the module's docstring)

    @property
    def age_s(self) -> float:
        """Seconds since it was last renewed, never below 0: the store's clock (an HTTP Date) has whole
        seconds, so a lease renewed in the same second can look renewed "in the future" ("-0 s ago")."""
        return max(0.0, (self.now - self.doc.renewed_at).total_seconds())

    def expired_because(self) -> str | None:
        """Why it is expired (a phrase), or None while it is live."""
        doc = self.doc
        here = doc.host == socket.gethostname() and doc.pid_space == pid_space_of_this_process()
        if here and not pid_alive(doc.pid):
            return f"its holder, pid {doc.pid} on this host, is gone"
        if self.age_s > doc.ttl_s:
            return f"the run holding it stopped renewing it {self.age_s:.0f} s ago"
        return None

    def describe(self) -> str:
        """``pid 12 on host, renewed 3 s ago; expires in 27 s unless renewed``."""
        age = round(self.age_s)
        return (f"pid {self.doc.pid} on {for_log(self.doc.host)}, renewed {age} s ago; "
                f"expires in {max(round(self.doc.ttl_s) - age, 0)} s unless renewed")

    def holder(self) -> dict[str, Any]:
        """Who holds it, for ``batchinfer status --json``."""
        doc = self.doc
        return {"run_id": doc.run_id, "pid": doc.pid, "host": doc.host, "command": doc.command,
                "started_at": doc.started_at.isoformat(timespec="seconds"),
                "renewed_at": doc.renewed_at.isoformat(timespec="seconds"),
                "renewed_s_ago": round(self.age_s, 1), "ttl_s": doc.ttl_s}

    def live_status(self) -> dict[str, Any]:
        """The job's live status written with the lease, or {} when it has none (yet) or a damaged one."""
        status = self.doc.status
        if not status:
            return {}
        try:
            StatusDoc.model_validate(status)
        except ValidationError:
            return {}
        return dict(status)


def _parse(read: Read, url: str) -> SeenLease:
    where = f"{redact_url(url.rstrip('/'))}/{STATE_DIR}/{LEASE_FILE}"
    hint = "if no batchinfer run uses the folder, delete that object and run the job again"
    try:
        if len(read.data) > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES} bytes")
        raw = json.loads(read.data.decode("utf-8"))
        if isinstance(raw, dict) and isinstance(raw.get("format"), int) and raw["format"] > LEASE_FORMAT:
            raise OutputError(f"{where} was written by a newer batchinfer (lease format {raw['format']})",
                              hint="use that version of batchinfer, or choose another output")
        doc = LeaseDoc.model_validate_json(read.data)
    except (ValueError, UnicodeDecodeError) as exc:  # ValidationError is a ValueError
        raise OutputError(f"the lease {where} is damaged ({why_invalid(exc)})", hint=hint) from None
    if doc.renewed_at.tzinfo is None or doc.started_at.tzinfo is None:
        raise OutputError(f"the lease {where} is damaged (its times have no time zone)", hint=hint)
    return SeenLease(doc, read.etag, read.now)


def read_lease(fs: Any, folder_path: str, url: str) -> SeenLease | None:
    """The lease of the folder (``url`` names it in messages), or None when no run holds it;
    a damaged lease is an :class:`OutputError`."""
    path = lease_path(folder_path)
    read = retrying(lambda: objects_for(fs).read(path), f"reading {redact_url(url)}")
    return None if read is None else _parse(read, url)


def _busy(url: str, seen: SeenLease | None) -> OutputError:
    who = seen.describe() if seen else "its lease keeps changing"
    return OutputError(f"output {redact_url(url)} is in use by another batchinfer run ({who})",
                       hint=f"wait for it to end (batchinfer status {redact_url(url)}), or choose another output")


class Lease:
    """The lease on one remote output folder, held by this process until :meth:`release`.

    Make it with :meth:`acquire`. While held, a thread rewrites it every ``interval_s`` with the
    status given to :meth:`set_status`. When another run takes it, :attr:`lost` becomes True,
    :attr:`lost_reason` says why, and ``on_lost(reason)`` is called once (from the lease's thread).
    """

    def __init__(self, objects: Objects, path: str, url: str, doc: dict[str, Any], etag: str,
                 interval_s: float, on_lost: Callable[[str], None] | None) -> None:
        self._objects = objects
        self.path = path
        self.url = url
        self._doc = doc
        self._etag = etag
        self.run_id: str = doc["run_id"]
        self.ttl_s: float = doc["ttl_s"]
        self.interval_s = interval_s
        self.on_lost = on_lost
        self.lost = False
        self.lost_reason: str | None = None
        self._renewed = time.monotonic()
        self._writing = threading.Lock()  # one write at a time: the thread's and the caller's
        self._doc_lock = threading.Lock()  # held for no I/O: set_status never waits for the store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._released = False
        self._taker: SeenLease | None = None  # the run that took the lease over, once lost

    # ------------------------------------------------------------------ taking it

    @classmethod
    def acquire(cls, fs: Any, folder_path: str, *, url: str, command: str | None = None, ttl_s: float = TTL_S,
                interval_s: float = RENEW_INTERVAL_S, on_lost: Callable[[str], None] | None = None,
                start: bool = True) -> Lease:
        """Take the lease of the folder at ``folder_path`` in ``fs`` (``url`` names it in messages):
        create it if absent, take it over if expired, else raise :class:`OutputError` (one line:
        who holds it, when it was renewed, when it expires). ``command`` (default: this process's
        command line) is stored redacted. ``start``: begin renewing in the background at once."""
        objects = objects_for(fs)
        path = lease_path(folder_path)
        now = _now().isoformat()
        doc: dict[str, Any] = {
            "format": LEASE_FORMAT, "run_id": secrets.token_hex(16), "pid": os.getpid(),
            "host": socket.gethostname(), "started_at": now, "renewed_at": now, "ttl_s": float(ttl_s),
            "command": for_log(command if command is not None else " ".join(sys.argv)),
            "pid_space": pid_space_of_this_process(), "status": None,
        }
        try:
            etag = _take(objects, path, url, doc)
        except BatchInferError:
            raise
        except Exception as exc:  # a missing bucket, refused credentials, a store that kept failing
            raise store_error(exc, url, "output") from None
        lease = cls(objects, path, url, doc, etag, interval_s, on_lost)
        if start:
            lease.start()
        return lease

    # ------------------------------------------------------------------ keeping it

    def start(self) -> None:
        """Begin renewing every ``interval_s`` in a background thread (daemon: it dies with the process)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="batchinfer-lease", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self.renew():
                return

    def set_status(self, status: dict[str, Any]) -> None:
        """The job's live status (the fields ``progress.StatusFile`` writes), written by the next renewal."""
        with self._doc_lock:
            self._doc["status"] = status

    def renew(self, status: dict[str, Any] | None = None) -> bool:
        """Rewrite the lease now (with ``status``, if given), only if it is still this run's.
        Returns False once it is lost. A store that keeps failing is tried again at the next renewal;
        when no renewal succeeded for ``ttl_s - interval_s`` (25 s), the lease counts as lost before
        another run may take it over: the job stops before two runs could write at once."""
        with self._writing:
            if self.lost or self._released:
                return not self.lost
            with self._doc_lock:
                if status is not None:
                    self._doc["status"] = status
                self._doc["renewed_at"] = _now().isoformat()
                data = _encode(self._doc)
            what = f"renewing the lease of {redact_url(self.url)}"
            try:
                etag = retrying(lambda: self._objects.replace(self.path, data, self._etag), what)
                if etag is None:
                    etag = self._after_conflict(data, what)
            except Exception as exc:  # the store failing (StorageUnavailable, refused): try again next time
                silent = time.monotonic() - self._renewed
                log.warning("%s: %s (last renewed %.0f s ago)", what, for_log(str(exc)), silent)
                if silent > self.ttl_s - self.interval_s:
                    reason = f"it could not be renewed for {silent:.0f} s (the store: {for_log(str(exc))})"
                else:
                    return True
            else:
                if etag is not None:
                    self._etag = etag
                    self._renewed = time.monotonic()
                    return True
                reason = self._why_lost()
        self._lose(reason)
        return False

    def _after_conflict(self, data: bytes, what: str) -> str | None:
        """The lease changed under us: our own write whose answer was lost (a retried timeout), or another run's."""
        read = retrying(lambda: self._objects.read(self.path), what)
        if read is None:
            return None
        try:
            seen = _parse(read, self.url)
        except OutputError:
            return None
        if seen.doc.run_id != self.run_id:
            self._taker = seen
            return None
        return retrying(lambda: self._objects.replace(self.path, data, read.etag), what)

    def _why_lost(self) -> str:
        taker = self._taker
        if taker is None:
            return f"the lease of {redact_url(self.url)} was deleted or damaged by someone else"
        return (f"another batchinfer run took over the lease of {redact_url(self.url)} "
                f"(pid {taker.doc.pid} on {for_log(taker.doc.host)})")

    def _lose(self, reason: str) -> None:
        self.lost = True
        self.lost_reason = reason
        self._stop.set()
        log.error("lost the output folder: %s", reason)
        if self.on_lost is not None:
            self.on_lost(reason)

    # ------------------------------------------------------------------ letting it go

    def release(self) -> None:
        """Stop renewing and delete the lease, if it is still this run's (the final status is in summary.json)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._writing:
            if self._released:
                return
            self._released = True
            if self.lost:
                return
            try:
                retrying(lambda: self._objects.delete(self.path, self._etag),
                         f"releasing the lease of {redact_url(self.url)}")
            except Exception as exc:  # it expires on its own after ttl_s
                log.warning("could not delete the lease of %s (%s): it expires in %.0f s",
                            redact_url(self.url), for_log(str(exc)), self.ttl_s)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _take(objects: Objects, path: str, url: str, doc: dict[str, Any]) -> str:
    """Create the lease ``doc`` at ``path``, or take over an expired one; its etag, or :class:`OutputError`."""
    what = f"taking the lease of {redact_url(url)}"
    seen: SeenLease | None = None
    for _ in range(ACQUIRE_TRIES):
        doc["renewed_at"] = _now().isoformat()
        data = _encode(doc)
        etag = retrying(lambda: objects.create(path, data), what)
        if etag is None:
            read = retrying(lambda: objects.read(path), what)
            if read is None:
                continue  # released in the meantime: create it again
            seen = _parse(read, url)
            if seen.doc.run_id == doc["run_id"]:  # our own create, retried after a lost answer
                etag = seen.etag
                break
            why = seen.expired_because()
            if why is None:
                raise _busy(url, seen)
            etag = retrying(lambda: objects.replace(path, data, seen.etag), what)
            if etag is None:
                continue  # another run changed it in the meantime: look again
            log.warning("took over the lease of %s from pid %d on %s: %s", redact_url(url), seen.doc.pid,
                        for_log(seen.doc.host), why)
        break
    else:
        raise _busy(url, seen)
    return etag


def _encode(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, default=str) + "\n").encode("utf-8", "backslashreplace")
