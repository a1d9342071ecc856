"""Progress and the final report, on stderr only: a rich bar on a terminal, plain lines otherwise.

stdout is reserved for data, so every console here is a stderr console.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from batchinfer.errors import OutputError, StorageError
from batchinfer.layout import STATE_DIR, SUMMARY_FILE
from batchinfer.lock import LOCK_FILE, LockHolder, lock_state, pid_alive
from batchinfer.manifest import MANIFEST
from batchinfer.scheduler import Progress, shown_total
from batchinfer.statefiles import JOB_FILE, read_job_file, read_status_doc, read_summary, shown, write_private_json

DEFAULT_INTERVAL_S = 30.0
STATUS_INTERVAL_S = 1.0
STATUS_FILE = "status.json"  # in <output>/.batchinfer/


class StatusFile:
    """``.batchinfer/status.json``: the live progress of a running job, for ``batchinfer status``."""

    def __init__(self, state_dir: Path, name: str, workers: int) -> None:
        self.path = state_dir / STATUS_FILE
        self.base = _status_base(name, workers)
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, p: Progress, state: str = "running", force: bool = False) -> None:
        """Rewrite the file (at most once a second unless ``force``)."""
        now = time.monotonic()
        if not force and now - self._last < STATUS_INTERVAL_S:
            return
        self._last = now
        write_private_json(self.path, _status_doc(self.base, self.started, p, state))

    def set_workers(self, count: int) -> None:
        """The job's worker count, once the executor started (Ray fits it to the nodes)."""
        self.base["workers"] = count


