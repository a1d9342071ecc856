"""What crosses between the coordinator and a worker: settings, mini-batch descriptors, outcomes.

All are small picklable dataclasses: a :class:`WorkerConfig` once per worker,
a :class:`MiniBatch` descriptor per task (made by ``inputs.py``), and an
:class:`Outcome` back, carrying the rows already serialised by the worker.
This module imports nothing heavy: every worker imports it at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

# kinds of failed try, as written to logs/errors.jsonl
EXCEPTION = "exception"
TIMEOUT = "timeout"
WORKER_DIED = "worker_died"
SHORT_RETURN = "short_return"
WRONG_TYPE = "wrong_type"
OUT_OF_MEMORY = "out_of_memory"  # MemoryError in a worker: the try failed and the worker was replaced
STORAGE = "storage"  # an object store kept failing while the mini-batch was read (see retry.py)

# ${{outputs.x}} in an Azure job's arguments: the worker puts the output folder there
OUTPUT_DIR_PLACEHOLDER = "{batchinfer.output_dir}"


@dataclass(slots=True)
class TableSlice:
    """Part of one table file: a byte range (CSV/JSONL) or row groups and a row window (Parquet)."""

    path: str
    format: str
    byte_range: tuple[int, int] | None = None  # [start, end) of data lines; None = whole file
    header_end: int = 0  # CSV: the header line is bytes [0, header_end)
    row_groups: tuple[int, ...] | None = None  # Parquet: None = all row groups
    row_window: tuple[int, int] | None = None  # rows [lo, hi) of what the above selects
    compression: str | None = None
    # CSV: the column names, when the bytes read hold no header line of their own (a file after the
    # first with header 'from_first_file', or one whose header differs with 'all_files_same_headers')
    names: tuple[str, ...] | None = None

    def label(self) -> str:
        """How a person names this slice, e.g. in failed_items.txt."""
        parts = [self.path]
        if self.byte_range is not None:
            parts.append(f"bytes {self.byte_range[0]}-{self.byte_range[1]}")
        if self.row_groups is not None:
            groups = self.row_groups
            shown = f"{groups[0]}" if len(groups) == 1 else f"{groups[0]}-{groups[-1]}"
            parts.append(f"row groups {shown}")
        if self.row_window is not None:
            parts.append(f"rows {self.row_window[0]}-{self.row_window[1]}")
        return " ".join(parts)


@dataclass(slots=True)
class Partition:
    """All rows, across the input files, whose ``partition_keys`` columns equal ``values``."""

    files: tuple[tuple[str, str], ...]  # (path, format)
    values: dict[str, Any]

    def label(self) -> str:
        """How a person names this partition."""
        return ", ".join(f"{k}={v}" for k, v in self.values.items())


@dataclass(slots=True)
class MiniBatch:
    """What a worker is sent: an id, the input it came from, and the items (descriptors only).

    ``part`` is set on the pieces of a mini-batch being bisected to isolate a failure:
    items ``[lo, hi)`` of the whole mini-batch (files, or rows of a table slice).
    ``digest`` identifies the listed inputs behind it (paths, sizes, modification times),
    so a resumed job notices inputs that changed under it.
    """

    id: int
    input_index: int
    files: tuple[str, ...] = ()
    table: TableSlice | Partition | None = None
    known_items: int | None = None  # None: a CSV/JSONL slice, counted by the worker
    part: tuple[int, int] | None = None
    digest: str = ""
    partition_values: dict[str, Any] | None = None  # a partition of files: its partition_keys' values

    def item_labels(self) -> list[str]:
        """One label per item the user can recognise (files) or one per slice (tables)."""
        return list(self.files) if self.table is None else [self.table.label()]

    def sub(self, lo: int, hi: int) -> MiniBatch:
        """Items ``[lo, hi)`` of this (whole) mini-batch, as a mini-batch of its own."""
        assert self.part is None, "parts are always cut from the whole mini-batch"
        if self.table is None:
            return replace(self, files=self.files[lo:hi], known_items=hi - lo, part=(lo, hi))
        assert isinstance(self.table, TableSlice)
        base = self.table.row_window[0] if self.table.row_window else 0
        table = replace(self.table, row_window=(base + lo, base + hi))
        return replace(self, table=table, known_items=hi - lo, part=(lo, hi))

    def splittable(self) -> bool:
        """Whether this mini-batch can be cut into parts (not a partition, not a compressed file)."""
        if self.table is None:
            return True
        return isinstance(self.table, TableSlice) and self.table.compression is None



@dataclass(frozen=True)
class ReadOptions:
    """How a worker reads one input's tables (the ``inputs`` keys of the same names; see spec.py).

    The defaults read a table as batchinfer always has: a header line per file, pandas'
    missing-value words, inferred types, UTF-8, no added or removed columns.
    """

    delimiter: str | None = None  # None: a tab for .tsv files, else a comma
    header: str = "all_files_different_headers"
    encoding: str = "utf8"
    empty_as_string: bool | None = None  # None: pandas' words (NA, null, ...) are missing too
    infer_column_types: bool = True
    include_path_column: bool = False
    partition_format: str | None = None
    drop_columns: tuple[str, ...] = ()
    keep_columns: tuple[str, ...] | None = None
    invalid_lines: str = "error"  # JSON lines: 'error' or 'drop'
    column_types: tuple[tuple[str, str], ...] = ()  # (column, int | float | string | boolean), as MLTable converts


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker process needs to load and run the entry script."""

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
    read_options: tuple[ReadOptions, ...] = ()  # per input, like storage_options; () = the defaults
    scratch_dir: str = ""  # workers' private folders go here; the coordinator removes it at the end
    processes_per_node: int = 1  # worker i runs on node i // processes_per_node
    coordinator_pid: int = 0
    secret_values: tuple[str, ...] = ()  # masked in the worker's log and messages (see redact.register_secrets)


@dataclass(slots=True)
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
    node: str | None = None  # batchinfer.node_id() in that worker: <hostname>-<n> locally, Ray's node id on Ray


@dataclass(frozen=True)
class InitFailed:
    """``init()`` (or importing the script) raised in a worker."""

    worker: int
    message: str
    traceback: str
