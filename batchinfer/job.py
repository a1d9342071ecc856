"""Run one job end to end: check it, prepare the output folder, wire the parts, write the summary.

This is the library entry point behind ``batchinfer run``; it raises
:class:`~batchinfer.errors.BatchInferError` for anything the user must fix and
returns the summary (with its exit code) otherwise.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batchinfer import __version__
from batchinfer.counting import Counter
from batchinfer.entry import EntryScript, check_entry_script
from batchinfer.errors import BatchInferError, ExitCode, JobFailedError, JobInterruptedError, UsageError
from batchinfer.executors.base import make_executor, notes_of, prepare, released
from batchinfer.inputs import InputPlan
from batchinfer.layout import SUMMARY_FILE
from batchinfer.output import (
    STATE_DIR,
    Journal,
    Key,
    NullSink,
    OutputClosed,
    RowSink,
    StreamSink,
    open_own_file,
    own_file_size,
    write_json_atomic,
    write_text_atomic,
)
from batchinfer.ports import FreshPorts
from batchinfer.progress import LeaseStatus, Reporter, StatusFile
from batchinfer.protocol import Ready, WorkerConfig
from batchinfer.redact import RedactingFilter, escape_item, for_log, redact_text, register_secrets, registered_secrets
from batchinfer.remote_output import RemoteFolder, is_remote
from batchinfer.resume import (
    DigestingStream,
    fingerprint,
    inputs_digest,
    open_output,
    output_errors,
    output_folder,
    prepare_output,
)
from batchinfer.manifest import seal_state
from batchinfer.modelcache import Fetched, ModelCache, Remote, versions
from batchinfer.scheduler import Progress, Scheduler, summary_of
from batchinfer.trylog import TryLog
from batchinfer.eventlog import EventLog
from batchinfer.spec import JobSpec, is_url
from batchinfer.statefiles import private_umask

log = logging.getLogger("batchinfer")


@dataclass
class JobResult:
    """What ``batchinfer run`` reports: the summary, where things are, and the exit code."""

    summary: dict[str, Any]
    output_dir: Path | str  # a URL for an output folder on a store
    exit_code: ExitCode
    reused: bool = False
    kept_logs: Path | None = None  # --output - without --logs: the temporary folder, kept because something failed


def _worker_config(spec: JobSpec, entry: EntryScript, folder: Path, data_dir: Path | None = None,
                   local: Fetched | None = None) -> WorkerConfig:
    """What every worker needs; ``local`` gives the models and side inputs as local paths (URLs fetched)."""
    return WorkerConfig(
        entry_path=entry.path,
        source_directory=entry.source_directory,
        run_takes_context=entry.run_takes_context,
        arguments=tuple(spec.arguments),
        environment_variables=dict(spec.environment_variables),
        models=dict(local.models) if local else {n: loc.path for n, loc in spec.models.items()},
        side_inputs=dict(local.side_inputs) if local else {n: loc.path for n, loc in spec.side_inputs.items()},
        output_dir=str(data_dir or folder),  # a pipeline step's output port, else the run folder
        log_dir=str(folder / "logs"),
        logging_level=spec.logging_level,
        row_format=spec.append_row_format if spec.output_action == "append_row" else None,
        row_header=spec.append_row_dataframe_header,
        storage_options=tuple(i.storage_options for i in spec.inputs),
        read_options=tuple(i.read_options() for i in spec.inputs),
        scratch_dir=str(folder / STATE_DIR / "tmp"),
        processes_per_node=spec.process_count_per_node,
        coordinator_pid=os.getpid(),
        secret_values=registered_secrets(),  # the spec's and the environment's (registered as the spec was read)
    )


class _OwnFileHandler(logging.FileHandler):
    """A log file opened as batchinfer opens its own files: never through a link or into a FIFO."""

    def _open(self):  # noqa: ANN202 - logging.FileHandler's hook
        fd = open_own_file(Path(self.baseFilename), os.O_WRONLY | os.O_CREAT | os.O_APPEND, private=False)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def _check_worker_logs(log_dir: Path) -> None:
    """Refuse (one line, exit 2) a link, FIFO or folder standing at a worker's log name, before any
    worker starts: a worker opens its log as batchinfer's other files, and would fail to start."""
    with os.scandir(log_dir) as entries:
        for entry in entries:
            if entry.name.startswith("worker-") and entry.name.endswith(".log"):
                own_file_size(Path(entry.path))  # raises OutputError for anything but a regular file


