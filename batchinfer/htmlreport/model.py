"""What a report shows, as plain data: read from an output folder (``htmlreport/read.py``), drawn as
HTML (``htmlreport/page.py``). Nothing here reads files or draws anything.

Times are seconds since ``JobReport.t0`` (the epoch time of the first recorded start), so that
the page can show them as clock times and as offsets. Tries are stored by column, not as one
object per try: a job of 100,000 mini-batches stays a few lists of numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Headline:
    """The page's first lines."""

    job: str
    state: str  # succeeded, failed, interrupted (summary.json); running (a snapshot); stopped (no summary)
    items_total: int | None = None  # None: not known yet (a running job still listing its inputs)
    items_succeeded: int | None = None
    items_failed: int | None = None
    mini_batches_total: int | None = None  # the total as status shows it: ~N when total_estimated
    mini_batches_done: int | None = None
    tries: int | None = None
    elapsed_s: float | None = None  # running time: the runs' durations added up (pauses between runs left out)
    items_per_s: float | None = None  # items done (succeeded + failed) per second of that running time
    first_error: str | None = None
    reason: str | None = None  # why it failed or stopped
    workers: int | None = None
    backend: str | None = None  # local or ray, when recorded
    started_at: str | None = None  # ISO 8601 UTC
    finished_at: str | None = None
    output_dir: str = ""
    snapshot_at: str | None = None  # a running job: when this snapshot was taken
    total_estimated: bool = False  # mini_batches_total is an estimate (a table job's, from file sizes)
    elapsed_runs: int = 1  # elapsed_s sums the durations of this many runs (items_per_s is over that sum)


@dataclass
class Tries:
    """Every try of processed_mini_batches.csv, by column, sorted by start."""

    start: list[float] = field(default_factory=list)  # seconds since t0
    seconds: list[float] = field(default_factory=list)
    worker: list[int] = field(default_factory=list)
    mini_batch: list[int] = field(default_factory=list)
    part: list[str] = field(default_factory=list)  # "" or "lo-hi" (a part of a bisected mini-batch)
    try_number: list[int] = field(default_factory=list)
    items: list[int] = field(default_factory=list)  # 0 when not known
    succeeded: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    status: list[str] = field(default_factory=list)  # "ok", or the kind of failure (any text: kinds grow)

    def __len__(self) -> int:
        return len(self.start)


@dataclass
class Run:
    """One run of the job (a job resumed twice has three)."""

    number: int  # 1, 2, ...
    start: float  # seconds since t0
    end: float | None  # None: still running, or killed before it could say
    status: str | None  # succeeded, failed, interrupted; None when not recorded
    workers: int | None = None
    backend: str | None = None
    recorded: bool = True  # False: the tries of runs before events.jsonl existed (an older batchinfer), as one run


@dataclass
class WorkerStart:
    """A worker process (or Ray actor) that finished init(); a replaced worker has several."""

    run: int
    worker: int
    pid: int | None
    node: str | None
    ready: float  # seconds since t0, when init() returned
    init_s: float  # init() took this long: it ran from ready - init_s to ready
    rss_mb: float | None  # the worker's memory after init()


@dataclass
class SlowTry:
    """One of the slowest tries, with its items when they were recorded."""

    mini_batch: int
    part: str
    try_number: int
    worker: int
    start: float
    seconds: float
    status: str
    items: list[str] | None  # the item labels; None when this batchinfer did not record them


@dataclass
class FailureGroup:
    """Failed tries of one kind whose messages share a first line."""

    kind: str
    first_line: str
    tries: int
    items: int  # items in those tries
    example_items: list[str]  # a few
    example_mini_batches: list[int]  # a few
    message: str  # one whole message
    traceback: str  # the traceback of one of them ("" when there is none, e.g. a timeout)
    items_capped: bool = False  # items counts distinct item labels (a retry counts once) up to a cap: True = N+


@dataclass
class JobReport:
    """Everything a job's page shows."""

    headline: Headline
    t0: float  # epoch seconds
    tries: Tries
    runs: list[Run]
    workers: list[WorkerStart]
    failures: list[FailureGroup]  # most tries first
    slowest: list[SlowTry]  # slowest first, at most ten
    final_failed_items: int | None = None  # lines of failed_items.txt
    notes: list[str] = field(default_factory=list)  # what could not be read or was not recorded, one line each


@dataclass
class StepReport:
    """One step of an Azure ML pipeline run."""

    name: str
    kind: str  # parallel or command
    status: str
    exit_code: int | None
    folder: str
    report: JobReport | None  # a parallel step that ran
    error: str | None = None  # e.g. a command step's exit code line
    log: str | None = None  # a command step's std_log.txt


@dataclass
class PipelineReport:
    """An Azure ML pipeline run: one report per step."""

    name: str
    status: str
    exit_code: int | None
    steps: list[StepReport]
