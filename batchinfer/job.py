"""Run one job end to end: check it, prepare the output folder, wire the parts, write the summary.

This is the library entry point behind ``batchinfer run``; it raises
:class:`~batchinfer.errors.BatchInferError` for anything the user must fix and
returns the summary (with its exit code) otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batchinfer import __version__
from batchinfer.entry import EntryScript, check_entry_script
from batchinfer.errors import ExitCode, JobFailedError, OutputError, UsageError
from batchinfer.inputs import InputPlan
from batchinfer.inputs import MiniBatch
from batchinfer.output import (
    STATE_DIR,
    Journal,
    JournalEntry,
    Key,
    NullSink,
    OutputClosed,
    RowSink,
    StreamSink,
    write_json_atomic,
)
from batchinfer.progress import Reporter, StatusFile
from batchinfer.protocol import Ready, WorkerConfig
from batchinfer.scheduler import Progress, Scheduler, TryLog, summary_of
from batchinfer.spec import JobSpec, is_url

# keys that do not change which rows a job produces: changing them keeps resume possible
NOT_FINGERPRINTED = {
    "output", "node_count", "process_count_per_node", "backend", "ray_address",
    "logging_level", "allow_reuse", "run_invocation_timeout",
}
FINISHED = ("succeeded", "failed")

log = logging.getLogger("batchinfer")


@dataclass
class JobResult:
    """What ``batchinfer run`` reports: the summary, where things are, and the exit code."""

    summary: dict[str, Any]
    output_dir: Path
    exit_code: ExitCode
    reused: bool = False


def output_folder(spec: JobSpec, override: str | None) -> Path:
    """The output folder: ``--output``, else the spec's ``output``, else ``./outputs/<name>``."""
    raw = override or (spec.output.path if spec.output else None)
    if raw and is_url(raw):
        raise OutputError(f"output {raw!r}: remote output folders are not supported yet", hint="use a local folder")
    path = Path(raw) if raw else Path("outputs") / spec.name
    return path.absolute()


def _input_roots(spec: JobSpec) -> set[str]:
    """Local folders that hold inputs (not code): the fingerprint does not walk them."""
    roots = set()
    for spec_input in spec.inputs:
        for path in spec_input.path:
            if not is_url(path):
                static = path.split("*")[0].split("?")[0].split("[")[0]
                roots.add(os.path.normpath(static if os.path.isdir(static) else os.path.dirname(static)))
    return roots


