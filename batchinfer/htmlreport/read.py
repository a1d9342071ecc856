"""Read a job's (or a pipeline's) output folder into the report model (``htmlreport/model.py``).

Every file is optional and may be damaged or half written (a running or killed job): what cannot be
read becomes a line of ``JobReport.notes``, never an exception. Only a folder that batchinfer did not
write is refused (:class:`OutputError`). Tries are read by column with the csv module, without one
object per try: 100,000 tries take a fraction of a second.
"""

from __future__ import annotations

import json
import re
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from batchinfer.errors import OutputError, one_line
from batchinfer.eventlog import EVENTS_FILE, iso_ms
from batchinfer.htmlreport.headline import first_start, int_or_none, read_events, read_headline, runs_and_workers
from batchinfer.htmlreport.model import FailureGroup, JobReport, PipelineReport, SlowTry, StepReport, Tries
from batchinfer.htmlreport.triesfile import read_tries
from batchinfer.layout import STATE_DIR, SUMMARY_FILE
from batchinfer.statefiles import JOB_FILE, read_json, shown
from batchinfer.trylog import ERRORS_FILE, SLOWEST_FILE, SLOWEST_KEPT, TRIES_FILE, read_slowest

PIPELINE_FILE = "pipeline.json"
EXAMPLES = 5  # example items and mini-batch ids per failure group
ITEMS_COUNTED = 10_000  # distinct failed items counted per failure group (then "N+"): memory stays flat


def read_target(target: str | Path, storage_options: dict[str, Any] | None = None) -> JobReport | PipelineReport:
    """The report of the job or pipeline whose output folder is ``target`` (``storage_options``: a remote
    folder's credentials, as the job spec's ``output.storage_options``).

    Raises :class:`OutputError` (one line) when ``target`` is not an output folder batchinfer wrote.
    """
    if isinstance(target, str) and "://" in target:
        local = local_path(target)
        if local is None:
            from batchinfer.htmlreport.remote import read_remote

            return read_remote(target, storage_options)
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
    from batchinfer.progress import ran_locally

    folder = Path(url[len("file://"):])
    return folder if ran_locally(folder) or (folder / PIPELINE_FILE).is_file() else None


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
    events = read_events(logs / EVENTS_FILE, notes)
    tries, starts = read_tries(logs / TRIES_FILE, notes)
    first = first_start(events, starts)
    t0 = first if first is not None else time.time()
    tries.start = [s - t0 for s in starts]
    runs, workers, run_elapsed = runs_and_workers(events, t0, tries)
    headline = read_headline(folder, tries, runs, notes, status, run_elapsed, t0)
    if first is not None and (headline.started_at is None or len(runs) > 1):
        headline.started_at = iso_ms(t0)  # the job's first start: status and summary.json tell the last run's
    return JobReport(
        headline=headline,
        t0=t0,
        tries=tries,
        runs=runs,
        workers=workers,
        failures=_read_failures(logs / ERRORS_FILE, notes),
        slowest=_read_slowest(logs, tries, t0, notes),
        final_failed_items=_count_lines(logs / "failed_items.txt", notes),
        notes=notes,
    )


# batchinfer's own messages name the mini-batch and the worker ("run() on mini-batch 9 took longer than ...;
# worker 1 was killed (its stack is in worker-1.log)"): the same failure on two workers is one group
_BATCHINFER_NUMBERS = re.compile(r"\b(mini-batch|worker)([ -])\d+\b")


def _numbers_masked(first_line: str) -> str:
    """A message's first line as its group's key: mini-batch and worker numbers shown as N."""
    return _BATCHINFER_NUMBERS.sub(r"\1\2N", first_line)


def _read_failures(path: Path, notes: list[str]) -> list[FailureGroup]:
    groups: dict[tuple[str, str], FailureGroup] = {}
    seen: dict[tuple[str, str], set[str]] = {}
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
                first = _numbers_masked(message.strip().splitlines()[0]) if message.strip() else "(no message)"
                group = groups.get((kind, first))
                if group is None:
                    group = groups[(kind, first)] = FailureGroup(kind, first, 0, 0, [], [], message, "")
                    seen[(kind, first)] = set()
                group.tries += 1
                labels = seen[(kind, first)]
                for item in items:  # a retried or bisected item is one item, however many tries it failed
                    if item in labels:
                        continue
                    if len(labels) >= ITEMS_COUNTED:
                        group.items_capped = True
                        break
                    labels.add(item)
                group.items = len(labels)
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
        notes.append(f"logs/{ERRORS_FILE} could not be read ({exc.strerror})")
    if bad:
        notes.append(f"logs/{ERRORS_FILE}: {bad} damaged lines skipped")
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
        step_folder = _step_folder(folder, str(name), step.get("folder"))
        report = None
        log = None
        if kind == "parallel" and status not in ("waiting", "skipped") and is_job_folder(step_folder):
            report = read_job(step_folder)
        std_log = step_folder / "logs" / "std_log.txt"
        if kind == "command" and std_log.is_file():
            log = str(std_log)
        error = step.get("error") or step.get("reason")
        steps.append(StepReport(str(name), kind, status, int_or_none(step.get("exit_code")), str(step_folder), report,
                                str(error) if error else None, log))
    return PipelineReport(str(doc.get("pipeline") or folder.name), str(doc.get("status") or "unknown"),
                          int_or_none(doc.get("exit_code")), steps)


def _step_folder(folder: Path, name: str, recorded: Any) -> Path:
    """A step's folder: the one pipeline.json recorded, unless it is gone or lies outside the pipeline's
    folder (the folder was moved or copied, with absolute paths in pipeline.json): then ``folder/<step>``."""
    own = folder / name
    if not isinstance(recorded, str) or not recorded:
        return own
    path = Path(recorded)
    path = path if path.is_absolute() else folder / path
    inside = os.path.commonpath([os.path.abspath(path), str(folder)]) == str(folder)
    return path if inside and path.exists() else own
