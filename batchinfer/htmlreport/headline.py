"""The runs of a job (``logs/events.jsonl``) and the page's headline (its state, as ``batchinfer status``
reads it), for the report's reader.

Elapsed time and items/s cover every run of the job: the sum of the runs' durations (as each run
recorded it, else from its tries), over all items done; a resumed job's summary.json counts only its
last run's. A running or stopped job's total is what ``status`` shows (``scheduler.shown_total``): the
count once listing is done, else the counter's estimate.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batchinfer.errors import OutputError, one_line
from batchinfer.eventlog import EVENTS_FILE
from batchinfer.htmlreport.model import Headline, Run, Tries, WorkerStart
from batchinfer.layout import STATE_DIR, SUMMARY_FILE
from batchinfer.scheduler import shown_total
from batchinfer.statefiles import JOB_FILE, read_json

FINISHED = ("succeeded", "failed", "interrupted")
SKEW_S = 0.5  # tries starting this much before the first recorded run are an earlier, unrecorded run's


def first_start(events: list[dict[str, Any]], starts: list[float]) -> float | None:
    """The job's t0 (epoch seconds): its first recorded run's start, or its first try's when that came
    clearly before (tries of an older batchinfer's runs, resumed since); None when nothing is recorded."""
    first_run = next((e["_t"] for e in events if e["event"] == "run_started"), None)
    first_try = starts[0] if starts else None
    if first_run is None or first_try is None:
        return first_run if first_try is None else first_try
    return first_try if first_try < first_run - SKEW_S else first_run


def read_events(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """events.jsonl's objects, each with ``_t`` (epoch seconds); damaged lines skipped, with a note."""
    events, bad = [], 0
    try:
        with open(path, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    event = json.loads(line)
                    event["_t"] = datetime.fromisoformat(event["time"]).timestamp()
                    if not isinstance(event.get("event"), str):
                        raise TypeError("no event name")
                except (ValueError, KeyError, TypeError):
                    bad += line.endswith("\n")  # a half-written last line is no damage
                    continue
                events.append(event)
    except FileNotFoundError:
        notes.append(f"logs/{EVENTS_FILE} is absent: runs and worker starts were not recorded "
                     "(a job run by an older batchinfer)")
    except OSError as exc:
        notes.append(f"logs/{EVENTS_FILE} could not be read ({exc.strerror})")
    if bad:
        notes.append(f"logs/{EVENTS_FILE}: {bad} damaged lines skipped")
    return events


def runs_and_workers(events: list[dict[str, Any]], t0: float, tries: Tries
                     ) -> tuple[list[Run], list[WorkerStart], dict[int, float]]:
    """The runs (with one "not recorded" run first for tries older than the first recorded run: a folder
    of an older batchinfer, resumed), the worker starts, and each run's own elapsed_s where it recorded one."""
    runs: dict[int, Run] = {}
    workers: list[WorkerStart] = []
    elapsed: dict[int, float] = {}
    for e in events:
        number = int_or_none(e.get("run")) or len(runs) or 1
        if e["event"] == "run_started":
            runs[number] = Run(number, round(e["_t"] - t0, 3), None, None, int_or_none(e.get("workers")),
                               e.get("backend") if isinstance(e.get("backend"), str) else None)
        elif e["event"] == "run_ended" and number in runs:
            runs[number].end = round(e["_t"] - t0, 3)
            runs[number].status = e.get("status") if isinstance(e.get("status"), str) else None
            if (seconds := number_or_none(e.get("elapsed_s"))) is not None:
                elapsed[number] = seconds
        elif e["event"] == "worker_ready":
            init_s = number_or_none(e.get("init_s")) or 0.0
            node = e.get("node")
            workers.append(WorkerStart(number, int_or_none(e.get("worker")) or 0, int_or_none(e.get("pid")),
                                       str(node) if node is not None else None, round(e["_t"] - t0, 3), init_s,
                                       number_or_none(e.get("rss_mb"))))
    ordered = sorted(runs.values(), key=lambda r: r.number)
    if ordered and len(tries) and tries.start[0] < ordered[0].start - SKEW_S:
        before = [s + d for s, d in zip(tries.start, tries.seconds) if s < ordered[0].start]
        for run in ordered:  # the unrecorded run is the first: the recorded ones come after it
            run.number += 1
        for worker in workers:
            worker.run += 1
        elapsed = {number + 1: seconds for number, seconds in elapsed.items()}
        ordered.insert(0, Run(1, round(tries.start[0], 3), round(max(before), 3), None, recorded=False))
    return ordered, workers, elapsed


def run_seconds(runs: list[Run], recorded: dict[int, float], tries: Tries, running: bool, now: float) -> float:
    """The sum of the runs' durations: each run's recorded elapsed_s, else from its end, else (killed) to
    its last try's end, or (the last run of a running job) to ``now`` (seconds since t0)."""
    total = 0.0
    for i, run in enumerate(runs):
        if run.number in recorded:
            total += recorded[run.number]
        elif run.end is not None:
            total += max(0.0, run.end - run.start)
        elif running and i == len(runs) - 1:
            total += max(0.0, now - run.start)
        else:
            until = runs[i + 1].start if i + 1 < len(runs) else float("inf")
            ends = [s + d for s, d in zip(tries.start, tries.seconds) if run.start <= s < until]
            total += max(0.0, max(ends) - run.start) if ends else 0.0
    return total


def read_headline(folder: Path, tries: Tries, runs: list[Run], notes: list[str], status: dict[str, Any] | None,
                  run_elapsed: dict[int, float], t0: float) -> Headline:
    """The headline of the job in ``folder``: ``status`` is its state when known already (a remote
    folder's, from its lease), else read as ``batchinfer status`` does, else from summary.json."""
    from batchinfer.progress import read_status

    doc: dict[str, Any] = dict(status or {})
    if not doc and (folder / STATE_DIR / JOB_FILE).exists():
        try:
            doc = read_status(folder)
        except (OutputError, OSError, ValueError) as exc:
            notes.append(f"the job's state could not be read ({one_line(str(exc))})")
    summary_path = folder / SUMMARY_FILE
    if not doc:
        try:
            summary = read_json(summary_path)
            doc = {**summary, "state": summary.get("status")} if isinstance(summary, dict) else {}
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            notes.append(f"summary.json could not be read ({one_line(str(exc))})")
    elif (doc.get("state") == "stopped" and summary_path.exists() and "exit_code" not in doc
          and not _valid_json(summary_path)):
        notes.append("summary.json could not be read (damaged): the counts come from the recorded tries")
    state = doc.get("state") or "stopped"
    if state not in (*FINISHED, "running"):
        state = "stopped"
    succeeded = int_or_none(doc.get("items_succeeded"))
    if succeeded is None and len(tries):
        succeeded = sum(n for n, st in zip(tries.succeeded, tries.status) if st == "ok")
    failed = int_or_none(doc.get("items_failed"))
    done = int_or_none(doc.get("mini_batches_done"))
    if done is None and "mini_batches_succeeded" in doc:
        done = (int_or_none(doc.get("mini_batches_succeeded")) or 0) + (int_or_none(doc.get("mini_batches_failed")) or 0)
    total, items_total, estimated = _totals(doc, state)
    if runs:  # every run's duration, and every item of the job over them
        elapsed: float | None = round(run_seconds(runs, run_elapsed, tries, state == "running", time.time() - t0), 3)
        rate = round(((succeeded or 0) + (failed or 0)) / elapsed, 1) if elapsed else None
    else:  # no run recorded (an older batchinfer): what the summary or status says, else the tries' span
        elapsed = number_or_none(doc.get("elapsed_s"))
        if elapsed is None and len(tries):
            elapsed = max(s + d for s, d in zip(tries.start, tries.seconds)) - min(tries.start)
        rate = number_or_none(doc.get("items_per_s"))
        if rate is None and elapsed and succeeded is not None:
            rate = round(((succeeded or 0) + (failed or 0)) / elapsed, 1)
    recorded_tries = int_or_none(doc.get("tries")) if doc.get("tries") is not None else len(tries)
    if state == "stopped" and len(tries):
        recorded_tries = len(tries)  # a killed run's committed count lags its rows: the page draws the rows
    backend = next((r.backend for r in reversed(runs) if r.backend), None)
    return Headline(
        job=str(doc.get("job") or folder.name),
        state=state,
        items_total=items_total,
        items_succeeded=succeeded,
        items_failed=failed,
        mini_batches_total=total,
        mini_batches_done=done,
        tries=recorded_tries,
        elapsed_s=elapsed,
        items_per_s=rate,
        first_error=doc.get("first_error") if isinstance(doc.get("first_error"), str) else None,
        reason=(doc.get("reason") or doc.get("stop_reason") or doc.get("hint")) if state != "succeeded" else None,
        workers=int_or_none(doc.get("workers")),
        backend=backend,
        started_at=doc.get("started_at") if isinstance(doc.get("started_at"), str) else None,
        finished_at=doc.get("finished_at") if isinstance(doc.get("finished_at"), str) else None,
        output_dir=str(folder),
        snapshot_at=datetime.now(timezone.utc).isoformat(timespec="seconds") if state == "running" else None,
        total_estimated=estimated,
        elapsed_runs=max(1, len(runs)),
    )


def _totals(doc: dict[str, Any], state: str) -> tuple[int | None, int | None, bool]:
    """(mini-batches total, items total, whether the first is an estimate): a finished job's summary counts;
    a running or stopped job's as ``status`` shows them, the items total only once listing is done."""
    listed = int_or_none(doc.get("mini_batches_total"))
    listing_done = doc.get("listing_done")
    if state in FINISHED or not isinstance(listing_done, bool):
        return listed, int_or_none(doc.get("items_total")), False
    expected = int_or_none(doc.get("mini_batches_expected"))
    total, estimated = shown_total(listed or 0, listing_done, expected, doc.get("total_estimated") is True)
    return total, int_or_none(doc.get("items_total")) if listing_done else None, estimated


def _valid_json(path: Path) -> bool:
    try:
        read_json(path)
        return True
    except (OSError, ValueError):
        return False


def int_or_none(value: Any) -> int | None:
    """``value`` when it is a JSON integer, else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def number_or_none(value: Any) -> float | None:
    """``value`` as a float when it is a JSON number, else None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
