"""What crosses between the coordinator and a worker: the worker's settings and each try's outcome.

Both are small picklable dataclasses: a :class:`WorkerConfig` once per worker,
a :class:`~batchinfer.inputs.MiniBatch` descriptor per task, and an
:class:`Outcome` back, carrying the rows already serialised by the worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# kinds of failed try, as written to logs/errors.jsonl
EXCEPTION = "exception"
TIMEOUT = "timeout"
WORKER_DIED = "worker_died"
SHORT_RETURN = "short_return"
WRONG_TYPE = "wrong_type"


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker process needs to load and run the entry script."""

    job_name: str
    entry_path: str
    source_directory: str
    run_takes_context: bool
    arguments: tuple[str, ...]
    environment_variables: dict[str, str]
    models: dict[str, str]
    side_inputs: dict[str, str]
    output_dir: str
    log_dir: str
    logging_level: str
    row_format: str | None  # None: summary_only, rows are counted, not serialised
    row_header: bool
    storage_options: tuple[dict[str, Any], ...]  # per input, by MiniBatch.input_index
    scratch_dir: str = ""  # workers' private folders go here; the coordinator removes it at the end
    processes_per_node: int = 1  # worker i runs on node i // processes_per_node
    coordinator_pid: int = 0


@dataclass
class Outcome:
    """The result of one try of one mini-batch, from a worker or from the executor's watchdog."""

    batch_id: int
    part: tuple[int, int] | None  # the MiniBatch's part: which items of it were tried
    worker: int
    ok: bool
    items: int | None  # items in the mini-batch (rows of a table slice), when known
    succeeded: int = 0
    rows: bytes = b""
    header: bytes | None = None
    kind: str | None = None  # why the try failed or fell short (see the kinds above)
    message: str = ""
    traceback: str = ""
    started: float = 0.0  # epoch seconds
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ready:
    """A worker finished ``init()`` and takes mini-batches."""

    worker: int
    pid: int
    init_seconds: float
    rss_bytes: int


@dataclass(frozen=True)
class InitFailed:
    """``init()`` (or importing the script) raised in a worker."""

    worker: int
    message: str
    traceback: str