def _stat_line(path: str) -> str:
    try:
        if os.path.isdir(path):
            stats = [os.stat(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs]
            return f"{path}:{sum(s.st_size for s in stats)}:{max((s.st_mtime_ns for s in stats), default=0)}\n"
        stat = os.stat(path)
        return f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n"
    except OSError:
        return f"{path}:missing\n"


def fingerprint(spec: JobSpec, entry: EntryScript, output: Path) -> str:
    """A hash of what decides the job's rows: the spec (minus run-time settings), the entry script
    and the other Python files of ``source_directory``, and the files named in models and side_inputs.

    Data files under ``source_directory`` (its inputs, the output folder, logs) are not part of it,
    so running a job from its own folder, or redirecting stderr there, does not change its identity.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(spec.model_dump(mode="json", exclude=NOT_FINGERPRINTED), sort_keys=True).encode())
    digest.update(Path(entry.path).read_bytes())
    skip = _input_roots(spec) | {str(output)}
    for root, dirs, files in os.walk(entry.source_directory):
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".") and d != "__pycache__" and os.path.join(root, d) not in skip
            and not os.path.exists(os.path.join(root, d, STATE_DIR))  # another job's output folder
        )
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                digest.update(os.path.relpath(path, entry.source_directory).encode())
                digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    for named in (spec.models, spec.side_inputs):
        for name, path in sorted(named.items()):
            digest.update(name.encode())
            digest.update((path if is_url(path) else _stat_line(path)).encode())
    return digest.hexdigest()[:16]


def _clear(folder: Path, spec: JobSpec) -> None:
    """Remove what an earlier run of a job left in ``folder`` (not the script's own files)."""
    for name in (spec.append_row_file_name, "summary.json"):
        (folder / name).unlink(missing_ok=True)
    for name in (STATE_DIR, "logs"):
        shutil.rmtree(folder / name, ignore_errors=True)


def inputs_digest(batches: Iterable[MiniBatch]) -> str:
    """One hash over the digests of every listed mini-batch: the job's input listing."""
    digest = hashlib.blake2b(digest_size=16)
    for batch in batches:
        digest.update(batch.digest.encode())
    return digest.hexdigest()


class DigestingStream:
    """Passes listed mini-batches through, hashing them on the way (no second listing needed)."""

    def __init__(self, batches: Iterator[MiniBatch]) -> None:
        self._batches = batches
        self._digest = hashlib.blake2b(digest_size=16)
        self.done = False

    def __iter__(self) -> DigestingStream:
        return self

    def __next__(self) -> MiniBatch:
        try:
            batch = next(self._batches)
        except StopIteration:
            self.done = True
            raise
        self._digest.update(batch.digest.encode())
        return batch

    @property
    def digest(self) -> str | None:
        """The listing's hash, once it has been listed to the end."""
        return self._digest.hexdigest() if self.done else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def prepare_output(
    folder: Path, spec: JobSpec, print_: str, restart: bool, plan: InputPlan | None = None, retry_failed: bool = False
) -> dict[str, Any] | None:
    """Make the folder ready; return the finished job's summary when it can be reused as is."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"output {folder} is a file, not a folder", hint="give --output a folder path")
    state = folder / STATE_DIR / "job.json"
    old = _read_json(state) if state.exists() else None
    summary = _read_json(folder / "summary.json")
    if old is not None and old.get("fingerprint") != print_ and not restart:
        raise OutputError(
            f"output {folder} holds a different job (its spec, script or code changed since it ran there)",
            hint="use --restart to start over in that folder, or choose another --output",
        )
    if retry_failed:
        if old is None or summary.get("status") not in FINISHED:
            raise OutputError(
                f"--retry-failed needs a finished job in {folder}",
                hint="run the job to the end first; --retry-failed then runs only its failed items again",
            )
        return None
    if restart:
        _clear(folder, spec)
    elif old is not None and summary.get("status") in FINISHED and summary.get("complete", True):
        if not spec.allow_reuse:
            _clear(folder, spec)
        elif plan is not None and summary.get("inputs_digest") != inputs_digest(plan.mini_batches()):
            raise OutputError(
                f"the inputs changed since the job in {folder} finished",
                hint="use --restart to score them again in that folder, or choose another --output",
            )
        else:
            return summary
    elif old is None and (folder / spec.append_row_file_name).exists():
        raise OutputError(
            f"output {folder} already holds {spec.append_row_file_name} from something other than this job",
            hint="use --restart to replace it, or choose another --output",
        )
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    (folder / STATE_DIR).mkdir(exist_ok=True)
    write_json_atomic(state, {"fingerprint": print_, "name": spec.name, "version": __version__})
    return None


def _worker_config(spec: JobSpec, entry: EntryScript, folder: Path) -> WorkerConfig:
    return WorkerConfig(
        job_name=spec.name,
        entry_path=entry.path,
        source_directory=entry.source_directory,
        run_takes_context=entry.run_takes_context,
        arguments=tuple(spec.arguments),
        environment_variables=dict(spec.environment_variables),
        models=dict(spec.models),
        side_inputs=dict(spec.side_inputs),
        output_dir=str(folder),
        log_dir=str(folder / "logs"),
        logging_level=spec.logging_level,
        row_format=spec.append_row_format if spec.output_action == "append_row" else None,
        row_header=spec.append_row_dataframe_header,
        storage_options=tuple(i.storage_options for i in spec.inputs),
        scratch_dir=str(folder / STATE_DIR / "tmp"),
        processes_per_node=spec.process_count_per_node,
        coordinator_pid=os.getpid(),
    )


def _job_log(folder: Path, level: str) -> logging.Handler:
    handler = logging.FileHandler(folder / "logs" / "job.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(getattr(logging, level))
    log.propagate = False
    return handler


def _write_failed_items(folder: Path, journal: Journal) -> int:
    """logs/failed_items.txt: one line per item that finally failed, in input order."""
    keys = sorted(journal.entries, key=_key_order)
    lines = [item for key in keys for item in journal.entries[key].failed_items]
    path = folder / "logs" / "failed_items.txt"
    path.write_text("".join(f"{line}\n" for line in lines))
    return len(lines)


def tally(entries: Iterable[JournalEntry]) -> dict[str, int]:
    """Exact counts from the journal, over every run of the job (resumes and retries included)."""
    counts = {"items_succeeded": 0, "items_failed": 0}
    ok_by_id: dict[int, bool] = {}
    for entry in entries:
        counts["items_succeeded"] += entry.succeeded
        counts["items_failed"] += entry.failed
        ok_by_id[entry.id] = ok_by_id.get(entry.id, True) and entry.ok
    counts["mini_batches_succeeded"] = sum(ok_by_id.values())
    counts["mini_batches_failed"] = len(ok_by_id) - counts["mini_batches_succeeded"]
    return counts


def _key_order(key: Key) -> tuple[int, tuple[int, int]]:
    return key[0], key[1] or (0, 0)


LOGS_README = """What is in this folder (written by batchinfer):

job.log                     the coordinator's log: workers started and replaced, retries, thresholds
worker-N.log                each worker's log: the entry script's print() output, stdout and stderr,
                            its logger() messages, tracebacks, and the stack of a worker killed for a timeout
errors.jsonl                one JSON object per failed try: mini_batch, part, items, try, worker,
                            kind (exception, timeout, worker_died, short_return, wrong_type), message, traceback
processed_mini_batches.csv  one row per try: id, part, try, worker, start, seconds, items, succeeded, failed, status
failed_items.txt            every item that finally failed (fix them, then: batchinfer run JOB --retry-failed)
"""


@dataclass
class RunOptions:
    """How ``batchinfer run`` was asked to run the job (beyond the spec)."""

    output: str | None = None  # --output; "-" streams the rows to stdout
    logs: str | None = None  # --logs: with --output -, the folder for logs and state (default: a temp folder)
    restart: bool = False
    retry_failed: bool = False


def _stream_folder(spec: JobSpec, options: RunOptions) -> Path:
    """With ``--output -``: check the combination and pick the folder for logs and state."""
    if spec.output_action != "append_row" or spec.append_row_format == "parquet":
        raise UsageError(
            "--output - streams rows to stdout: it needs output_action append_row and a txt, csv or jsonl format",
            hint="give an output folder instead",
        )
    if options.retry_failed:
        raise UsageError("--retry-failed needs an output folder, not --output -")
    if options.logs:
        return Path(options.logs).absolute()
    return Path(tempfile.mkdtemp(prefix=f"batchinfer-{spec.name}-"))


def _failure_hint(summary: dict[str, Any], folder: Path) -> str | None:
    """Where to look first when the job failed: the file that holds the first error."""
    if summary["status"] != "failed":
        return None
    if summary.get("items_failed"):
        where = f"see {folder / 'logs' / 'errors.jsonl'} (every failed try, with tracebacks)"
        return where + "; once fixed, run again with --retry-failed (just the failed items) or --restart"
    return f"see {folder / 'logs' / 'worker-0.log'} and {folder / 'logs' / 'job.log'}; once fixed, run again to continue"


def run_job(spec: JobSpec, reporter: Reporter, options: RunOptions | None = None) -> JobResult:
    """Run ``spec`` to the end (or resume it, or retry its failed items); see the README."""
    options = options or RunOptions()
    started = time.monotonic()
    entry = check_entry_script(spec)
    plan = InputPlan(spec)
    plan.check()
    to_stdout = (options.output or (spec.output.path if spec.output else None)) == "-"
    folder = _stream_folder(spec, options) if to_stdout else output_folder(spec, options.output)
    reused = prepare_output(
        folder, spec, fingerprint(spec, entry, folder), options.restart or to_stdout, plan, options.retry_failed
    )
    if reused is not None:
        return JobResult(reused, folder, ExitCode(reused.get("exit_code", 0)), reused=True)

    (folder / "logs" / "readme.txt").write_text(LOGS_README)
    handler = _job_log(folder, spec.logging_level)
    journal = Journal(folder / STATE_DIR)
    if to_stdout:
        sink: Any = StreamSink(sys.stdout.buffer, journal)
    elif spec.output_action == "append_row":
        sink = RowSink(folder, spec.append_row_file_name, spec.append_row_format, journal)
    else:
        sink = NullSink(journal)
    try_log = TryLog(folder / "logs")
    status_file = StatusFile(folder / STATE_DIR, spec.name, spec.worker_count)
    init_times: list[float] = []
    worker_rss: list[int] = []

    def on_ready(ready: Ready) -> None:
        init_times.append(ready.init_seconds)
        worker_rss.append(ready.rss_bytes)
        log.info("worker %d ready (pid %d) after init() of %.2fs", ready.worker, ready.pid, ready.init_seconds)

    def on_progress(p: Progress) -> None:
        reporter.update(p)
        status_file.update(p)

    from batchinfer.executors.local import LocalExecutor

    executor = LocalExecutor(_worker_config(spec, entry, folder), spec.worker_count, spec.run_invocation_timeout, on_ready)
    listing = DigestingStream(plan.mini_batches())
    scheduler = Scheduler(spec, listing, executor, sink, try_log, journal.entries, on_progress, options.retry_failed)
    received: list[int] = []
    pipe_closed = False

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        scheduler.stop_requested = len(received)
        if len(received) == 1:
            reporter.note("stopping: letting running mini-batches finish (press Ctrl-C again to stop at once)")

    handlers_before = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    log.info("job %s: %d workers, output %s, %d mini-batches (or parts) already in the journal%s",
             spec.name, spec.worker_count, "stdout" if to_stdout else folder, len(journal.entries),
             ", retrying failed items" if options.retry_failed else "")
    reporter.start(spec.name, spec.worker_count)
    try:
        executor.start()
        progress = scheduler.run()
    except JobFailedError as exc:  # init() kept failing: no worker can run the script
        progress = scheduler.progress
        progress.stop_reason = exc.message
        progress.first_error = progress.first_error or exc.message
    except OutputClosed:
        progress = scheduler.progress
        pipe_closed = True
        log.info("stdout was closed by its reader: stopping")
    finally:
        if received or pipe_closed or scheduler.progress.stop_reason or sys.exc_info()[0] is not None:
            executor.kill_all()  # nothing they would still return may be committed
        else:
            executor.stop()
        for signum, before in handlers_before.items():
            signal.signal(signum, before)
        try_log.close()
        if sys.exc_info()[0] is not None:
            sink.close()
            journal.close()
            log.removeHandler(handler)
    reporter.stop(progress)
    shutil.rmtree(folder / STATE_DIR / "tmp", ignore_errors=True)  # killed workers' private folders
    if pipe_closed:
        status, reason, code = "interrupted", "stdout was closed by its reader", ExitCode.PIPE_CLOSED
    else:
        status, reason = scheduler.final_status()
        code = ExitCode.OK if status == "succeeded" else ExitCode.JOB_FAILED
        if status == "interrupted":
            code = ExitCode.TERMINATED if received[0] == signal.SIGTERM else ExitCode.INTERRUPTED
    if status == "interrupted":
        sink.close()
    else:
        sink.finish(sorted(journal.entries, key=_key_order))
    journal.close()
    failed_items = _write_failed_items(folder, journal)
    elapsed = time.monotonic() - started
    summary = summary_of(
        progress,
        tally(journal.entries.values()),
        status,
        reason,
        elapsed,
        {
            "exit_code": int(code),
            "complete": scheduler.complete() and not pipe_closed,
            "job": spec.name,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "output_dir": str(folder),
            "output_file": (
                "-" if to_stdout
                else str(folder / spec.append_row_file_name) if spec.output_action == "append_row" else None
            ),
            "log_dir": str(folder / "logs"),
            "failed_items_file": str(folder / "logs" / "failed_items.txt") if failed_items else None,
            "failed_items_listed": failed_items,
            "workers": spec.worker_count,
            "init_s_max": round(max(init_times), 3) if init_times else None,
            "worker_rss_mb_max": round(max(worker_rss) / 2**20, 1) if worker_rss else None,
            # after --retry-failed (of fixed inputs), the output stands for the inputs as they are now
            "inputs_digest": inputs_digest(plan.mini_batches()) if options.retry_failed else listing.digest,
            "batchinfer_version": __version__,
        },
    )
    summary["look_at"] = _failure_hint(summary, folder)
    write_json_atomic(folder / "summary.json", summary)
    status_file.update(progress, state=status, force=True)
    log.info("job %s %s%s", spec.name, status, f": {reason}" if reason else "")
    log.removeHandler(handler)
    handler.close()
    return JobResult(summary, folder, code)
