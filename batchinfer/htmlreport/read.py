"""Read a job's (or a pipeline's) output folder into the report model (``report/model.py``).

Every file is optional and may be damaged or half written (a running or killed job): what cannot be
read becomes a line of ``JobReport.notes``, never an exception. Only a folder that batchinfer did not
write is refused (:class:`OutputError`). Tries are read by column with the csv module, without one
object per try: 100,000 tries take a fraction of a second.
"""

from __future__ import annotations

import csv
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batchinfer.errors import OutputError, one_line
from batchinfer.eventlog import EVENTS_FILE, iso_ms
from batchinfer.layout import STATE_DIR, SUMMARY_FILE
from batchinfer.htmlreport.model import (
    FailureGroup,
    Headline,
    JobReport,
    PipelineReport,
    Run,
    SlowTry,
    StepReport,
    Tries,
    WorkerStart,
)
from batchinfer.statefiles import JOB_FILE, read_json, shown
from batchinfer.trylog import SLOWEST_FILE, SLOWEST_KEPT, read_slowest

TRIES_FILE = "processed_mini_batches.csv"
PIPELINE_FILE = "pipeline.json"
EXAMPLES = 5  # example items and mini-batch ids per failure group


def read_target(target: str | Path) -> JobReport | PipelineReport:
    """The report of the job or pipeline whose output folder is ``target``.

    Raises :class:`OutputError` (one line) when ``target`` is not an output folder batchinfer wrote.
    """
    if isinstance(target, str) and "://" in target:
        local = local_path(target)
        if local is None:
            from batchinfer.htmlreport.remote import read_remote

            return read_remote(target)
        target = local
    folder = Path(target).absolute()
    if (folder / PIPELINE_FILE).is_file():
        pipeline = _read_pipeline(folder)
        only = pipeline.steps[0] if len(pipeline.steps) == 1 else None
        if only is not None and only.report is not None and Path(only.folder) == folder:
            return only.report  # a parallel job run as a one-step pipeline: its folder is the job's
        return pipeline
    if not is_job_folder(folder):
        what = "does not exist" if not folder.exists() else "is not the output folder of a batchinfer job or pipeline"
        raise OutputError(f"{shown(folder)} {what}",
                          hint="give the folder `batchinfer run` wrote (it holds summary.json, logs/ and .batchinfer/)")
    return read_job(folder)


def local_path(url: str) -> Path | None:
    """The folder of a ``file://`` URL that a local run wrote (its flock and status.json, as ``batchinfer
    status`` tells them), else None: a remote folder, read through the store."""
    if not url.startswith("file://"):
        return None
    folder = Path(url[len("file://"):])
    state = folder / STATE_DIR
    local = (state / "status.json").exists() and not (state / "lease.json").exists()
    return folder if local or (folder / PIPELINE_FILE).is_file() else None


def is_job_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a job's output (its state, its summary, or its tries)."""
    return ((folder / STATE_DIR / JOB_FILE).is_file() or (folder / SUMMARY_FILE).is_file()
            or (folder / "logs" / TRIES_FILE).is_file())


# ---------------------------------------------------------------- a job


def read_job(folder: Path, status: dict[str, Any] | None = None) -> JobReport:
    """The report of one job's output folder (see the module's docstring); ``status``: its state as
    ``batchinfer status`` reads it, when known already (a remote folder's, from its lease)."""
    notes: list[str] = []
    logs = folder / "logs"
    events = _read_events(logs / EVENTS_FILE, notes)
    tries, starts = _read_tries(logs / TRIES_FILE, notes)
    first_start = next((e["_t"] for e in events if e["event"] == "run_started"), None)
    if first_start is None and starts:
        first_start = min(starts)
    t0 = first_start if first_start is not None else time.time()
    _to_relative(tries, starts, t0)
    runs, workers = _runs_and_workers(events, t0)
    headline = _headline(folder, tries, runs, notes, status)
    if headline.started_at is None:
        headline.started_at = iso_ms(t0) if first_start is not None else None
    return JobReport(
        headline=headline,
        t0=t0,
        tries=tries,
        runs=runs,
        workers=workers,
        failures=_read_failures(logs / "errors.jsonl", notes),
        slowest=_read_slowest(logs, tries, t0, notes),
        final_failed_items=_count_lines(logs / "failed_items.txt", notes),
        notes=notes,
    )


