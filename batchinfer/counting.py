"""The expected number of mini-batches, counted ahead of dispatch in a background thread.

Dispatch lists the inputs lazily (``InputPlan.mini_batches``) and so learns the total only at
its end. :class:`Counter` walks the same inputs a second time, by the same rules (the same
``Lister`` walk, skip rules and table format filter), counting names only: a local folder
costs its names, never a stat per file, and nothing listed is kept but counts (flat memory).
A remote input is listed a second time from its store, in the background.

- file inputs: per input, ceil(files / mini_batch_size) (mini-batches never span inputs):
  exact, unless files come and go while the job runs;
- ``partition_keys``: the number of partitions, exact once dispatch has listed them
  (``InputPlan.partition_count``); for file inputs, the distinct path values before that;
- tables: an estimate from file sizes, refined as dispatch cuts them: the mini-batches listed so
  far plus the estimate for what is not cut yet (see :meth:`Counter.expected`). A Parquet file
  is counted exactly from its footer, read through its filesystem (a remote one: a range request
  or two per file); a CSV or JSON-lines file from its size and the bytes per row of the input's
  first file (its first and last 64 KB).

The counter never raises into the job: a failure means "no estimate", logged at debug level. It
uses only ``inputs``' public listing API (``Lister.entries``, ``Lister.filesystem``,
``split_parquet``) and stops when the job ends: at the next name, or before the next request of
a remote walk (``Lister(stop=...)``).
"""

from __future__ import annotations

import logging
import math
import os
import stat
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from batchinfer.inputs import FoundFile, Lister, ListingStopped, split_parquet, table_format
from batchinfer.partitions import partition_values
from batchinfer.redact import for_log
from batchinfer.spec import WHOLE_FILE_ENCODINGS

if TYPE_CHECKING:
    from batchinfer.inputs import InputPlan

log = logging.getLogger("batchinfer.counting")
SAMPLE_BYTES = 64 * 1024  # of the first table file of an input: its bytes per row, for the 'rows' unit