def _job_log(folder: Path, level: str) -> logging.Handler:
    handler = _OwnFileHandler(folder / "logs" / "job.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    log.addHandler(handler)
    log.setLevel(getattr(logging, level))
    log.propagate = False
    return handler


def _write_failed_items(folder: Path, journal: Journal) -> int:
    """logs/failed_items.txt: one line per item that finally failed, in input order.

    Each name redacted and escaped (see redact.escape_item), so that a name holding a newline
    stays one line and a name that is not UTF-8 is written, as ``\\xNN``, instead of failing.
    """
    keys = sorted(journal.entries, key=_key_order)
    lines = [escape_item(redact_text(item)) for key in keys for item in journal.entries[key].failed_items]
    write_text_atomic(folder / "logs" / "failed_items.txt", "".join(f"{line}\n" for line in lines))
    return len(lines)


def _key_order(key: Key) -> tuple[int, tuple[int, int]]:
    return key[0], key[1] or (0, 0)


LOGS_README = """What is in this folder (written by batchinfer):

job.log                     the coordinator's log: workers started and replaced, retries, thresholds
worker-N.log                each worker's log: the entry script's print() output, stdout and stderr,
                            its logger() messages, tracebacks, and the stack of a worker killed for a timeout
errors.jsonl                one JSON object per failed try: mini_batch, part, items, try, worker,
                            kind (exception, timeout, worker_died, out_of_memory, short_return, wrong_type),
                            message, traceback
processed_mini_batches.csv  one row per try: id, part, try, worker, start, seconds, items, succeeded, failed, status
failed_items.txt            every item that finally failed (fix them, then: batchinfer run JOB --retry-failed)
events.jsonl                one JSON object per event: run_started, worker_ready (init() time, memory), run_ended
slowest_tries.json          the ten slowest tries, with their items
../report.html              the page of the run (batchinfer report OUTPUT, or batchinfer run JOB --report)
"""


@dataclass
class RunOptions:
    """How ``batchinfer run`` was asked to run the job (beyond the spec)."""

    output: str | None = None  # --output; "-" streams the rows to stdout
    logs: str | None = None  # --logs: with --output -, the folder for logs and state (default: a temp folder)
    restart: bool = False
    retry_failed: bool = False
    # an Azure ML pipeline step's output port (DESIGN.md section 5): the row file and the script's
    # output_dir() go there; summary, logs and state stay in the run folder
    data_dir: Path | None = None
    port_dirs: tuple[Path, ...] = ()  # the step's other output ports: made with the run folder, before workers start
    fresh_ports: FreshPorts | None = None  # the step's ports, emptied or checked when the job starts afresh


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


def excluded_folders(spec: JobSpec, options: RunOptions) -> list[Path]:
    """Folders that are never inputs: the job's output folder (or --logs folder), wherever it is."""
    raw = options.output or (spec.output.path if spec.output else None)
    if raw == "-":
        return [Path(options.logs).absolute()] if options.logs else []
    data = [options.data_dir.absolute()] if options.data_dir else []
    # a URL (file:// too) excludes nothing local: the run's staging folder is a fresh temporary one
    return data if raw and (is_url(raw) or is_remote(raw)) else [output_folder(spec, options.output), *data]


def _failure_hint(summary: dict[str, Any], logs: str) -> str | None:
    """Where to look first when the job failed: the file that holds the first error (``logs``: the logs folder)."""
    if summary["status"] != "failed":
        return None
    if summary.get("items_failed"):
        where = f"see {logs}/errors.jsonl (every failed try, with tracebacks)"
        return where + "; once fixed, run again with --retry-failed (just the failed items) or --restart"
    return f"see {logs}/worker-0.log and {logs}/job.log; once fixed, run again to continue"


class _Signals:
    """Ctrl-C and SIGTERM for a whole run, from before the backend prepares (starting our own Ray
    instance takes seconds) to the end; the caller's handlers (a notebook's, Airflow's) are put back.

    Every signal is recorded. While the backend prepares, that is all (:meth:`check` stops the run
    right after: an exception inside ``ray.init`` could leave its processes half started); from then
    until the scheduler runs, a signal stops the run at once (:meth:`check`, from the handler), as
    Ctrl-C always did there (listing a large store can take minutes); once the scheduler runs, ``hook``
    (the scheduler's) is told: a graceful stop, a resumable folder. Only the main thread may set
    handlers: from another thread (batchinfer.run() there), Ctrl-C is its caller's business.
    """

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.received: list[int] = []
        self.at_once = False  # between the backend's prepare and the scheduler
        self.hook: Any = None  # called with the number of signals so far
        main = threading.current_thread() is threading.main_thread()
        self.handled = (signal.SIGINT, signal.SIGTERM) if main else ()
        self.before: dict[int, Any] = {}

    def __enter__(self) -> _Signals:  # noqa: PYI034 - typing.Self needs Python 3.11
        self.before = {s: signal.getsignal(s) for s in self.handled}  # the caller's, before any backend's
        self.install()
        return self

    def install(self) -> None:
        """Ours, again: a backend may put its own in (ray.init's SIGTERM handler calls sys.exit)."""
        for signum in self.handled:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.received.append(signum)
        if self.hook is not None:
            self.hook(len(self.received))
        elif self.at_once:
            self.check()

    @property
    def code(self) -> ExitCode:
        return ExitCode.TERMINATED if self.received[0] == signal.SIGTERM else ExitCode.INTERRUPTED

    def check(self) -> None:
        """Stop now (nothing ran yet) if a signal came: Ctrl-C is a KeyboardInterrupt, as anywhere
        before a job runs (``batchinfer: interrupted``, 130), SIGTERM a :class:`JobInterruptedError`
        (one line, 143)."""
        if not self.received:
            return
        if self.code == ExitCode.INTERRUPTED:
            raise KeyboardInterrupt
        raise JobInterruptedError(f"job {self.spec.name} stopped by SIGTERM before it ran", self.code)

    def __exit__(self, *exc: object) -> None:
        for signum, before in self.before.items():
            # None: a handler not set from Python; the default is the nearest we can put back
            signal.signal(signum, before if before is not None else signal.SIG_DFL)


def _prepare(spec: JobSpec, signals: _Signals) -> None:
    """The backend's ``prepare`` with our handlers around it: a signal meanwhile is recorded, and
    one that reached the handler a backend put in (ray.init's: ``sys.exit(SIGTERM)``) is one of ours."""
    try:
        prepare(spec)
    except SystemExit as exc:
        if exc.code != signal.SIGTERM or not signals.handled:
            raise
        signals.received.append(signal.SIGTERM)
    signals.install()
    signals.check()
    signals.at_once = True


def _ignore(_count: int) -> None:
    pass


def run_job(spec: JobSpec, reporter: Reporter, options: RunOptions | None = None) -> JobResult:
    """Run ``spec`` to the end (or resume it, or retry its failed items); see the README.

    Ctrl-C and SIGTERM are handled from the start (see :class:`_Signals`), and what the backend
    prepared (our own Ray instance) is released however the run ends."""
    options = options or RunOptions()
    started = time.monotonic()
    register_secrets(spec.secret_values())  # a spec made in Python (not read by load_spec) too
    with _Signals(spec) as signals, released(spec):
        # the backend's package is there (one line, exit 2, if not); local: the fork server starts
        # now; Ray: connected, or our own instance started, while the checks below run
        _prepare(spec, signals)
        return _run_job(spec, reporter, options, started, signals)


def _run_job(spec: JobSpec, reporter: Reporter, options: RunOptions, started: float, signals: _Signals) -> JobResult:
    entry = check_entry_script(spec)
    plan = InputPlan(spec, exclude=excluded_folders(spec, options))
    plan.check()  # models and side inputs at URLs too: their versions (plan.remotes), before anything runs
    remotes = plan.remotes
    raw = options.output or (spec.output.path if spec.output else None)
    if is_remote(raw):
        return _run_remote(spec, reporter, options, entry, plan, str(raw), started, remotes, signals)
    to_stdout = raw == "-"
    if to_stdout:
        with output_errors(Path(options.logs or tempfile.gettempdir())):
            folder = _stream_folder(spec, options)
    else:
        folder = output_folder(spec, options.output)
    if options.data_dir is not None:
        if to_stdout:
            raise UsageError("--output - cannot be used for a pipeline step, whose rows go to its output port")
        options.data_dir = options.data_dir.absolute()
    if not to_stdout or options.logs:
        return _run_locked(spec, reporter, options, entry, plan, folder, to_stdout, started, remotes, signals)
    # --output - without --logs: a temporary folder, kept only when something in it is worth a look
    try:
        result = _run_locked(spec, reporter, options, entry, plan, folder, to_stdout, started, remotes, signals)
    except BatchInferError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    clean = result.exit_code == ExitCode.OK and not result.summary["items_failed"]
    if clean or result.exit_code == ExitCode.PIPE_CLOSED:  # a stream is never resumed: nothing there is needed again
        shutil.rmtree(folder, ignore_errors=True)
        result.summary["log_dir"] = None
    else:
        result.kept_logs = folder
    return result


def _run_remote(
    spec: JobSpec, reporter: Reporter, options: RunOptions, entry: EntryScript, plan: InputPlan, url: str,
    started: float, remotes: list[Remote], signals: _Signals,
) -> JobResult:
    """An output folder on a store: the job runs in a local staging folder that :class:`RemoteFolder`
    restores from the store and mirrors to it (see :mod:`batchinfer.remote_output`)."""
    if options.data_dir is not None:
        raise UsageError("a pipeline's output folder must be a local folder for now (remote output folders are "
                         "for one job)", hint="give --output a local folder")
    row_name = spec.append_row_file_name if spec.output_action == "append_row" else None
    storage_options = spec.output.storage_options if spec.output else {}
    remote = RemoteFolder.open(url, storage_options, row_name, spec.append_row_format != "parquet")
    try:
        with remote.translated():
            restored = remote.restore_state(options.restart)
            result = _run_locked(spec, reporter, options, entry, plan, remote.staging, False, started,
                                 remotes, signals, remote, restored)
            if not result.reused:
                remote.finish()
    finally:
        remote.close()  # the lease released, the staging folder removed: no local state is left
    result.output_dir = remote.shown(remote.staging)
    return result


def _run_locked(
    spec: JobSpec, reporter: Reporter, options: RunOptions, entry: EntryScript, plan: InputPlan, folder: Path,
    to_stdout: bool, started: float, remotes: list[Remote], signals: _Signals,
    remote: RemoteFolder | None = None, restored: set[str] = frozenset(),
) -> JobResult:
    """Lock the output folder, prepare it, and run (or reuse) the job; the lock is held until the summary is written."""
    lock = open_output(folder)
    try:
        reused = prepare_output(
            folder, spec, fingerprint(spec, entry, folder, options.data_dir, versions(remotes)),
            options.restart or to_stdout, plan,
            options.retry_failed, to_stdout, options.data_dir, options.port_dirs, options.fresh_ports,
        )
        if remote is not None:
            remote.after_prepare(restored, options.restart, reused is not None)
        if reused is not None:
            return JobResult(reused, folder, ExitCode(reused.get("exit_code", 0)), reused=True)
        # remote models and side inputs into the machine's cache, before any worker starts (so before
        # any init()); the entries are held until the job ends, so no other run removes them meanwhile
        with ModelCache().fetch(spec, remotes) as local:
            return _run(spec, reporter, options, entry, plan, folder, to_stdout, started, local, signals, remote)
    finally:
        lock.release()


def _run(
    spec: JobSpec, reporter: Reporter, options: RunOptions, entry: EntryScript, plan: InputPlan, folder: Path,
    to_stdout: bool, started: float, local: Fetched, signals: _Signals, remote: RemoteFolder | None = None,
) -> JobResult:
    """The run itself, in a prepared and locked output folder (a remote folder's staging folder)."""
    where = remote.shown if remote is not None else str  # what summaries and messages name

    with output_errors(folder):
        write_text_atomic(folder / "logs" / "readme.txt", LOGS_README)
        _check_worker_logs(folder / "logs")
        handler = _job_log(folder, spec.logging_level)
        data_dir = options.data_dir or folder
        row_file = data_dir / spec.append_row_file_name
        with private_umask():  # .batchinfer/ is the owner's only
            journal = Journal(
                folder / STATE_DIR, row_file if not to_stdout and spec.append_row_format != "parquet" else None
            )
        if to_stdout:
            sink: Any = StreamSink(sys.stdout.buffer, journal)
        elif spec.output_action == "append_row":
            sink = RowSink(folder, spec.append_row_file_name, spec.append_row_format, journal, data_dir)
        else:
            sink = NullSink(journal)
        if remote is not None:
            sink = remote.wrap(sink)
        try_log = TryLog(folder / "logs")
        events = EventLog(folder / "logs")
        # a remote folder's live status goes into its lease (for `batchinfer status URL` from anywhere)
        status_file: Any = (LeaseStatus(remote.lease, spec.name, spec.worker_count) if remote is not None
                            else StatusFile(folder / STATE_DIR, spec.name, spec.worker_count))
    for note in local.notes:  # one line per remote model or side input: downloaded, or reused
        log.info("%s", note)
    init_times: list[float] = []
    worker_rss: list[int] = []

    def on_ready(ready: Ready) -> None:
        init_times.append(ready.init_seconds)
        worker_rss.append(ready.rss_bytes)
        log.info("worker %d ready (pid %d) after init() of %.2fs", ready.worker, ready.pid, ready.init_seconds)
        events.worker_ready(ready.worker, ready.pid, ready.init_seconds, ready.rss_bytes / 2**20, ready.node)

    def on_progress(p: Progress) -> None:
        reporter.update(p)
        status_file.update(p)

    executor = make_executor(spec, _worker_config(spec, entry, folder, data_dir, local), on_ready)
    listing = DigestingStream(plan.mini_batches())
    # --retry-failed knows its total from the journal; otherwise count ahead of dispatch (counting.py)
    counter = None if options.retry_failed else Counter(plan).start()
    scheduler = Scheduler(spec, listing, executor, sink, try_log, journal, on_progress, options.retry_failed,
                          expected=counter.expected if counter is not None else lambda: (None, False))
    pipe_closed = False
    received = signals.received

    def on_signal(count: int) -> None:
        scheduler.stop_requested = count
        if count == 1:
            reporter.note("stopping: letting running mini-batches finish (press Ctrl-C again to stop at once)")

    scheduler.stop_requested = len(received)
    signals.hook = on_signal
    try:
        executor.start()  # may refuse (one line, exit 2: a Ray cluster with too few nodes) before any progress line
        signals.install()  # a backend's start may put its own handlers in (ray.init's for SIGTERM): ours win
        status_file.set_workers(executor.count)
        # executor.count, not spec.worker_count: Ray without process_count_per_node fits what the nodes hold
        # journal.done: the plain successes read back; journal.entries: failed ones and parts
        log.info("job %s: %d workers, output %s, %d mini-batches (or parts) already in the journal%s",
                 spec.name, executor.count, "stdout" if to_stdout else where(folder),
                 len(journal.done) + len(journal.entries),
                 ", retrying failed items" if options.retry_failed else "")
        events.run_started(executor.count, spec.backend, len(journal.done) + len(journal.entries))
        reporter.start(spec.name, executor.count)
        for note in notes_of(executor):  # e.g. far more workers than cores
            reporter.note(note)
        progress = scheduler.run()
    except JobFailedError as exc:  # init() kept failing: no worker can run the script
        progress = scheduler.progress
        progress.stop_reason = for_log(exc.message)  # init()'s message may name a signed URL
        progress.first_error = progress.first_error or progress.stop_reason
    except OutputClosed:
        progress = scheduler.progress
        pipe_closed = True
        log.info("stdout was closed by its reader: stopping")
    finally:
        if received or pipe_closed or scheduler.progress.stop_reason or sys.exc_info()[0] is not None:
            executor.kill_all()  # nothing they would still return may be committed
        else:
            executor.stop()
        signals.hook = _ignore  # the run is ending: a signal now changes nothing
        if counter is not None:
            counter.stop()
        try_log.close()
        if sys.exc_info()[0] is not None:
            events.close()
            sink.close()
            journal.close()
            log.removeHandler(handler)
    reporter.stop(progress)
    for line in plan.notes():  # files without rows, folders not followed
        reporter.note(line)
    shutil.rmtree(folder / STATE_DIR / "tmp", ignore_errors=True)  # killed workers' private folders
    if pipe_closed:
        status, reason, code = "interrupted", "stdout was closed by its reader", ExitCode.PIPE_CLOSED
    else:
        status, reason = scheduler.final_status()
        code = ExitCode.OK if status == "succeeded" else ExitCode.JOB_FAILED
        if status == "interrupted":
            code = signals.code
    if status == "interrupted":
        sink.close()
    else:
        sink.finish()
    journal.close()
    if remote is not None:
        remote.drain()  # every committed row in the store before the summary says so
    failed_items = _write_failed_items(folder, journal)
    elapsed = time.monotonic() - started
    summary = summary_of(
        progress,
        journal.counts(),
        status,
        reason,
        elapsed,
        {
            "exit_code": int(code),
            "complete": scheduler.complete() and not pipe_closed,
            "job": spec.name,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "output_dir": where(folder),
            "output_file": (
                "-" if to_stdout
                else where(row_file) if spec.output_action == "append_row" else None
            ),
            "log_dir": where(folder / "logs"),
            "failed_items_file": where(folder / "logs" / "failed_items.txt") if failed_items else None,
            "failed_items_listed": failed_items,
            "workers": executor.count,
            "workers_started": executor.started,  # on demand: at most one per mini-batch
            "init_s_max": round(max(init_times), 3) if init_times else None,
            "worker_rss_mb_max": round(max(worker_rss) / 2**20, 1) if worker_rss else None,
            # after --retry-failed (of fixed inputs), the output stands for the inputs as they are now
            "inputs_digest": inputs_digest(plan.mini_batches()) if options.retry_failed else listing.digest,
            "batchinfer_version": __version__,
        },
    )
    if remote is not None:  # what the store was asked to write: about one segment a second (see remote_output)
        summary["store_writes"] = {"segments": remote.segments_written, "objects": remote.objects_written}
    summary["look_at"] = _failure_hint(summary, where(folder / "logs"))
    write_json_atomic(folder / SUMMARY_FILE, summary)
    events.run_ended(status, reason, elapsed)
    status_file.update(progress, state=status, force=True)
    seal_state(folder)
    log.info("job %s %s%s", spec.name, status, f": {reason}" if reason else "")
    log.removeHandler(handler)
    handler.close()
    return JobResult(summary, folder, code)