def _headline(folder: Path, tries: Tries, runs: list[Run], notes: list[str],
              status: dict[str, Any] | None) -> Headline:
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
    if state not in ("succeeded", "failed", "interrupted", "running"):
        state = "stopped"
    elapsed = _number(doc.get("elapsed_s"))
    if elapsed is None and len(tries):
        elapsed = max(s + d for s, d in zip(tries.start, tries.seconds)) - min(tries.start)
    succeeded = _int(doc.get("items_succeeded"))
    if succeeded is None and len(tries):
        succeeded = sum(n for n, st in zip(tries.succeeded, tries.status) if st == "ok")
    failed = _int(doc.get("items_failed"))
    done = _int(doc.get("mini_batches_done"))
    if done is None and "mini_batches_succeeded" in doc:
        done = (_int(doc.get("mini_batches_succeeded")) or 0) + (_int(doc.get("mini_batches_failed")) or 0)
    rate = _number(doc.get("items_per_s"))
    if rate is None and elapsed and succeeded is not None:
        rate = round(((succeeded or 0) + (failed or 0)) / elapsed, 1)
    backend = next((r.backend for r in reversed(runs) if r.backend), None)
    return Headline(
        job=str(doc.get("job") or folder.name),
        state=state,
        items_total=_int(doc.get("items_total")),
        items_succeeded=succeeded,
        items_failed=failed,
        mini_batches_total=_int(doc.get("mini_batches_total")),
        mini_batches_done=done,
        tries=_int(doc.get("tries")) if doc.get("tries") is not None else len(tries),
        elapsed_s=elapsed,
        items_per_s=rate,
        first_error=doc.get("first_error") if isinstance(doc.get("first_error"), str) else None,
        reason=(doc.get("reason") or doc.get("stop_reason") or doc.get("hint")) if state != "succeeded" else None,
        workers=_int(doc.get("workers")),
        backend=backend,
        started_at=doc.get("started_at") if isinstance(doc.get("started_at"), str) else None,
        finished_at=doc.get("finished_at") if isinstance(doc.get("finished_at"), str) else None,
        output_dir=str(folder),
        snapshot_at=datetime.now(timezone.utc).isoformat(timespec="seconds") if state == "running" else None,
    )


def _read_events(path: Path, notes: list[str]) -> list[dict[str, Any]]:
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


def _runs_and_workers(events: list[dict[str, Any]], t0: float) -> tuple[list[Run], list[WorkerStart]]:
    runs: dict[int, Run] = {}
    workers: list[WorkerStart] = []
    for e in events:
        number = _int(e.get("run")) or len(runs) or 1
        if e["event"] == "run_started":
            runs[number] = Run(number, round(e["_t"] - t0, 3), None, None, _int(e.get("workers")),
                               e.get("backend") if isinstance(e.get("backend"), str) else None)
        elif e["event"] == "run_ended" and number in runs:
            runs[number].end = round(e["_t"] - t0, 3)
            runs[number].status = e.get("status") if isinstance(e.get("status"), str) else None
        elif e["event"] == "worker_ready":
            init_s = _number(e.get("init_s")) or 0.0
            node = e.get("node")
            workers.append(WorkerStart(number, _int(e.get("worker")) or 0, _int(e.get("pid")),
                                       str(node) if node is not None else None, round(e["_t"] - t0, 3), init_s,
                                       _number(e.get("rss_mb"))))
    return sorted(runs.values(), key=lambda r: r.number), workers


