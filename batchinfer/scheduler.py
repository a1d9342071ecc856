"""Backend-independent scheduling: dispatch, retries, thresholds, commits, logs and progress.

    InputPlan.mini_batches() --lazily--> Scheduler --submit--> Executor (local processes, or Ray)
                                          ^   |                   |
                                          |   +--<--poll(): [Outcome]
                                          |   |
                   journal (resume) ------+   +--> sink.commit(rows + journal line)
                                              +--> TryLog: logs/errors.jsonl, processed_mini_batches.csv
                                              +--> progress snapshots

The scheduler never touches processes: it asks the executor how many
mini-batches it takes now (backpressure), and receives one Outcome per try
(the contract is in ``executors/base.py``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from batchinfer.errors import InputError
from batchinfer.executors.base import Executor
from batchinfer.inputs import MiniBatch
from batchinfer.output import Journal, JournalEntry
from batchinfer.protocol import EXCEPTION, OUT_OF_MEMORY, SHORT_RETURN, WORKER_DIED, Outcome
from batchinfer.redact import for_log, redact_text
from batchinfer.spec import JobSpec
from batchinfer.trylog import TryLog

POLL_S = 0.2
ORDERED_WINDOW_PER_WORKER = 64  # ordered: at most this many uncommitted mini-batches per worker
GRACE_S = 5.0  # on Ctrl-C: how long in-flight mini-batches may finish and commit
# rows and journal lines are flushed when the loop goes idle or every FLUSH_S: not once per
# mini-batch, which costs two system calls each; a crash only loses unflushed (uncommitted) work
FLUSH_S = 0.02

log = logging.getLogger("batchinfer.scheduler")


class Sink(Protocol):
    """Where committed mini-batches go (rows + journal)."""

    def commit(self, entry: JournalEntry, rows: bytes, header: bytes | None) -> None: ...
    def flush(self) -> None: ...


@dataclass
class Progress:
    """A snapshot of the job, for the progress display and the summary."""

    items_total: int = 0  # items of all mini-batches listed so far (table slices once read)
    items_succeeded: int = 0
    items_failed: int = 0
    items_not_returned: int = 0  # part of items_failed: items of mini-batches whose run() returned fewer rows
    mini_batches_total: int = 0
    mini_batches_done: int = 0
    mini_batches_succeeded: int = 0
    mini_batches_failed: int = 0
    tries: int = 0
    listing_done: bool = False
    mini_batches_expected: int | None = None  # the best estimate of the total before listing_done (counting.py)
    total_estimated: bool = False  # mini_batches_expected is an estimate from table sizes, not a count
    busy_workers: int = 0
    resumed_mini_batches: int = 0
    first_error: str | None = None
    stop_reason: str | None = None
    items_this_run: int = 0  # items committed by this run (items_done counts earlier runs' too): its items/s

    @property
    def items_done(self) -> int:
        """Items finished, succeeded or failed."""
        return self.items_succeeded + self.items_failed

    def shown_total(self) -> tuple[int | None, bool]:
        """(the total to show, whether it is an estimate); None while nothing is known."""
        return shown_total(self.mini_batches_total, self.listing_done, self.mini_batches_expected,
                           self.total_estimated)


def shown_total(listed: int, listing_done: bool, expected: int | None, estimated: bool) -> tuple[int | None, bool]:
    """The total a display shows: the listed count once the listing is done, else the larger of
    the expected count and what is listed so far (None: nothing is known yet)."""
    if listing_done:
        return listed, False
    if expected is None:
        return None, False
    return max(expected, listed), estimated


Key = tuple[int, "tuple[int, int] | None"]
BISECTED_KINDS = (EXCEPTION, WORKER_DIED, OUT_OF_MEMORY)  # data problems; timeouts and wrong types are not bisected
TABLE_PIECES = 32  # a failing table slice is bisected down to 1/32 of its rows, not to single rows


@dataclass
class _Task:
    """One mini-batch (or part of one) to try, with its tries so far."""

    root: MiniBatch  # the mini-batch as listed
    batch: MiniBatch  # what is sent: the root itself, or a part of it
    max_tries: int
    tries: int = 0

    @property
    def key(self) -> Key:
        return self.batch.id, self.batch.part


@dataclass
class _Root:
    """A listed mini-batch until all of its parts are settled."""

    batch: MiniBatch
    items: int | None
    open_parts: int = 0
    failed: bool = False
    held: list = field(default_factory=list)  # ordered: settled parts waiting for their turn


def uncovered(entries: list[JournalEntry], items: int | None) -> list[tuple[int, int]] | None:
    """Item ranges of a mini-batch that its journal entries do not cover (None: all of it)."""
    if not entries:
        return None
    if any(e.part is None for e in entries) or items is None:
        return []
    gaps, position = [], 0
    for lo, hi in sorted(tuple(e.part) for e in entries if e.part):
        if lo > position:
            gaps.append((position, lo))
        position = max(position, hi)
    if position < items:
        gaps.append((position, items))
    return gaps


class Scheduler:
    """Runs every mini-batch of a job through an executor, at most ``run_max_try`` tries each.

    With ``isolate_failures``, a mini-batch that raised or killed its worker on its last
    try is cut in halves, each tried once and cut again while it fails, down to single
    files (or 1/32 of a table slice), so that only the failing items count as failed.
    """

    def __init__(
        self,
        spec: JobSpec,
        batches: Iterator[MiniBatch],
        executor: Executor,
        sink: Sink,
        try_log: TryLog,
        journal: Journal,
        on_progress: Callable[[Progress], None] = lambda p: None,
        retry_failed: bool = False,
        expected: Callable[[], tuple[int | None, bool]] = lambda: (None, False),
    ) -> None:
        self.spec = spec
        self.batches = batches
        self.executor = executor
        self.sink = sink
        self.try_log = try_log
        self.journal = journal  # the live journal, appended to by sink.commit
        self.on_progress = on_progress
        self.retry_failed = retry_failed
        self.expected = expected  # the counter's estimate of the total (counting.Counter.expected)
        self.isolate = spec.isolate_failures and not retry_failed
        self.progress = Progress()
        self.ready: deque[_Task] = deque()  # retries and parts, dispatched before new mini-batches
        self.in_flight: dict[Key, _Task] = {}
        self.roots: dict[int, _Root] = {}
        self.order: deque[int] = deque()  # ordered: mini-batch ids not yet committed, in input order
        self.unknown_items = 0  # listed mini-batches whose item count is not known yet
        self.stop_requested = 0  # 1: stop gracefully, 2: stop now
        self._stopping_since: float | None = None
        self._flushed = time.monotonic()
        self.by_id: dict[int, list[JournalEntry]] = {}  # failed or partial mini-batches of earlier runs
        for entry in journal.entries.values():
            self.by_id.setdefault(entry.id, []).append(entry)
        p = self.progress
        counts = journal.counts()
        p.items_succeeded, p.items_failed = counts["items_succeeded"], counts["items_failed"]
        p.items_not_returned = short_items(journal)
        p.tries = journal.plain["tries"] + sum(e.tries for e in journal.entries.values())
        if retry_failed:
            self._queue_failed()

    # ------------------------------------------------------------- counting

    def _count_entry(self, entry: JournalEntry, sign: int) -> None:
        p = self.progress
        p.items_succeeded += sign * entry.succeeded
        p.items_failed += sign * entry.failed
        if entry.ok:  # run() returned, with fewer rows than items: a short return, not a failed try
            p.items_not_returned += sign * entry.failed

    def _count_root(self, failed: bool) -> None:
        p = self.progress
        p.mini_batches_done += 1
        p.mini_batches_succeeded += not failed
        p.mini_batches_failed += failed

    def _learn_items(self, root: _Root, items: int) -> None:
        if root.items is None:
            root.items = items
            self.progress.items_total += items
            self.unknown_items -= 1

    # ------------------------------------------------------------- main loop

    def run(self) -> Progress:
        """Dispatch, collect and commit until done, stopped by a threshold, or interrupted."""
        p = self.progress
        self._check_thresholds()  # a resumed job may be over a threshold already
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
                if p.listing_done and not self.in_flight and not self.ready:
                    break
            outcomes = self.executor.poll(POLL_S)
            for outcome in outcomes:
                self._on_outcome(outcome)
            now = time.monotonic()
            if not outcomes or now - self._flushed >= FLUSH_S:
                self.sink.flush()  # output first, then journal: see output.py
                self._flushed = now
            self.try_log.flush(every=1.0)
            p.busy_workers = self.executor.busy
            if not p.listing_done:
                p.mini_batches_expected, p.total_estimated = self.expected()
            self.on_progress(p)
        self.sink.flush()
        p.busy_workers = 0
        self.on_progress(p)
        return p

    def _window_full(self) -> bool:
        limit = ORDERED_WINDOW_PER_WORKER * self.spec.worker_count
        return self.spec.ordered and len(self.order) >= limit

    def _dispatch(self) -> None:
        while self.executor.free_slots() > 0:
            if not self.ready and not self._list_next():
                return
            task = self.ready.popleft()
            task.tries += 1
            self.in_flight[task.key] = task
            self.executor.submit(task.batch)

    def _list_next(self) -> bool:
        """Take the next listed mini-batch (skipping what the journal has); False when none is ready."""
        p = self.progress
        while not self.ready:
            if p.listing_done or self._window_full():
                return False
            batch = next(self.batches, None)
            if batch is None:
                p.listing_done = True
                self._check_thresholds()
                return False
            p.mini_batches_total += 1
            self._admit(batch)
        return True

    def _admit(self, batch: MiniBatch) -> None:
        """Queue a listed mini-batch, or what the journal says is left of it."""
        p = self.progress
        if not self.journal.done and not self.by_id:  # a fresh job: nothing to look up
            self._queue(batch, [], batch.known_items, None)
            return
        done = self.journal.done.get(batch.id)
        if done is not None:  # scored whole in an earlier run
            if done[0] != batch.digest:
                self._inputs_changed(batch)
            p.resumed_mini_batches += 1
            p.items_total += done[1]
            self._count_root(failed=False)
            return
        entries = self.by_id.get(batch.id, [])
        if any(e.digest != batch.digest for e in entries):
            self._inputs_changed(batch)
        items = batch.known_items if batch.known_items is not None else next(
            (e.root_items for e in entries if e.root_items is not None), None
        )
        gaps = uncovered(entries, items)
        if gaps == []:  # settled in an earlier run
            p.resumed_mini_batches += 1
            p.items_total += sum(e.items for e in entries)
            self._count_root(failed=not all(e.ok for e in entries))
            return
        self._queue(batch, entries, items, gaps)

    def _inputs_changed(self, batch: MiniBatch) -> None:
        raise InputError(
            f"the inputs changed since this job started in this output folder "
            f"(mini-batch {batch.id}: {batch.item_labels()[0]})",
            hint="restore the inputs, or use --restart to start over",
        )

    def _queue(self, batch: MiniBatch, entries: list[JournalEntry], items: int | None,
               gaps: list[tuple[int, int]] | None) -> None:
        """Queue the whole mini-batch, or the parts of it that earlier runs left undone."""
        p = self.progress
        root = _Root(batch, items=None, failed=not all(e.ok for e in entries))
        self.roots[batch.id] = root
        self.unknown_items += 1
        if items is not None:
            self._learn_items(root, items)
        if self.spec.ordered:
            self.order.append(batch.id)
        if gaps is None:
            root.open_parts = 1
            self.ready.append(_Task(batch, batch, self.spec.run_max_try))
        else:  # a bisection was under way when the job stopped: finish the missing parts
            p.resumed_mini_batches += 1
            root.open_parts = len(gaps)
            self.ready.extend(_Task(batch, batch.sub(lo, hi), 1) for lo, hi in gaps)

    def _queue_failed(self) -> None:
        """--retry-failed: queue every failed mini-batch (or part) of the journal again.

        The journal names them by id only (nothing read back from disk is unpickled): the
        inputs are listed again, which gives the same ids for the same listing, and the labels
        the journal recorded for the failed items must be those of the items listed now, or the
        listing changed and the ids mean other items. Checked for all before any is run.
        """
        failed: dict[int, list[JournalEntry]] = {}
        for entry in self.journal.entries.values():
            if not entry.ok:
                failed.setdefault(entry.id, []).append(entry)
        for batch in (self.batches if failed else ()):
            entries = failed.pop(batch.id, None)
            for entry in entries or ():
                piece = batch
                if entry.part is not None:
                    if not batch.splittable():
                        self._listing_changed(batch.id, f"it cannot be cut into parts (part {entry.part})")
                    piece = batch.sub(*entry.part)
                now = [redact_text(label) for label in piece.item_labels()]
                then = [redact_text(label) for label in entry.failed_items]
                if now != then:
                    shown = next((f"{b}, not {a}" for a, b in zip(then, now) if a != b),
                                 f"{len(now)} items, not {len(then)}")
                    self._listing_changed(batch.id, f"it now holds {shown}")
                items = entry.root_items if entry.part is not None else entry.items  # known: not counted again
                root = self.roots.setdefault(batch.id, _Root(batch, items=items))
                root.open_parts += 1
                self.ready.append(_Task(batch, piece, self.spec.run_max_try))
            if not failed:
                break
        if failed:
            batch_id, entries = next(iter(failed.items()))
            self._listing_changed(batch_id, f"it is no longer listed ({entries[0].failed_items[0]})")
        # the total is the whole job's (every mini-batch is in the journal: --retry-failed needs a
        # finished job); those not retried are done, so the bar starts at, e.g., 18/20 and ends at 20/20
        counts = self.journal.counts()
        p = self.progress
        p.listing_done = True
        p.mini_batches_total = counts["mini_batches_succeeded"] + counts["mini_batches_failed"]
        p.mini_batches_done = p.mini_batches_total - len(self.roots)
        p.mini_batches_succeeded = counts["mini_batches_succeeded"]
        p.mini_batches_failed = max(0, counts["mini_batches_failed"] - len(self.roots))
        p.items_total = counts["items_succeeded"] + counts["items_failed"]

    def _listing_changed(self, batch_id: int, what: str) -> None:
        raise InputError(
            f"--retry-failed: the inputs are not listed as when the job ran (mini-batch {batch_id}: {what})",
            hint="restore the inputs that were added, removed or renamed, or use --restart to score them all again",
        )

    # ------------------------------------------------------------- outcomes

    def _on_outcome(self, outcome: Outcome) -> None:
        p = self.progress
        task = self.in_flight.pop((outcome.batch_id, outcome.part), None)
        if task is None:
            return  # a late result for something already settled
        p.tries += 1
        self.try_log.record(outcome, task.tries, task.batch)
        root = self.roots[task.root.id]
        if outcome.items is not None and task.batch.part is None:
            self._learn_items(root, outcome.items)
        if outcome.kind and p.first_error is None:
            p.first_error = for_log(f"mini-batch {outcome.batch_id}: {outcome.message}")
        if not outcome.ok:
            if self.stop_requested or p.stop_reason:
                return  # left uncommitted: a resumed run tries it again
            if task.tries < task.max_tries:
                log.warning("mini-batch %d try %d failed (%s); retrying", outcome.batch_id, task.tries, outcome.kind)
                self.ready.append(task)
                return
            if self._bisect(task, root, outcome):
                return
        self._settle(task, root, outcome)

    def _bisect(self, task: _Task, root: _Root, outcome: Outcome) -> bool:
        """Cut a failed mini-batch (or part) in halves to isolate the failing items."""
        if not self.isolate or outcome.kind not in BISECTED_KINDS or not task.root.splittable():
            return False
        lo, hi = task.batch.part or (0, root.items or 0)
        smallest = 1 if task.root.table is None else max(1, -(-(root.items or 0) // TABLE_PIECES))
        if hi - lo <= smallest:
            return False
        middle = (lo + hi) // 2
        log.warning("mini-batch %d items %d-%d failed; trying each half alone", task.root.id, lo, hi)
        root.open_parts += 1  # one part becomes two
        self.ready.extend(_Task(task.root, task.root.sub(a, b), 1) for a, b in ((lo, middle), (middle, hi)))
        return True

    def _settle(self, task: _Task, root: _Root, outcome: Outcome) -> None:
        """The mini-batch (or part) is final: commit it now, or when its turn comes (ordered)."""
        batch = task.batch
        items = outcome.items if outcome.items is not None else (batch.known_items or 1)
        if root.items is None and batch.part is None:
            self._learn_items(root, items)
        succeeded = outcome.succeeded if outcome.ok else 0
        entry = JournalEntry(
            id=batch.id,
            part=list(batch.part) if batch.part else None,
            digest=task.root.digest,
            root_items=root.items,
            end=0,
            items=items,
            succeeded=succeeded,
            failed=items - succeeded,
            tries=task.tries,
            ok=outcome.ok,
            kind=outcome.kind,
            failed_items=[] if outcome.ok else [redact_text(label) for label in batch.item_labels()],
        )
        if outcome.kind == SHORT_RETURN:
            log.warning("mini-batch %d: %s", batch.id, outcome.message)
        elif not outcome.ok:
            log.error("mini-batch %d%s failed after %d tries: %s", batch.id,
                      f" items {batch.part[0]}-{batch.part[1]}" if batch.part else "", task.tries, outcome.message)
        rows = outcome.rows if outcome.ok else b""
        root.open_parts -= 1
        root.failed |= not outcome.ok
        if not self.spec.ordered or self.retry_failed:
            self._commit(entry, rows, outcome.header)
        else:
            root.held.append((batch.part or (0, 0), entry, rows, outcome.header))
            while self.order and self.roots[self.order[0]].open_parts == 0:
                ready_root = self.roots[self.order.popleft()]
                for _, held_entry, held_rows, header in sorted(ready_root.held, key=lambda h: h[0]):
                    self._commit(held_entry, held_rows, header)
                self._finish_root(ready_root)
            return
        if root.open_parts == 0:
            self._finish_root(root)

    def _finish_root(self, root: _Root) -> None:
        del self.roots[root.batch.id]
        self._count_root(root.failed)

    def _commit(self, entry: JournalEntry, rows: bytes, header: bytes | None) -> None:
        if self.progress.stop_reason:
            return  # over a threshold: no more rows in
        previous = self.journal.entries.get(entry.key)
        self.sink.commit(entry, rows, header)
        if previous is not None:  # --retry-failed replaces the failed entry
            self._count_entry(previous, -1)
        self._count_entry(entry, +1)
        self.progress.items_this_run += entry.succeeded + entry.failed
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

    def complete(self) -> bool:
        """Every mini-batch was listed and settled: running the job again would add nothing."""
        return self.progress.listing_done and not self.roots and not self.stop_requested

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
        if p.items_total and not p.items_succeeded and not any_returned(self.journal):
            # the safety net, whatever the thresholds: every final try raised, timed out, lost its worker
            # or returned the wrong type. A run() that returned (even []) is judged by the thresholds alone.
            return "failed", NOTHING_SUCCEEDED
        return "succeeded", None


NOTHING_SUCCEEDED = (
    "no item succeeded: every mini-batch failed (run() raised, timed out, lost its worker or returned the wrong type)"
)


def any_returned(journal: Journal) -> bool:
    """Whether some mini-batch (or part) of the job settled with run() returning, even an empty list."""
    return journal.plain["count"] > 0 or any(e.ok for e in journal.entries.values())


def short_items(journal: Journal) -> int:
    """Items counted as failed because run() returned fewer rows than items (not because a try failed)."""
    return journal.plain["failed"] + sum(e.failed for e in journal.entries.values() if e.ok)


def returns_note(items_total: int, items_succeeded: int, items_not_returned: int) -> str | None:
    """The summary's plain words on short returns (None when run() returned a row for every item it was given)."""
    if not items_not_returned:
        return None
    if not items_succeeded:
        return (f"run() returned no rows: none of the {items_total} items was returned, so all count as failed; "
                "the job is judged by its thresholds (error_threshold, allowed_failed_percent) alone")
    return (f"run() returned fewer rows than items: {items_not_returned} of {items_total} items were not "
            "returned and count as failed (short_return in logs/errors.jsonl)")


