"""Row formats, the output file with its journal, and the summary.

Exactly-once rests on one rule: a mini-batch's rows are appended to the output
first, *then* a journal line records the mini-batch with the output's length
after it; buffers are flushed output first (after each round of outcomes, not
per mini-batch). On reopening, journal lines that point past the output's end
are dropped (their rows never reached the disk) and the output is cut back to
the last journaled length: a row is either committed or gone, never twice.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass, field
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


# what a journal line may leave out: most mini-batches are whole, tried once, and fully scored
_DEFAULTS = {"part": None, "root_items": None, "failed": 0, "tries": 1, "ok": True, "kind": None,
             "failed_items": [], "retry": None}


def _line(entry: JournalEntry) -> bytes:
    """One compact JSON line: keys at their default value are left out (the hot path)."""
    if entry.ok and entry.part is None and entry.tries == 1 and not entry.failed and entry.kind is None:
        # the common case, written without the json module (ints and a hex digest need no escaping)
        return (f'{{"id":{entry.id},"digest":"{entry.digest}","end":{entry.end},"items":{entry.items},'
                f'"succeeded":{entry.succeeded}}}\n').encode()
    data = {"id": entry.id, "digest": entry.digest, "end": entry.end, "items": entry.items,
            "succeeded": entry.succeeded}
    for key, default in _DEFAULTS.items():
        value = getattr(entry, key)
        if value != default and not (key == "root_items" and entry.part is None):  # only parts need it
            data[key] = value
    return (json.dumps(data, separators=(",", ":")) + "\n").encode()


class Journal:
    """Append-only record of finished mini-batches, flushed with the output, fsync'ed once a second.

    Memory does not grow with the job: what is kept is what a later step needs: the entries
    that are not plain successes (failed ones, parts of bisected mini-batches: few), counts of
    the plain ones, and, when resuming, the id, input digest and size of each plain entry read
    from disk (to skip those mini-batches and to notice changed inputs).
    """

    def __init__(self, state_dir: Path, output: Path | None = None) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / JOURNAL
        self.entries: dict[Key, JournalEntry] = {}  # the latest entry per key, except plain successes
        self.done: dict[int, tuple[str, int]] = {}  # plain successes read from disk: id -> (digest, items)
        self.plain = {"count": 0, "succeeded": 0, "failed": 0, "tries": 0}
        self.end = 0  # the output length covered by the journal
        if self.path.exists():
            limit = output.stat().st_size if output is not None and output.exists() else None
            self._load(limit)
        self._file = open(self.path, "ab")
        self._last_sync = time.monotonic()

    def _load(self, limit: int | None) -> None:
        """Read the journal; stop at a torn line, or at rows the output does not hold."""
        data = self.path.read_bytes()
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # a torn last line: the mini-batch was not committed
            try:
                entry = JournalEntry(**{**_DEFAULTS, "failed_items": [], **json.loads(line)})
            except (ValueError, TypeError):
                break
            if limit is not None and entry.end > limit:
                break  # its rows never reached the disk (a power cut): that and what follows is redone
            self._remember(entry, loaded=True)
            good += len(line)
        if good < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def _remember(self, entry: JournalEntry, loaded: bool) -> None:
        self.end = max(self.end, entry.end)
        if entry.ok and entry.part is None:
            self.entries.pop(entry.key, None)  # --retry-failed: the failed entry is replaced
            for key, value in (("count", 1), ("succeeded", entry.succeeded), ("failed", entry.failed),
                               ("tries", entry.tries)):
                self.plain[key] += value
            if loaded:
                self.done[entry.id] = (entry.digest, entry.items)
        else:
            self.entries[entry.key] = entry

    def append(self, entry: JournalEntry) -> None:
        """Record ``entry`` (after its rows were written to the output; see :meth:`flush`)."""
        self._file.write(_line(entry))
        self._remember(entry, loaded=False)

    def counts(self) -> dict[str, int]:
        """Exact counts over every run of the job (resumes and retries included)."""
        succeeded, failed = self.plain["succeeded"], self.plain["failed"]
        ok_by_id: dict[int, bool] = {}
        for entry in self.entries.values():
            succeeded += entry.succeeded
            failed += entry.failed
            ok_by_id[entry.id] = ok_by_id.get(entry.id, True) and entry.ok
        ok_ids = sum(ok_by_id.values())
        return {
            "items_succeeded": succeeded,
            "items_failed": failed,
            "mini_batches_succeeded": self.plain["count"] + ok_ids,
            "mini_batches_failed": len(ok_by_id) - ok_ids,
        }

    def flush(self) -> None:
        """Hand what was appended to the OS (after the output's own flush); fsync once a second."""
        self._file.flush()
        if time.monotonic() - self._last_sync >= FSYNC_INTERVAL_S:
            self.sync()

    def sync(self) -> None:
        """Force what was written to disk."""
        self._file.flush()
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
        end = journal.end
        # cut off anything a crash left after the last committed mini-batch
        self._file.truncate(end)
        self._file.seek(end)
        self.has_header = end > 0

    def commit(self, entry: JournalEntry, rows: bytes, header: bytes | None) -> None:
        """Write one mini-batch's rows, then journal the mini-batch (both flushed by :meth:`flush`)."""
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
            entry.end = self._file.tell()
        self.journal.append(entry)

    def flush(self) -> None:
        """The output first, then the journal: the journal never gets ahead of the rows."""
        if self._file is not None:
            self._file.flush()
        self.journal.flush()

    def finish(self) -> None:
        """Flush and close; for Parquet, assemble the parts (in input order) into one file."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self.journal.sync()
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer = None
        tmp = self.path.with_name(self.path.name + ".tmp")
        for part in sorted(self.parts.glob("*.arrow")):  # names sort in input order
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
        if data:
            self._guarded(self.stream.write, data)
        self.written += len(data)
        entry.end = self.written
        self.journal.append(entry)

    def flush(self) -> None:
        """Push the rows to the reader, then the journal."""
        self._guarded(self.stream.flush)
        self.journal.flush()

    def _guarded(self, call: Any, *args: Any) -> None:
        try:
            call(*args)
        except (BrokenPipeError, ValueError) as exc:
            # later writes (and the interpreter's last flush) must not fail again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
            raise OutputClosed() from exc

    def finish(self) -> None:
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

    def flush(self) -> None:
        """Flush the journal."""
        self.journal.flush()

    def finish(self) -> None:
        """Nothing to assemble."""

    def close(self) -> None:
        """Nothing to close."""


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file, so readers never see half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
