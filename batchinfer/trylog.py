"""What every try leaves in ``logs/``: ``errors.jsonl`` (one record per failed try),
``processed_mini_batches.csv`` (one row per try) and ``slowest_tries.json`` (the ten slowest tries
with their item labels, for the report).

The scheduler calls :meth:`TryLog.record` once per try, at up to tens of thousands of tries a second:
keeping the slowest ten costs one comparison with the tenth slowest per try.
"""

from __future__ import annotations

import csv
import heapq
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from batchinfer.inputs import MiniBatch
from batchinfer.output import open_own_file, write_text_atomic
from batchinfer.protocol import Outcome
from batchinfer.redact import json_safe

ERRORS_FILE = "errors.jsonl"  # one record per failed try
TRIES_FILE = "processed_mini_batches.csv"  # one row per try
SLOWEST_FILE = "slowest_tries.json"
SLOWEST_KEPT = 10
SLOWEST_ITEMS = 50  # item labels kept per slow try (a mini-batch of 10,000 files would bloat the file)


def append_file(path: Path) -> Any:
    """A log file opened to append text, refused if something other than a file stands at its name."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    return os.fdopen(open_own_file(path, flags, private=False), "a", newline="", encoding="utf-8")


def read_slowest(path: Path) -> list[dict[str, Any]]:
    """The records of a ``slowest_tries.json`` (raises OSError or ValueError when it cannot be read)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    records = data["slowest"] if isinstance(data, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) and isinstance(r.get("seconds"), (int, float))
                                                for r in records):
        raise ValueError(f"{path.name} does not hold a list of tries")
    return records


class TryLog:
    """``logs/errors.jsonl``, ``logs/processed_mini_batches.csv`` and ``logs/slowest_tries.json``."""

    COLUMNS: ClassVar[list[str]] = ["id", "part", "try", "worker", "start", "seconds", "items", "succeeded", "failed", "status"]

    def __init__(self, log_dir: Path) -> None:
        self.errors = append_file(log_dir / ERRORS_FILE)
        new = not (log_dir / TRIES_FILE).exists()
        self._tries_file = append_file(log_dir / TRIES_FILE)
        self.tries = csv.writer(self._tries_file)
        self._flushed = time.monotonic()
        self._second = -1
        self._prefix = ""
        if new:
            self.tries.writerow(self.COLUMNS)
        self._slowest_path = log_dir / SLOWEST_FILE
        self._slowest: list[tuple[float, int, dict[str, Any]]] = []  # a min-heap: the tenth slowest first
        self._seq = 0
        self._slowest_changed = False
        try:  # a resumed job: the slowest of the earlier runs still count
            for record in read_slowest(self._slowest_path):
                self._keep(float(record["seconds"]), record)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # absent (a fresh job) or damaged: start again from this run's tries
        self._slowest_changed = False

    def record(self, outcome: Outcome, try_number: int, batch: MiniBatch) -> None:
        """Log one try; failed (and short) tries also go to errors.jsonl."""
        items = outcome.items if outcome.items is not None else batch.known_items
        failed = (items or 0) - outcome.succeeded if outcome.ok else items
        status = "ok" if outcome.ok and not outcome.kind else (outcome.kind or "failed")
        start = self._iso(outcome.started)
        part = f"{batch.part[0]}-{batch.part[1]}" if batch.part else ""
        self.tries.writerow(
            [outcome.batch_id, part, try_number, outcome.worker, start, f"{outcome.seconds:.3f}", items,
             outcome.succeeded, failed, status]
        )
        if len(self._slowest) < SLOWEST_KEPT or outcome.seconds > self._slowest[0][0]:
            self._keep(outcome.seconds, {
                "mini_batch": outcome.batch_id, "part": part, "try": try_number, "worker": outcome.worker,
                "start": start, "seconds": round(outcome.seconds, 3), "status": status,
                "items": [json_safe(label) for label in batch.item_labels()[:SLOWEST_ITEMS]],
            })
        if outcome.kind:
            record = {
                "time": start,
                "mini_batch": outcome.batch_id,
                "part": list(batch.part) if batch.part else None,
                "items": [json_safe(label) for label in batch.item_labels()],
                "try": try_number,
                "worker": outcome.worker,
                "kind": outcome.kind,
                "message": json_safe(outcome.message),
                "traceback": json_safe(outcome.traceback),
            }
            self.errors.write(json.dumps(record) + "\n")
            self.errors.flush()

    def _keep(self, seconds: float, record: dict[str, Any]) -> None:
        self._seq += 1
        entry = (seconds, self._seq, record)
        if len(self._slowest) < SLOWEST_KEPT:
            heapq.heappush(self._slowest, entry)
        else:
            heapq.heapreplace(self._slowest, entry)
        self._slowest_changed = True

    def _write_slowest(self) -> None:
        if self._slowest_changed:
            records = [r for _, _, r in sorted(self._slowest, key=lambda e: (-e[0], e[1]))]
            write_text_atomic(self._slowest_path, json.dumps({"slowest": records}, indent=1) + "\n")
            self._slowest_changed = False

    def _iso(self, timestamp: float) -> str:
        """ISO 8601 UTC with milliseconds; the seconds part is formatted once per second (hot path)."""
        second = int(timestamp)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((timestamp - second) * 1000):03d}+00:00"

    def flush(self, every: float = 0.0) -> None:
        """Flush processed_mini_batches.csv and rewrite slowest_tries.json if it changed (at most once per ``every`` seconds)."""
        now = time.monotonic()
        if now - self._flushed >= every:
            self._tries_file.flush()
            self._write_slowest()
            self._flushed = now

    def close(self) -> None:
        """Flush and close the files (slowest_tries.json written a last time)."""
        self.errors.close()
        self._tries_file.close()
        self._write_slowest()