def summary_of(
    progress: Progress, counts: dict[str, int], status: str, reason: str | None, elapsed: float, extra: dict[str, Any]
) -> dict[str, Any]:
    """The summary.json document; ``counts`` are the exact ones, from the journal."""
    done = counts["items_succeeded"] + counts["items_failed"]
    items_total = max(progress.items_total, done)
    return {
        "status": status,
        "reason": for_log(reason) if reason else None,
        "items_total": items_total,
        "items_succeeded": counts["items_succeeded"],
        "items_failed": counts["items_failed"],
        "items_not_returned": progress.items_not_returned,
        "note": returns_note(items_total, counts["items_succeeded"], progress.items_not_returned),
        "mini_batches_total": max(progress.mini_batches_total, counts["mini_batches_succeeded"] + counts["mini_batches_failed"]),
        "mini_batches_succeeded": counts["mini_batches_succeeded"],
        "mini_batches_failed": counts["mini_batches_failed"],
        "mini_batches_resumed": progress.resumed_mini_batches,
        "tries": progress.tries,
        "elapsed_s": round(elapsed, 3),
        "items_per_s": round(progress.items_this_run / elapsed, 1) if elapsed > 0 else None,  # this run's
        "first_error": for_log(progress.first_error) if progress.first_error else None,
        **extra,
    }