def _read_tries(path: Path, notes: list[str]) -> tuple[Tries, list[float]]:
    """processed_mini_batches.csv by column (starts as epoch seconds, made relative later), sorted by start."""
    tries = Tries()
    starts: list[float] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        notes.append(f"logs/{TRIES_FILE} is absent: no tries to show")
        return tries, starts
    except OSError as exc:
        notes.append(f"logs/{TRIES_FILE} could not be read ({exc.strerror})")
        return tries, starts
    complete = text.endswith("\n")
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader, None)
        rows = list(reader)
    except csv.Error as exc:
        notes.append(f"logs/{TRIES_FILE} could not be read ({exc}): tries not shown")
        return tries, starts
    if header is None:
        return tries, starts
    column = {name: i for i, name in enumerate(header)}
    needed = ("id", "worker", "start", "seconds")
    if any(name not in column for name in needed):
        notes.append(f"logs/{TRIES_FILE} has no {', '.join(n for n in needed if n not in column)} column: tries not shown")
        return tries, starts
    if rows and not complete:
        rows.pop()  # the half-written last line of a running or killed job: expected, not damage
    width = len(header)
    good = [row for row in rows if len(row) >= width]
    stamp = _stamp_parser()
    converters = [(column.get(name), convert, default) for name, convert, default in (
        ("start", stamp, 0.0), ("seconds", float, 0.0), ("worker", int, 0), ("id", int, 0), ("part", str, ""),
        ("try", int, 1), ("items", _count, 0), ("succeeded", _count, 0), ("failed", _count, 0), ("status", str, "ok"))]
    try:
        columns = _by_column(good, converters)
    except (ValueError, IndexError):  # some row is damaged: find them one by one (slow, and rare)
        good = [row for row in good if _row_ok(row, converters)]
        columns = _by_column(good, converters)
    if len(good) < len(rows):
        notes.append(f"logs/{TRIES_FILE}: {len(rows) - len(good)} damaged rows skipped")
    starts[:] = columns[0]
    order = sorted(range(len(starts)), key=starts.__getitem__)
    if any(i != k for k, i in enumerate(order)):
        columns = [[col[i] for i in order] for col in columns]
        starts[:] = columns[0]
    (_, tries.seconds, tries.worker, tries.mini_batch, tries.part, tries.try_number, tries.items,
     tries.succeeded, tries.failed, tries.status) = columns
    return tries, starts


def _stamp_parser():
    """ISO 8601 UTC with milliseconds (as TryLog writes them) to epoch seconds; each second parsed once."""
    seconds: dict[str, float] = {}

    def parse(stamp: str) -> float:
        second = seconds.get(stamp[:19])
        if second is None:
            second = seconds[stamp[:19]] = datetime.fromisoformat(stamp[:19]).replace(tzinfo=timezone.utc).timestamp()
        return second + (float(stamp[19:23]) if stamp[19:20] == "." else 0.0)

    return parse


def _count(value: str) -> int:
    return int(value) if value else 0  # items is empty when it was not known


def _by_column(rows: list[list[str]], converters: list) -> list[list]:
    """Each column converted at once (map, no per-try object); raises ValueError for a damaged value."""
    cells = list(zip(*rows)) if rows else []
    columns = []
    for index, convert, default in converters:
        if index is None or not rows:
            columns.append([default] * len(rows))
        elif convert is _count:
            try:
                columns.append(list(map(int, cells[index])))
            except ValueError:
                columns.append(list(map(_count, cells[index])))
        else:
            columns.append(list(map(convert, cells[index])))
    return columns


def _row_ok(row: list[str], converters: list) -> bool:
    try:
        for index, convert, _ in converters:
            if index is not None:
                convert(row[index])
    except (ValueError, IndexError):
        return False
    return True


def _to_relative(tries: Tries, starts: list[float], t0: float) -> None:
    tries.start = [s - t0 for s in starts]


