"""Backend-independent scheduling: dispatch, retries, thresholds, commits, logs and progress.

    InputPlan.mini_batches() --lazily--> Scheduler --submit--> Executor (local processes, or Ray)
                                          ^   |                   |
                                          |   +--<--poll(): [Outcome]
                                          |   |
                   journal (resume) ------+   +--> sink.commit(rows + journal line)
                                              +--> logs/errors.jsonl, processed_mini_batches.csv
                                              +--> progress snapshots

The scheduler never touches processes: it asks the executor how many
mini-batches it takes now (backpressure), and receives one Outcome per try.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from batchinfer.inputs import MiniBatch
from batchinfer.output import JournalEntry
from batchinfer.protocol import SHORT_RETURN, Outcome
from batchinfer.spec import JobSpec

POLL_S = 0.2
ORDERED_WINDOW_PER_WORKER = 64  # ordered: at most this many uncommitted mini-batches per worker
GRACE_S = 5.0  # on Ctrl-C: how long in-flight mini-batches may finish and commit

log = logging.getLogger("batchinfer.scheduler")


class Executor(Protocol):
    """What the scheduler needs from a backend."""

    def free_slots(self) -> int: ...
    def submit(self, batch: MiniBatch) -> None: ...
    def poll(self, timeout: float) -> list[Outcome]: ...

    @property
    def busy(self) -> int: ...


class Sink(Protocol):
    """Where committed mini-batches go (rows + journal)."""

    def commit(self, entry: JournalEntry, rows: bytes, header: bytes | None) -> None: ...


@dataclass
class Progress:
    """A snapshot of the job, for the progress display and the summary."""

    items_total: int = 0  # items of all mini-batches listed so far (table slices once read)
    items_succeeded: int = 0
    items_failed: int = 0
    mini_batches_total: int = 0
    mini_batches_done: int = 0
    mini_batches_succeeded: int = 0
    mini_batches_failed: int = 0
    tries: int = 0
    listing_done: bool = False
    busy_workers: int = 0
    resumed_mini_batches: int = 0
    first_error: str | None = None
    stop_reason: str | None = None

    @property
    def items_done(self) -> int:
        """Items finished, succeeded or failed."""
        return self.items_succeeded + self.items_failed


@dataclass
class _Pending:
    batch: MiniBatch
    tries: int = 0
    errors: list[str] = field(default_factory=list)


class TryLog:
    """``logs/errors.jsonl`` (one record per failed try) and ``logs/processed_mini_batches.csv`` (one row per try)."""

    COLUMNS = ["id", "try", "worker", "start", "seconds", "items", "succeeded", "failed", "status"]

    def __init__(self, log_dir: Path) -> None:
        self.errors = open(log_dir / "errors.jsonl", "a", encoding="utf-8")
        new = not (log_dir / "processed_mini_batches.csv").exists()
        self._tries_file = open(log_dir / "processed_mini_batches.csv", "a", newline="", encoding="utf-8")
        self.tries = csv.writer(self._tries_file)
        if new:
            self.tries.writerow(self.COLUMNS)

    def record(self, outcome: Outcome, pending: _Pending) -> None:
        """Log one try; failed (and short) tries also go to errors.jsonl."""
        items = outcome.items if outcome.items is not None else pending.batch.known_items
        failed = (items or 0) - outcome.succeeded if outcome.ok else items
        status = "ok" if outcome.ok and not outcome.kind else (outcome.kind or "failed")
        start = datetime.fromtimestamp(outcome.started, timezone.utc).isoformat(timespec="milliseconds")
        self.tries.writerow(
            [outcome.batch_id, pending.tries, outcome.worker, start, f"{outcome.seconds:.3f}", items,
             outcome.succeeded, failed, status]
        )
        if outcome.kind:
            record = {
                "time": start,
                "mini_batch": outcome.batch_id,
                "items": pending.batch.item_labels(),
                "try": pending.tries,
                "worker": outcome.worker,
                "kind": outcome.kind,
                "message": outcome.message,
                "traceback": outcome.traceback,
            }
            self.errors.write(json.dumps(record) + "\n")
            self.errors.flush()

    def close(self) -> None:
        """Flush and close both files."""
        self.errors.close()
        self._tries_file.close()


class Scheduler:
    """Runs every mini-batch of a job through an executor, at most ``run_max_try`` tries each."""

    def __init__(
        self,
        spec: JobSpec,
        batches: Iterator[MiniBatch],
        executor: Executor,
        sink: Sink,
        try_log: TryLog,
        committed: dict[int, JournalEntry],
        on_progress: Callable[[Progress], None] = lambda p: None,
    ) -> None:
        self.spec = spec
        self.batches = batches
        self.executor = executor
        self.sink = sink
        self.try_log = try_log
        self.committed = committed
        self.on_progress = on_progress
        self.progress = Progress()
        self.retry: deque[_Pending] = deque()
        self.in_flight: dict[int, _Pending] = {}
        self.order: deque[int] = deque()  # ordered: dispatched ids not yet committed, in input order
        self.held: dict[int, tuple[JournalEntry, bytes, bytes | None]] = {}
        self.unknown_items = 0  # listed mini-batches whose item count is not known yet
        self.stop_requested = 0  # 1: stop gracefully, 2: stop now
        self._stopping_since: float | None = None
        self._count_resumed()

    def _count_resumed(self) -> None:
        p = self.progress
        for entry in self.committed.values():
            p.resumed_mini_batches += 1
            p.tries += entry.tries
            self._count(entry)

    def _count(self, entry: JournalEntry) -> None:
        p = self.progress
        p.items_succeeded += entry.succeeded
        p.items_failed += entry.failed
        p.mini_batches_done += 1
        p.mini_batches_succeeded += entry.ok
        p.mini_batches_failed += not entry.ok

    # ------------------------------------------------------------- main loop

    def run(self) -> Progress:
        """Dispatch, collect and commit until done, stopped by a threshold, or interrupted."""
        p = self.progress
        while True:
            if p.stop_reason:
                break  # a threshold was exceeded: let no more rows in
            if self.stop_requested:
                self._stopping_since = self._stopping_since or time.monotonic()
                waited = time.monotonic() - self._stopping_since
                if not self.in_flight or self.stop_requested > 1 or waited > GRACE_S:
                    break
            else:
                self._dispatch()
                if p.listing_done and not self.in_flight and not self.retry:
                    break
            for outcome in self.executor.poll(POLL_S):
                self._on_outcome(outcome)
            p.busy_workers = self.executor.busy
            self.on_progress(p)
        p.busy_workers = 0
        self.on_progress(p)
        return p

    def _window_full(self) -> bool:
        limit = ORDERED_WINDOW_PER_WORKER * self.spec.worker_count
        return self.spec.ordered and len(self.order) >= limit

    def _dispatch(self) -> None:
        p = self.progress
        while self.executor.free_slots() > 0:
            if self.retry:
                pending = self.retry.popleft()
            elif p.listing_done or self._window_full():
                return
            else:
                batch = next(self.batches, None)
                if batch is None:
                    p.listing_done = True
                    self._check_thresholds()
                    return
                p.mini_batches_total += 1
                if batch.id in self.committed:  # resumed: counted from the journal already
                    p.items_total += self.committed[batch.id].items
                    continue
                if batch.known_items is None:
                    self.unknown_items += 1
                else:
                    p.items_total += batch.known_items
                pending = _Pending(batch)
                if self.spec.ordered:
                    self.order.append(batch.id)
            pending.tries += 1
            self.in_flight[pending.batch.id] = pending
            self.executor.submit(pending.batch)

    # ------------------------------------------------------------- outcomes

    def _on_outcome(self, outcome: Outcome) -> None:
        p = self.progress
        pending = self.in_flight.pop(outcome.batch_id, None)
        if pending is None:
            return  # a late result for a mini-batch already settled
        p.tries += 1
        self.try_log.record(outcome, pending)
        if outcome.kind and p.first_error is None:
            p.first_error = f"mini-batch {outcome.batch_id}: {outcome.message}"
        if not outcome.ok:
            pending.errors.append(outcome.message)
            if pending.tries < self.spec.run_max_try and not self.stop_requested and not p.stop_reason:
                log.warning("mini-batch %d try %d failed (%s); retrying", outcome.batch_id, pending.tries, outcome.kind)
                self.retry.append(pending)
                return
        self._settle(pending, outcome)

    def _settle(self, pending: _Pending, outcome: Outcome) -> None:
        """The mini-batch is final: count it and commit it (now, or in input order)."""
        batch = pending.batch
        items = outcome.items if outcome.items is not None else (batch.known_items or 1)
        if batch.known_items is None:
            self.unknown_items -= 1
            self.progress.items_total += items
        succeeded = outcome.succeeded if outcome.ok else 0
        entry = JournalEntry(
            id=batch.id,
            end=0,
            items=items,
            succeeded=succeeded,
            failed=items - succeeded,
            tries=pending.tries,
            ok=outcome.ok,
            failed_items=[] if outcome.ok else batch.item_labels(),
        )
        if outcome.ok and outcome.kind == SHORT_RETURN:
            log.warning("mini-batch %d: %s", batch.id, outcome.message)
        if not outcome.ok:
            log.error("mini-batch %d failed after %d tries: %s", batch.id, pending.tries, outcome.message)
        rows = outcome.rows if outcome.ok else b""
        if self.spec.ordered:
            self.held[batch.id] = (entry, rows, outcome.header)
            while self.order and self.order[0] in self.held:
                self._commit(*self.held.pop(self.order.popleft()))
        else:
            self._commit(entry, rows, outcome.header)

    def _commit(self, entry: JournalEntry, rows: bytes, header: bytes | None) -> None:
        if self.progress.stop_reason:
            return  # over a threshold: no more rows in
        self.sink.commit(entry, rows, header)
        self._count(entry)
        self._check_thresholds()

    def _check_thresholds(self) -> None:
        p, spec = self.progress, self.spec
        if p.stop_reason:
            return
        if spec.error_threshold >= 0 and p.items_failed > spec.error_threshold:
            p.stop_reason = f"{p.items_failed} items failed, more than error_threshold ({spec.error_threshold})"
        elif spec.allowed_failed_count >= 0 and p.mini_batches_failed > spec.allowed_failed_count:
            p.stop_reason = (
                f"{p.mini_batches_failed} mini-batches failed, more than allowed_failed_count "
                f"({spec.allowed_failed_count})"
            )
        elif p.listing_done and not self.unknown_items and p.items_total:
            share = 100.0 * p.items_failed / p.items_total
            if share > spec.allowed_failed_percent:
                p.stop_reason = (
                    f"{share:.1f}% of items failed, more than allowed_failed_percent "
                    f"({spec.allowed_failed_percent:g}%)"
                )
        if p.stop_reason:
            log.error("stopping: %s", p.stop_reason)

    def final_status(self) -> tuple[str, str | None]:
        """(status, reason) once :meth:`run` returned: succeeded, failed or interrupted."""
        p = self.progress
        if p.stop_reason:
            return "failed", p.stop_reason
        if self.stop_requested:
            return "interrupted", "stopped by a signal before the end"
        self._check_thresholds()  # allowed_failed_percent, now that every count is known
        if p.stop_reason:
            return "failed", p.stop_reason
        if p.items_total and not p.items_succeeded:
            return "failed", "no item succeeded"
        return "succeeded", None


def summary_of(progress: Progress, status: str, reason: str | None, elapsed: float, extra: dict[str, Any]) -> dict[str, Any]:
    """The summary.json document."""
    return {
        "status": status,
        "reason": reason,
        "items_total": progress.items_total,
        "items_succeeded": progress.items_succeeded,
        "items_failed": progress.items_failed,
        "mini_batches_total": progress.mini_batches_total,
        "mini_batches_succeeded": progress.mini_batches_succeeded,
        "mini_batches_failed": progress.mini_batches_failed,
        "mini_batches_resumed": progress.resumed_mini_batches,
        "tries": progress.tries,
        "elapsed_s": round(elapsed, 3),
        "items_per_s": round(progress.items_done / elapsed, 1) if elapsed > 0 else None,
        "first_error": progress.first_error,
        **extra,
    }
