"""Row formats, the output file with its journal, and the summary.

Exactly-once rests on one rule: a mini-batch's rows are appended and flushed
first, *then* a journal line records the mini-batch with the output's length
after it. On reopening, the output is cut back to the last journaled length,
so a row is either committed (journaled) or gone, never half there or twice.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_DIR = ".batchinfer"
JOURNAL = "journal.jsonl"
FSYNC_INTERVAL_S = 1.0


# ---------------------------------------------------------------- what run() returned


def result_length(result: Any) -> int | None:
    """How many items a ``run()`` result accounts for, or None when its type is not allowed.

    Allowed, as in ParallelRunStep: list, tuple, numpy array, pandas DataFrame or Series.
    Checked by module name so that the worker need not import numpy or pandas for this.
    """
    if isinstance(result, (list, tuple)):
        return len(result)
    module = type(result).__module__.split(".")[0]
    if module == "numpy" and hasattr(result, "shape"):
        return int(result.shape[0]) if result.shape else None
    if module == "pandas" and type(result).__name__ in ("DataFrame", "Series"):
        return len(result)
    return None


def _is_frame(result: Any) -> bool:
    return type(result).__name__ == "DataFrame" and type(result).__module__.startswith("pandas")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def format_rows(result: Any, fmt: str, header: bool) -> tuple[bytes, bytes | None]:
    """Serialise a ``run()`` result as (rows, header line or None) in the output format.

    ``txt`` is byte-compatible with ParallelRunStep's append_row: ``str(x)`` per element,
    a DataFrame as its values separated by single spaces, without index.
    ``parquet`` returns an Arrow IPC stream; the parts are assembled into one file at the end.
    """
    frame = _is_frame(result)
    if fmt == "txt":
        if frame:
            head = (" ".join(str(c) for c in result.columns) + "\n").encode() if header else None
            return result.to_csv(sep=" ", header=False, index=False, lineterminator="\n").encode(), head
        return "".join([f"{x}\n" for x in result]).encode(), None
    if fmt == "csv":
        if frame:
            head = result.head(0).to_csv(index=False, lineterminator="\n").encode()
            return result.to_csv(header=False, index=False, lineterminator="\n").encode(), head
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for x in result:
            writer.writerow(x if isinstance(x, (list, tuple)) else [x])
        return buffer.getvalue().encode(), None
    if fmt == "jsonl":
        if frame:
            records = result.to_dict(orient="records")
        else:
            records = result
        return "".join([json.dumps(r, default=_json_default) + "\n" for r in records]).encode(), None
    if fmt == "parquet":
        import pyarrow as pa

        if frame:
            table = pa.Table.from_pandas(result, preserve_index=False)
        else:
            items = [x.item() if hasattr(x, "item") else x for x in result]
            if items and all(isinstance(x, dict) for x in items):
                table = pa.Table.from_pylist(items)
            else:
                try:
                    table = pa.table({"result": pa.array(items)})
                except (pa.ArrowInvalid, pa.ArrowTypeError):
                    table = pa.table({"result": pa.array([str(x) for x in items])})
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue(), None
    raise ValueError(f"unknown append_row_format {fmt!r}")


# ---------------------------------------------------------------- journal


Key = tuple[int, "tuple[int, int] | None"]


@dataclass
class JournalEntry:
    """One settled mini-batch (or part of one): its counts and the output's length after its rows."""

    id: int
    part: list[int] | None  # [lo, hi): items of the mini-batch, when it was bisected; None: all of it
    digest: str  # the listed inputs behind the mini-batch (see MiniBatch.digest)
    root_items: int | None  # items of the whole mini-batch, when known
    end: int  # output length after this entry's rows (txt/csv/jsonl)
    items: int
    succeeded: int
    failed: int
    tries: int
    ok: bool  # False: it failed (no rows)
    kind: str | None = None  # the last try's failure kind, if any
    failed_items: list[str] = field(default_factory=list)
    retry: str | None = None  # failed entries: the mini-batch itself, for --retry-failed

    @property
    def key(self) -> Key:
        """(id, part): a later entry with the same key replaces an earlier one (--retry-failed)."""
        return self.id, tuple(self.part) if self.part else None


