"""Progress and the final report, on stderr only: a rich bar on a terminal, plain lines otherwise.

stdout is reserved for data, so every console here is a stderr console.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import IO, Any

from batchinfer.scheduler import Progress

DEFAULT_INTERVAL_S = 30.0


class Reporter:
    """Renders :class:`Progress` snapshots: ``bar`` (terminal), ``plain`` (cron, CI, pipes) or ``quiet``."""

    def __init__(self, mode: str = "auto", interval: float = DEFAULT_INTERVAL_S, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "plain"
        self.mode = mode
        self.interval = interval
        self.name = ""
        self.started = time.monotonic()
        self._last_line = 0.0
        self._bar: Any = None
        self._task: Any = None

    # ------------------------------------------------------------- during the run

    def start(self, name: str, workers: int) -> None:
        """The job begins (workers are starting)."""
        self.name = name
        self.started = self._last_line = time.monotonic()
        if self.mode == "plain":
            self._line(f"started with {workers} workers")
        elif self.mode == "bar":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            console = Console(file=self.stream, stderr=True)
            self._bar = Bar(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
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
        listing = "" if p.listing_done else " (still listing inputs)"
        return (
            f"{p.items_done} items, {p.items_failed} failed, {p.items_done / elapsed:.0f} items/s, "
            f"{p.busy_workers} busy{listing}"
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
        head = "reused the finished job in" if reused else "job"
        out.write(
            f"batchinfer: {head} {summary.get('job')} {status}: "
            f"{summary.get('items_succeeded')}/{summary.get('items_total')} items succeeded, "
            f"{summary.get('items_failed')} failed, in {summary.get('mini_batches_total')} mini-batches "
            f"({summary.get('tries')} tries, {summary.get('elapsed_s')}s)\n"
        )
        if summary.get("reason") and status != "succeeded":
            out.write(f"batchinfer: {summary['reason']}\n")
        if summary.get("first_error"):
            out.write(f"batchinfer: first error: {summary['first_error']}\n")
        if summary.get("output_file"):
            out.write(f"batchinfer: output: {summary['output_file']}\n")
        out.write(f"batchinfer: logs: {summary.get('log_dir')}")
        if summary.get("items_failed"):
            out.write(" (errors.jsonl lists each failed try, failed_items.txt the failed items)")
        out.write("\n")
        out.flush()
