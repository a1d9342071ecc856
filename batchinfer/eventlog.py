"""``logs/events.jsonl``: what happened to a job's runs and workers, one JSON object a line, for the report.

``{"time": ISO 8601 UTC with ms, "event": ...}`` with ``run_started`` (run, pid, workers, backend,
resumed: mini-batches already in the journal), ``worker_ready`` (run, worker, pid, node, init_s,
rss_mb) and ``run_ended`` (run, status, reason, elapsed_s). Append-only, flushed per line; a run
killed before its end has no ``run_ended``.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batchinfer.output import open_own_file
from batchinfer.redact import for_log

EVENTS_FILE = "events.jsonl"


def iso_ms(timestamp: float) -> str:
    """ISO 8601 UTC with milliseconds."""
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")


def _runs_so_far(path: Path) -> int:
    try:
        with open(path, "rb") as lines:
            return sum(b'"event": "run_started"' in line for line in lines)
    except OSError:
        return 0


class EventLog:
    """The events of one run, appended to ``<log_dir>/events.jsonl``; this run's number is one more
    than the runs already recorded there."""

    def __init__(self, log_dir: Path) -> None:
        path = log_dir / EVENTS_FILE
        self.run = _runs_so_far(path) + 1
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._file = os.fdopen(open_own_file(path, flags, private=False), "a", encoding="utf-8")

    def _write(self, event: str, **fields: Any) -> None:
        if self._file.closed:
            return
        self._file.write(json.dumps({"time": iso_ms(time.time()), "event": event, "run": self.run, **fields}) + "\n")
        self._file.flush()

    def run_started(self, workers: int, backend: str, resumed: int) -> None:
        """This run began dispatching: ``resumed`` mini-batches (or parts) were already in the journal."""
        self._write("run_started", pid=os.getpid(), workers=workers, backend=backend, resumed=resumed)

    def worker_ready(self, worker: int, pid: int, init_s: float, rss_mb: float | None, node: str | None = None) -> None:
        """A worker finished ``init()``."""
        self._write("worker_ready", worker=worker, pid=pid, node=node, init_s=round(init_s, 3),
                    rss_mb=None if rss_mb is None else round(rss_mb, 1))

    def run_ended(self, status: str, reason: str | None, elapsed_s: float) -> None:
        """This run ended (succeeded, failed or interrupted), then closes the file."""
        self._write("run_ended", status=status, reason=for_log(reason) if reason else None,
                    elapsed_s=round(elapsed_s, 3))
        self.close()

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._file.close()