class Journal:
    """Append-only record of finished mini-batches, flushed at once and fsync'ed at most once a second."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / JOURNAL
        self.entries: dict[Key, JournalEntry] = {}
        if self.path.exists():
            self._load()
        self._file = open(self.path, "ab")
        self._last_sync = time.monotonic()

    def _load(self) -> None:
        data = self.path.read_bytes()
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # a torn last line: the mini-batch was not committed
            try:
                entry = JournalEntry(**json.loads(line))
            except (ValueError, TypeError):
                break
            self.entries[entry.key] = entry
            good += len(line)
        if good < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def forget_beyond(self, size: int) -> None:
        """Drop entries whose rows end past ``size`` (the output lost them, e.g. in a power cut)."""
        lost = [key for key, entry in self.entries.items() if entry.end > size]
        if not lost:
            return
        for key in lost:
            del self.entries[key]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(asdict(e), separators=(",", ":")) + "\n" for e in self.entries.values()))
        os.replace(tmp, self.path)
        self._file.close()
        self._file = open(self.path, "ab")

    @property
    def committed_end(self) -> int:
        """The output length covered by the journal (0 when nothing is committed)."""
        return max((e.end for e in self.entries.values()), default=0)

    def append(self, entry: JournalEntry) -> None:
        """Record ``entry`` (its rows must already be flushed to the output)."""
        self._file.write((json.dumps(asdict(entry), separators=(",", ":")) + "\n").encode())
        self._file.flush()
        self.entries[entry.key] = entry
        if time.monotonic() - self._last_sync >= FSYNC_INTERVAL_S:
            self.sync()

    def sync(self) -> None:
        """Force what was written to disk."""
        os.fsync(self._file.fileno())
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """Sync and close."""
        if not self._file.closed:
            self.sync()
            self._file.close()


# ---------------------------------------------------------------- the output file


def _part_name(key: Key) -> str:
    batch_id, part = key
    return f"{batch_id:09d}.arrow" if part is None else f"{batch_id:09d}-{part[0]:09d}-{part[1]:09d}.arrow"


class RowSink:
    """The append_row output: rows appended whole per mini-batch, then journaled.

    ``txt``, ``csv`` and ``jsonl`` append to the output file directly. ``parquet`` keeps one
    Arrow part per mini-batch under ``.batchinfer/parts`` and writes the Parquet file in
    :meth:`finish`, so a crash never leaves a Parquet file without its footer.
    """

    def __init__(self, folder: Path, file_name: str, fmt: str, journal: Journal) -> None:
        self.path = folder / file_name
        self.fmt = fmt
        self.journal = journal
        self.parts = folder / STATE_DIR / "parts"
        if fmt == "parquet":
            self.parts.mkdir(parents=True, exist_ok=True)
            self._file = None
            return
        if not self.path.exists():
            self.path.touch()
        self._file = open(self.path, "r+b")
        journal.forget_beyond(os.fstat(self._file.fileno()).st_size)
        end = journal.committed_end
        # cut off anything a crash left after the last committed mini-batch
        self._file.truncate(end)
        self._file.seek(end)
        self.has_header = end > 0

    def commit(self, entry: JournalEntry, rows: bytes, header: bytes | None) -> None:
        """Write one mini-batch's rows, flush them, then journal the mini-batch."""
        if self._file is None:
            if rows:
                part = self.parts / _part_name(entry.key)
                part.with_suffix(".tmp").write_bytes(rows)
                os.replace(part.with_suffix(".tmp"), part)
            entry.end = 0
        else:
            if header and not self.has_header and rows:
                self._file.write(header)
                self.has_header = True
            if rows:
                self._file.write(rows)
                self._file.flush()
            entry.end = self._file.tell()
        self.journal.append(entry)

    def finish(self, order: Iterable[Key]) -> None:
        """Flush and close; for Parquet, assemble the parts (in ``order``) into one file."""
        if self._file is not None:
            os.fsync(self._file.fileno())
            self._file.close()
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer = None
        tmp = self.path.with_name(self.path.name + ".tmp")
        for key in order:
            part = self.parts / _part_name(key)
            if not part.exists():
                continue
            with pa.ipc.open_stream(part.read_bytes()) as reader:
                table = reader.read_all()
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table.cast(writer.schema) if table.schema != writer.schema else table)
        if writer is not None:
            writer.close()
            os.replace(tmp, self.path)

    def close(self) -> None:
        """Close without finishing (an interrupted job)."""
        if self._file is not None and not self._file.closed:
            self._file.flush()
            self._file.close()


class OutputClosed(Exception):
    """The reader of stdout went away (``batchinfer run ... --output - | head``)."""


class StreamSink:
    """``--output -``: each mini-batch's rows go to stdout as it commits, then to the journal.

    Nothing can be cut back on a pipe, so a stream is never resumed: each run starts afresh.
    """

    def __init__(self, stream: Any, journal: Journal) -> None:
        self.stream = stream
        self.journal = journal
        self.written = 0
        self.has_header = False

    def commit(self, entry: JournalEntry, rows: bytes, header: bytes | None) -> None:
        """Write the rows and flush; a closed pipe raises :class:`OutputClosed`."""
        data = rows
        if header and not self.has_header and rows:
            data, self.has_header = header + rows, True
        try:
            if data:
                self.stream.write(data)
                self.stream.flush()
        except (BrokenPipeError, ValueError) as exc:
            # later writes (and the interpreter's last flush) must not fail again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
            raise OutputClosed() from exc
        self.written += len(data)
        entry.end = self.written
        self.journal.append(entry)

    def finish(self, order: Iterable[Key]) -> None:
        """Nothing to assemble."""

    def close(self) -> None:
        """Nothing to close: stdout belongs to the caller."""


class NullSink:
    """summary_only: nothing is written but the journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def commit(self, entry: JournalEntry, rows: bytes, header: bytes | None) -> None:
        """Journal the mini-batch; its rows (if any) are only counted."""
        self.journal.append(entry)

    def finish(self, order: Iterable[Key]) -> None:
        """Nothing to assemble."""

    def close(self) -> None:
        """Nothing to close."""


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file, so readers never see half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
