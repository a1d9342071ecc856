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

from batchinfer.errors import OutputError
from batchinfer.layout import SUMMARY_FILE
from batchinfer.lock import LOCK_FILE, LockHolder, lock_state
from batchinfer.manifest import MANIFEST
from batchinfer.output import STATE_DIR
from batchinfer.scheduler import Progress
from batchinfer.statefiles import JOB_FILE, read_job_file, read_status_doc, read_summary, shown, write_private_json

DEFAULT_INTERVAL_S = 30.0
STATUS_INTERVAL_S = 1.0
STATUS_FILE = "status.json"  # in <output>/.batchinfer/


class StatusFile:
    """``.batchinfer/status.json``: the live progress of a running job, for ``batchinfer status``."""

    def __init__(self, state_dir: Path, name: str, workers: int) -> None:
        self.path = state_dir / STATUS_FILE
        self.base = {"job": name, "pid": os.getpid(), "workers": workers,
                     "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, p: Progress, state: str = "running", force: bool = False) -> None:
        """Rewrite the file (at most once a second unless ``force``)."""
        now = time.monotonic()
        if not force and now - self._last < STATUS_INTERVAL_S:
            return
        self._last = now
        doc = {**self.base, "state": state, "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "elapsed_s": round(now - self.started, 1), **asdict(p), "items_done": p.items_done}
        write_private_json(self.path, doc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        held, holder = live.get("state") == "running" and _alive(live["pid"]), None
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


def status_line(doc: dict[str, Any]) -> str:
    """One line describing a job's state, for ``batchinfer status``."""
    state = doc.get("state")
    if state == "running":
        lock = doc.get("lock")
        who = LockHolder.model_validate(lock).describe() if lock else f"pid {doc.get('pid', '?')}"
        if "mini_batches_done" not in doc:
            return f"{doc.get('job')}: running ({who}): starting"
        total = doc["mini_batches_total"] if doc.get("listing_done") else f"{doc.get('mini_batches_total')}+"
        rate = doc["items_done"] / doc["elapsed_s"] if doc.get("elapsed_s") else 0
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
            self._bar.update(
                self._task,
                completed=p.mini_batches_done,
                total=p.mini_batches_total if p.listing_done else None,
                detail=self._detail(p),
            )
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
        listing = "" if p.listing_done or self.mode != "bar" else " (still listing inputs)"
        return (
            f"{p.items_done} items, {p.items_failed} failed, {p.items_done / elapsed:.0f} items/s, "
            f"{p.busy_workers}/{self.workers} workers busy{listing}"
        )

    def _status(self, p: Progress) -> str:
        total = str(p.mini_batches_total) if p.listing_done else f"{p.mini_batches_total}+ (listing)"
        return f"{p.mini_batches_done}/{total} mini-batches, {self._detail(p)}"

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