class Counter:
    """Counts the mini-batches of ``plan`` in a daemon thread (:meth:`start`, :meth:`stop`);
    :meth:`expected` is the best estimate so far."""

    def __init__(self, plan: InputPlan) -> None:
        self.plan = plan
        self.spec = plan.spec
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._count, name="batchinfer-counter", daemon=True)
        self.files_total: int | None = None  # file inputs: the count, once every input is counted
        self.partitions: int | None = None  # partition_keys: distinct values found by the count
        self.tables: list[tuple[int, bool]] | None = None  # tables: (estimate, exact) per file, in listing order
        self._after: list[tuple[int, bool]] = []  # tables: per file, (estimates of it and those after it, all exact)
        self.failed = False

    def start(self) -> Counter:
        """Begin counting (returns at once)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """The job is over: the thread gives up at its next name, or before its next request to a
        remote store (it is a daemon: never waited for). One request under way is not cut short:
        a remote folder's listing is one request to fsspec, however many pages the store sends."""
        self._stop.set()

    def wait(self, timeout: float) -> bool:
        """Whether the count ended (done, failed or stopped) within ``timeout`` seconds."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def expected(self) -> tuple[int | None, bool]:
        """(expected mini-batches, whether that is an estimate from sizes); (None, False) when
        nothing is known yet or the count failed."""
        plan = self.plan
        if plan.partition_count is not None:
            return plan.partition_count, False
        if self.failed:
            return None, False
        if self.spec.partition_keys:
            return self.partitions, False
        if self.spec.input_type == "file":
            return self.files_total, False
        tables, after = self.tables, self._after
        if tables is None:
            return None, False
        # the files dispatch has cut are known; the one being cut counts its estimate less what it gave so far
        begun = min(plan.files_seen, len(tables))
        current = max(0, tables[begun - 1][0] - plan.current_file_slices) if begun else 0
        cut, slices = plan.current_file_cut, plan.current_file_slices
        if begun and cut is not None and cut[0] > 0 and slices:  # its slices so far say how big the rest are
            current = math.ceil((cut[1] - cut[0]) * slices / cut[0])
        rest, rest_exact = after[begun]
        exact = rest_exact and (begun == 0 or tables[begun - 1][1])
        return plan.batches_listed + current + rest, not exact

    # ------------------------------------------------------------- the thread

    def _count(self) -> None:
        began = time.monotonic()
        try:
            if self.spec.partition_keys:
                if self.spec.input_type == "file":
                    self.partitions = self._count_partitions()
            elif self.spec.input_type == "file":
                self.files_total = self._count_files()
            else:
                tables = self._estimate_tables()
                after = [(0, True)] * (len(tables) + 1)  # expected() is called on every loop: no sum there
                for i in range(len(tables) - 1, -1, -1):
                    after[i] = (after[i + 1][0] + tables[i][0], after[i + 1][1] and tables[i][1])
                self._after, self.tables = after, tables
        except ListingStopped:
            return
        except Exception as exc:  # the job does not need the count: no estimate, and on it goes
            self.failed = True
            log.debug("counting the inputs ahead of dispatch failed: %s: %s", type(exc).__name__, for_log(str(exc)))
            return
        total, estimated = self.expected()
        if total is not None:
            log.info("counted ahead of dispatch in %.2fs: %s%d mini-batches", time.monotonic() - began,
                     "about " if estimated else "", total)

    def _names(self, index: int) -> Iterator[tuple[Any, str | dict[str, Any]]]:
        """Every file of input ``index`` as dispatch lists them, with its filesystem: a local path
        (not stat'ed) or a remote store's info dict (its ``name`` a path within that filesystem). A
        new Lister: dispatch's notes (folders not followed) stay its own; it stops when we do."""
        spec_input = self.spec.inputs[index]
        # tables: in dispatch's order (expected() pairs the estimates with the files cut so far);
        # files: only counted, so a folder's names are not kept (flat memory)
        lister = Lister(spec_input, self.plan.listers[index].exclude, ordered=self.spec.input_type == "tabular",
                        stop=self._stop)
        for path in spec_input.path:
            fs = lister.filesystem(path)[0]
            for entry in lister.entries(path):
                if self._stop.is_set():
                    raise ListingStopped
                name = entry if isinstance(entry, str) else entry["name"]
                if self.spec.input_type == "file" or table_format(name, spec_input.format)[0]:
                    yield fs, entry

    def _count_files(self) -> int:
        assert self.spec.mini_batch_size is not None
        per_batch = self.spec.mini_batch_size.value
        return sum(math.ceil(sum(1 for _ in self._names(i)) / per_batch) for i in range(len(self.spec.inputs)))

    def _count_partitions(self) -> int:
        keys = list(self.spec.partition_keys or [])
        seen: set[tuple[Any, ...]] = set()
        for index, spec_input in enumerate(self.spec.inputs):
            for _, entry in self._names(index):
                name = entry if isinstance(entry, str) else entry["name"]
                values = partition_values(name, spec_input.partition_format or "") or {}
                seen.add((tuple(values.get(k) for k in keys), index))
        return len(seen)

    def _estimate_tables(self) -> list[tuple[int, bool]]:
        out: list[tuple[int, bool]] = []
        for index, spec_input in enumerate(self.spec.inputs):
            bytes_per_row: float | None = None
            for fs, entry in self._names(index):
                path = entry if isinstance(entry, str) else entry["name"]  # within fs
                size = entry.get("size") if isinstance(entry, dict) else None
                fmt, compression = table_format(path, spec_input.format)
                whole = fmt != "parquet" and self.plan.read_options[index].encoding in WHOLE_FILE_ENCODINGS
                if compression or whole:
                    out.append((1, True))  # never cut: one mini-batch (InputPlan._slices)
                    continue
                if isinstance(entry, str):
                    try:
                        info = os.stat(path)
                    except OSError:
                        info = None
                    if info is None or not stat.S_ISREG(info.st_mode):
                        out.append((1, True))  # a FIFO, a dangling link...: one mini-batch whose read says why
                        continue
                    size = info.st_size
                if fmt == "parquet":  # its footer says how dispatch cuts it, local or remote
                    out.append(self._parquet_slices(fs, path, size))
                    continue
                if size is None:
                    size = fs.size(path)
                if self.spec.mini_batch_size is None or not size:
                    out.append((0, not size))
                    continue
                if self.spec.mini_batch_size.unit == "bytes":
                    out.append((max(1, math.ceil(size / self.spec.mini_batch_size.value)), False))
                    continue
                if bytes_per_row is None:
                    bytes_per_row = _bytes_per_row(fs, path, fmt, self.plan.read_options[index].header)
                rows = max(1, round(size / bytes_per_row))
                out.append((max(1, math.ceil(rows / self.spec.mini_batch_size.value)), False))
        return out

    def _parquet_slices(self, fs: Any, path: str, size: int | None) -> tuple[int, bool]:
        """(a Parquet file's slices, exact), from its footer read through ``fs``, as dispatch cuts
        them: one range request or two on a remote store, in this thread."""
        assert self.spec.mini_batch_size is not None
        try:
            return sum(1 for _ in split_parquet(fs, FoundFile(path, size, None), self.spec.mini_batch_size)), True
        except OSError:  # unreadable now: dispatch makes it one mini-batch, or cuts it if it can read it then
            return 1, False
        except Exception:  # a corrupt footer: dispatch makes it one mini-batch
            return 1, True


def _bytes_per_row(fs: Any, path: str, fmt: str | None, header: str) -> float:
    """Bytes per row of a CSV or JSON-lines file, from its first lines and, in a bigger file, its
    last ones too (rows often grow along a file: ids get longer); the header line not counted."""
    with fs.open(path, "rb") as f:
        head = f.read(SAMPLE_BYTES)
        size = f.size if isinstance(getattr(f, "size", None), int) else None
        tail = b""
        if size is not None and size > 2 * SAMPLE_BYTES:
            f.seek(size - SAMPLE_BYTES)
            tail = f.read(SAMPLE_BYTES).split(b"\n", 1)[-1]  # from the first whole row
    lines = head.split(b"\n")
    if len(head) == SAMPLE_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last one is cut short
    if fmt == "csv" and header != "no_header" and len(lines) > 1:
        lines = lines[1:]
    rows = [line for line in lines + tail.split(b"\n") if line.strip()]
    return max(1.0, sum(len(line) + 1 for line in rows) / max(1, len(rows)))