def _read_failures(path: Path, notes: list[str]) -> list[FailureGroup]:
    groups: dict[tuple[str, str], FailureGroup] = {}
    bad = 0
    try:
        with open(path, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                    kind = str(record.get("kind") or "failed")
                    message = str(record.get("message") or "")
                    items = [str(i) for i in record.get("items") or []]
                    mini_batch = int(record.get("mini_batch", -1))
                except (ValueError, TypeError, AttributeError):
                    bad += line.endswith("\n")
                    continue
                first = message.strip().splitlines()[0] if message.strip() else "(no message)"
                group = groups.get((kind, first))
                if group is None:
                    group = groups[(kind, first)] = FailureGroup(kind, first, 0, 0, [], [], message, "")
                group.tries += 1
                group.items += len(items)
                for item in items:
                    if len(group.example_items) >= EXAMPLES:
                        break
                    if item not in group.example_items:
                        group.example_items.append(item)
                if len(group.example_mini_batches) < EXAMPLES and mini_batch not in group.example_mini_batches:
                    group.example_mini_batches.append(mini_batch)
                traceback = record.get("traceback")
                if not group.traceback and isinstance(traceback, str) and traceback:
                    group.traceback, group.message = traceback, message
    except FileNotFoundError:
        pass  # a job with no failed try may have none
    except OSError as exc:
        notes.append(f"logs/errors.jsonl could not be read ({exc.strerror})")
    if bad:
        notes.append(f"logs/errors.jsonl: {bad} damaged lines skipped")
    return sorted(groups.values(), key=lambda g: (-g.tries, g.kind, g.first_line))


def _read_slowest(logs: Path, tries: Tries, t0: float, notes: list[str]) -> list[SlowTry]:
    try:
        records = read_slowest(logs / SLOWEST_FILE)
        slowest = []
        for r in records:
            start = datetime.fromisoformat(str(r["start"])).timestamp() - t0
            slowest.append(SlowTry(int(r["mini_batch"]), str(r.get("part") or ""), int(r.get("try", 1)),
                                   int(r["worker"]), round(start, 3), float(r["seconds"]), str(r.get("status", "ok")),
                                   [str(i) for i in r.get("items") or []]))
        return sorted(slowest, key=lambda s: -s.seconds)[:SLOWEST_KEPT]
    except FileNotFoundError:
        if len(tries):
            notes.append(f"logs/{SLOWEST_FILE} is absent: the slowest tries are shown without their items")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        notes.append(f"logs/{SLOWEST_FILE} could not be read ({one_line(str(exc))}): "
                     "the slowest tries are shown without their items")
    order = sorted(range(len(tries)), key=tries.seconds.__getitem__, reverse=True)[:SLOWEST_KEPT]
    return [SlowTry(tries.mini_batch[i], tries.part[i], tries.try_number[i], tries.worker[i], tries.start[i],
                    tries.seconds[i], tries.status[i], None) for i in order]


def _count_lines(path: Path, notes: list[str]) -> int | None:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return None
    except OSError as exc:
        notes.append(f"logs/failed_items.txt could not be read ({exc.strerror})")
        return None


def _valid_json(path: Path) -> bool:
    try:
        read_json(path)
        return True
    except (OSError, ValueError):
        return False


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ---------------------------------------------------------------- a pipeline


def _read_pipeline(folder: Path) -> PipelineReport:
    try:
        doc = read_json(folder / PIPELINE_FILE)
        steps_doc = doc["steps"]
        if not isinstance(steps_doc, dict):
            raise TypeError("no steps")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OutputError(f"{shown(folder / PIPELINE_FILE)} cannot be read ({one_line(str(exc))})",
                          hint="run the pipeline again to rewrite it") from None
    steps = []
    for name, step in steps_doc.items():
        step = step if isinstance(step, dict) else {}
        kind, status = str(step.get("type", "")), str(step.get("status", "unknown"))
        step_folder = Path(str(step.get("folder") or folder / name))
        report = None
        log = None
        if kind == "parallel" and status not in ("waiting", "skipped") and is_job_folder(step_folder):
            report = read_job(step_folder)
        std_log = step_folder / "logs" / "std_log.txt"
        if kind == "command" and std_log.is_file():
            log = str(std_log)
        error = step.get("error") or step.get("reason")
        steps.append(StepReport(str(name), kind, status, _int(step.get("exit_code")), str(step_folder), report,
                                str(error) if error else None, log))
    return PipelineReport(str(doc.get("pipeline") or folder.name), str(doc.get("status") or "unknown"),
                          _int(doc.get("exit_code")), steps)