def _status_base(name: str, workers: int) -> dict[str, Any]:
    return {"job": name, "pid": os.getpid(), "workers": workers,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _status_doc(base: dict[str, Any], started: float, p: Progress, state: str) -> dict[str, Any]:
    """The live status document (see statefiles.StatusDoc): status.json's, or a remote folder's lease's."""
    return {**base, "state": state, "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "elapsed_s": round(time.monotonic() - started, 1), **asdict(p), "items_done": p.items_done}


class LeaseStatus:
    """The live status of a job whose output folder is remote, with :class:`StatusFile`'s interface:
    handed to its lease (:meth:`batchinfer.lease.Lease.set_status`), which writes it with each renewal."""

    def __init__(self, lease: Any, name: str, workers: int) -> None:
        self.lease = lease
        self.base = _status_base(name, workers)
        self.started = time.monotonic()

    def update(self, p: Progress, state: str = "running", force: bool = False) -> None:
        """Give the lease the newest status (no I/O here: the lease's next renewal writes it;
        ``force`` changes nothing, since the final state lives in summary.json)."""
        self.lease.set_status(_status_doc(self.base, self.started, p, state))

    def set_workers(self, count: int) -> None:
        """As :meth:`StatusFile.set_workers`."""
        self.base["workers"] = count


def ran_locally(folder: Path) -> bool:
    """Whether ``folder`` is a local run's output folder (an flock and ``status.json``), not a remote one
    reached through ``file://`` (a lease object and segments): the two are read differently."""
    from batchinfer.lease import LEASE_FILE

    state = folder / STATE_DIR
    return (state / STATUS_FILE).exists() and not (state / LEASE_FILE).exists()


def read_status(folder: Path) -> dict[str, Any]:
    """What ``batchinfer status`` shows: running (who holds the folder, live counts), finished, or stopped.

    A run is running while it holds the folder's lock. Every file read here is validated: a damaged
    one is treated as absent, so ``status`` always answers.
    """
    state_dir = folder / STATE_DIR
    if not (state_dir / JOB_FILE).exists() and not (state_dir / MANIFEST).exists():
        raise OutputError(f"{shown(folder)} holds no batchinfer job", hint="give the output folder of a job")
    job = read_job_file(state_dir / JOB_FILE, damaged_ok=True)
    live = read_status_doc(state_dir / STATUS_FILE) or {}
    summary = read_summary(folder / SUMMARY_FILE)
    if (state_dir / LOCK_FILE).exists():
        held, holder = lock_state(state_dir)
    else:  # written by batchinfer 0.1.0, which had no lock: trust the live file's pid
        held, holder = live.get("state") == "running" and pid_alive(live["pid"]), None
    if held:
        if holder is not None and live.get("pid") != holder.pid:
            live = {}  # the previous run's counts: this run has not written its own yet
        doc = {"job": job.name if job else folder.name, **live, "state": "running"}
        if holder is not None:
            doc.update(pid=holder.pid, lock=holder.model_dump())
        return doc
    if summary and (not live or summary.get("finished_at", "") >= live.get("started_at", "")):
        return {**summary, "state": summary.get("status")}
    base = live or {"job": job.name if job else folder.name}
    return {**base, "state": "stopped", "hint": "the job stopped without finishing; run it again to resume"}


def read_remote_status(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``batchinfer status`` shows of a remote output folder (``s3://``, ``az://``, ``gs://``,
    ``file://``...), from any machine: running (its lease is live), stale (its lease expired),
    finished (summary.json), stopped, or an :class:`OutputError` when it is not a batchinfer folder.

    Credentials: ``storage_options``, or else the SDK's usual environment variables.
    """
    from batchinfer.lease import read_lease
    from batchinfer.redact import redact_url
    from batchinfer.storage import call, filesystem, store_error

    fs, root = filesystem(url, storage_options)
    root = root.rstrip("/")
    shown_url = redact_url(url)

    def read(name: str) -> bytes | None:
        def cat() -> bytes | None:
            try:
                return fs.cat_file(f"{root}/{name}")
            except FileNotFoundError:
                return None
        return call(cat, f"{url.rstrip('/')}/{name}", "output", "reading")

    try:
        seen = read_lease(fs, root, url)
        summary = _summary_of(read(SUMMARY_FILE))
        job = _job_name(read(f"{STATE_DIR}/{JOB_FILE}"))
        if seen is None and summary is None and not _has_state(fs, f"{root}/{STATE_DIR}"):
            raise OutputError(f"{shown_url} is not a batchinfer output folder (it holds no {STATE_DIR}/)",
                              hint="check the URL (bucket or container, path): give the output folder of a job, "
                              "as in its 'output'")
    except (OutputError, StorageError):
        raise
    except Exception as exc:  # a missing bucket, refused credentials, a store that kept failing
        raise store_error(exc, url, "output") from None
    name = job or root.rsplit("/", 1)[-1]
    if seen is not None:
        live = seen.live_status()
        why = seen.expired_because()
        if why is None:
            return {"job": name, **live, "state": "running", "pid": seen.doc.pid, "lease": seen.holder()}
        if summary is None or summary.get("finished_at", "") < seen.doc.started_at.isoformat(timespec="seconds"):
            return {"job": name, **live, "state": "stale", "lease": seen.holder(),
                    "hint": f"{why}; run the job again to resume"}
    if summary is not None:
        return {**summary, "state": summary.get("status")}
    return {"job": name, "state": "stopped", "hint": "the job stopped without finishing; run it again to resume"}


def _summary_of(data: bytes | None) -> dict[str, Any] | None:
    import json

    from batchinfer.statefiles import SummaryFile

    if data is None:
        return None
    try:
        doc = json.loads(data.decode("utf-8"))
        SummaryFile.model_validate(doc)
    except (ValueError, UnicodeDecodeError):
        return None  # damaged: the next run writes a new one
    return doc


def _job_name(data: bytes | None) -> str | None:
    from batchinfer.statefiles import JobFile

    try:
        return JobFile.model_validate_json(data).name if data is not None else None
    except ValueError:
        return None


def _has_state(fs: Any, path: str) -> bool:
    try:
        return bool(fs.ls(path, detail=False))
    except (FileNotFoundError, NotADirectoryError):
        return False


def status_line(doc: dict[str, Any]) -> str:
    """One line describing a job's state, for ``batchinfer status``."""
    state = doc.get("state")
    if state == "stale":
        lease = doc["lease"]
        return (f"{doc.get('job')}: stale: the output folder's lease (pid {lease['pid']} on {shown(lease['host'])}) "
                f"expired: {doc.get('hint')}")
    if state == "running":
        lock, lease = doc.get("lock"), doc.get("lease")
        if lease:
            who = (f"pid {lease['pid']} on {shown(lease['host'])}, renewed {lease['renewed_s_ago']:.0f} s ago")
        else:
            who = LockHolder.model_validate(lock).describe() if lock else f"pid {doc.get('pid', '?')}"
        if "mini_batches_done" not in doc:
            return f"{doc.get('job')}: running ({who}): starting"
        total = _total_text(doc)
        # this run's items over this run's time (items_done counts a resumed job's earlier runs too);
        # a status file of an older batchinfer has no items_this_run
        rate = doc.get("items_this_run", doc["items_done"]) / doc["elapsed_s"] if doc.get("elapsed_s") else 0
        return (f"{doc.get('job')}: running ({who}): {doc.get('mini_batches_done')}/{total} mini-batches, "
                f"{doc.get('items_done')} items ({doc.get('items_failed')} failed), {rate:.0f} items/s, "
                f"{doc.get('busy_workers')}/{doc.get('workers')} workers busy, {doc.get('elapsed_s')}s")
    if state == "stopped":
        if "mini_batches_done" not in doc:
            return f"{doc.get('job')}: stopped before its first mini-batch; run it again to resume"
        return (f"{doc.get('job')}: stopped after {doc.get('mini_batches_done')} mini-batches "
                f"({doc.get('items_done')} items); run it again to resume")
    note = f" (note: {doc['note']})" if doc.get("note") else ""  # e.g. run() returned no rows
    return (f"{doc.get('job')}: {state}: {doc.get('items_succeeded')}/{doc.get('items_total')} items succeeded, "
            f"{doc.get('items_failed')} failed, {doc.get('mini_batches_total')} mini-batches, {doc.get('elapsed_s')}s"
            f"{note}")


def _total_text(doc: dict[str, Any]) -> str:
    """'60', '~60' (an estimate from table sizes) or '17+ (listing)' (nothing known yet), from a
    status document or a Progress as a dict (a status file without the newer keys has no estimate)."""
    total, estimated = shown_total(doc.get("mini_batches_total") or 0, bool(doc.get("listing_done")),
                                   doc.get("mini_batches_expected"), bool(doc.get("total_estimated")))
    if total is None:
        return f"{doc.get('mini_batches_total')}+ (listing)"
    return f"~{total}" if estimated else str(total)


class Reporter:
    """Renders :class:`Progress` snapshots: ``bar`` (terminal), ``plain`` (cron, CI, pipes) or ``quiet``."""

    def __init__(self, mode: str = "auto", interval: float = DEFAULT_INTERVAL_S, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "plain"
        self.mode = mode
        self.interval = interval
        self.name = ""
        self.workers = 0
        self.started = time.monotonic()
        self._last_line = 0.0
        self._bar: Any = None
        self._task: Any = None

    # ------------------------------------------------------------- during the run

    def start(self, name: str, workers: int) -> None:
        """The job begins (workers are starting)."""
        self.name = name
        self.workers = workers
        self.started = self._last_line = time.monotonic()
        if self.mode == "plain":
            self._line(f"started with {workers} workers")
        elif self.mode == "bar":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress as Bar,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
            )

            console = Console(file=self.stream, stderr=True)
            self._bar = Bar(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                MofNCompleteColumn(),
                TextColumn("mini-batches"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[detail]}"),
                console=console,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(name, total=None, detail="starting workers")

    def update(self, p: Progress) -> None:
        """A new snapshot (called often: throttled here)."""
        if self.mode == "bar" and self._bar is not None:
            self._bar.update(self._task, completed=p.mini_batches_done, total=p.shown_total()[0],
                             detail=self._detail(p))
        elif self.mode == "plain" and time.monotonic() - self._last_line >= self.interval:
            self._line(self._status(p))

    def note(self, text: str) -> None:
        """A one-off message (e.g. 'stopping')."""
        if self.mode == "bar" and self._bar is not None:
            self._bar.console.print(text)
        elif self.mode != "quiet":
            self._line(text)

    def _detail(self, p: Progress) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        total, estimated = p.shown_total()
        listing = ""
        if self.mode == "bar" and total is None:
            listing = " (still listing inputs)"
        elif self.mode == "bar" and estimated:
            listing = f" (~{total} mini-batches, estimated from the table sizes)"
        return (
            f"{p.items_done} items, {p.items_failed} failed, {p.items_this_run / elapsed:.0f} items/s, "
            f"{p.busy_workers}/{self.workers} workers busy{listing}"
        )

    def _status(self, p: Progress) -> str:
        return f"{p.mini_batches_done}/{_total_text(asdict(p))} mini-batches, {self._detail(p)}"

    def _line(self, text: str) -> None:
        self._last_line = time.monotonic()
        stamp = datetime.now().isoformat(timespec="seconds")
        self.stream.write(f"{stamp} {self.name}: {text}\n")
        self.stream.flush()

    # ------------------------------------------------------------- the end

    def stop(self, p: Progress | None = None) -> None:
        """The run is over: close the bar (after a last update)."""
        if self._bar is not None:
            if p is not None:
                self.update(p)
            self._bar.stop()
            self._bar = None
        elif self.mode == "plain" and p is not None:
            self._line(self._status(p))

    def final(self, summary: dict[str, Any], reused: bool = False) -> None:
        """The closing lines: what happened, where the output and logs are, the first error."""
        if self.mode == "quiet" and summary.get("status") == "succeeded":
            return
        out = self.stream
        status = summary.get("status")
        if status == "succeeded" and summary.get("items_failed"):
            status = "succeeded, its failed items within the thresholds"
        head = "reused the finished job" if reused else "job"
        out.write(
            f"batchinfer: {head} {summary.get('job')} {status}: "
            f"{summary.get('items_succeeded')}/{summary.get('items_total')} items succeeded, "
            f"{summary.get('items_failed')} failed, in {summary.get('mini_batches_total')} mini-batches "
            f"({summary.get('tries')} tries, {summary.get('elapsed_s')}s)\n"
        )
        if summary.get("reason") and status != "succeeded":
            out.write(f"batchinfer: {summary['reason']}\n")
        if summary.get("note"):  # e.g. run() returned no rows: said plainly, success or not
            out.write(f"batchinfer: note: {summary['note']}\n")
        if summary.get("first_error"):
            out.write(f"batchinfer: first error: {summary['first_error']}\n")
        if summary.get("output_file") not in (None, "-"):
            out.write(f"batchinfer: output: {summary['output_file']}\n")
        if summary.get("log_dir") is None:  # --output - without --logs, and nothing failed
            out.write("batchinfer: logs: removed with their temporary folder (use --logs DIR to keep them)")
        else:
            out.write(f"batchinfer: logs: {summary.get('log_dir')}")
        if summary.get("items_failed"):
            out.write(" (errors.jsonl lists each failed try, failed_items.txt the failed items)")
        out.write("\n")
        if summary.get("look_at"):
            out.write(f"batchinfer: {summary['look_at']}\n")
        out.flush()
