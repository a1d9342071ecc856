"""Row formats, the output file with its journal, and the summary.

Exactly-once rests on one rule: a mini-batch's rows are appended to the output
first, *then* a journal line records the mini-batch with the output's length
after it; buffers are flushed output first (after each round of outcomes, not
per mini-batch). On reopening, journal lines that point past the output's end
are dropped (their rows never reached the disk) and the output is cut back to
the last journaled length: a row is either committed or gone, never twice.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchinfer.errors import OutputError
from batchinfer.layout import STATE_DIR
from batchinfer.redact import redact_text
from batchinfer.statefiles import create_new, write_atomic

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


def _encode(text: str) -> bytes:
    """UTF-8; a file name's bytes that were not UTF-8 (surrogate escapes) are written back as they were."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that came from no file name: shown, not fatal
        return text.encode("utf-8", "backslashreplace")


def format_rows(result: Any, fmt: str, header: bool) -> tuple[bytes, bytes | None]:
    """Serialise a ``run()`` result as (rows, header line or None) in the output format.

    ``txt`` is byte-compatible with ParallelRunStep's append_row: ``str(x)`` per element,
    a DataFrame as its values separated by single spaces, without index.
    ``parquet`` returns an Arrow IPC stream; the parts are assembled into one file at the end.
    """
    frame = _is_frame(result)
    if fmt == "txt":
        if frame:
            head = _encode(" ".join(str(c) for c in result.columns) + "\n") if header else None
            return _encode(result.to_csv(sep=" ", header=False, index=False, lineterminator="\n")), head
        return _encode("".join([f"{x}\n" for x in result])), None
    if fmt == "csv":
        if frame:
            head = _encode(result.head(0).to_csv(index=False, lineterminator="\n"))
            return _encode(result.to_csv(header=False, index=False, lineterminator="\n")), head
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for x in result:
            writer.writerow(x if isinstance(x, (list, tuple)) else [x])
        return _encode(buffer.getvalue()), None
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
#
# The journal is data, never code: each line is a JSON object of the fields of JournalEntry
# (ints, strings, a list of labels), checked on reading. It names mini-batches by id, not by
# descriptor: --retry-failed lists the inputs again to find them (see Scheduler._queue_failed).
# Each line carries the format version "v"; lines without one were written by batchinfer 0.1.0
# (format 1, whose failed entries carried a pickle under "retry": it is never decoded, and the
# journal is rewritten in the current format when it is opened).

JOURNAL_FORMAT = 2
MAX_NUMBER = 2**63 - 1  # a file offset, a count: anything larger is not one of ours
_DIGEST = re.compile(r"[0-9a-f]{0,64}")
_KIND = re.compile(r"[a-z][a-z_]{0,31}")


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
    failed_items: list[str] = field(default_factory=list)  # labels, redacted (see redact.py)

    @property
    def key(self) -> Key:
        """(id, part): a later entry with the same key replaces an earlier one (--retry-failed)."""
        return self.id, tuple(self.part) if self.part else None


# what a journal line may leave out: most mini-batches are whole, tried once, and fully scored
_DEFAULTS = {"part": None, "root_items": None, "failed": 0, "tries": 1, "ok": True, "kind": None,
             "failed_items": []}
_REQUIRED = ("id", "digest", "end", "items", "succeeded")
_KEYS = {1: {*_REQUIRED, *_DEFAULTS, "retry"}, JOURNAL_FORMAT: {"v", *_REQUIRED, *_DEFAULTS}}


def _line(entry: JournalEntry) -> bytes:
    """One compact JSON line: keys at their default value are left out (the hot path)."""
    if entry.ok and entry.part is None and entry.tries == 1 and not entry.failed and entry.kind is None:
        # the common case, written without the json module (ints and a hex digest need no escaping)
        return (f'{{"v":{JOURNAL_FORMAT},"id":{entry.id},"digest":"{entry.digest}","end":{entry.end},'
                f'"items":{entry.items},"succeeded":{entry.succeeded}}}\n').encode()
    data = {"v": JOURNAL_FORMAT, "id": entry.id, "digest": entry.digest, "end": entry.end, "items": entry.items,
            "succeeded": entry.succeeded}
    for key, default in _DEFAULTS.items():
        value = getattr(entry, key)
        if value != default and not (key == "root_items" and entry.part is None):  # only parts need it
            data[key] = value
    return (json.dumps(data, separators=(",", ":")) + "\n").encode()


def open_own_file(path: Path, flags: int, private: bool = True) -> int:
    """Open one of batchinfer's own files in the output folder, never through a link or into a
    FIFO or device that someone put in its place (appending to a link would write to its target).

    ``private``: the file is made readable by the owner only. Raises :class:`OutputError` naming the file.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600 if private else 0o666)
    except OSError as exc:
        what = "is a symbolic link" if exc.errno == errno.ELOOP else f"cannot be opened ({exc.strerror})"
        raise OutputError(f"{path} {what}", hint="batchinfer writes its own files there: remove it, "
                          "or choose another --output") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise OutputError(f"{path} is not a regular file", hint="remove it, or choose another --output")
    os.set_blocking(fd, True)
    if private and flags & os.O_CREAT and stat.S_IMODE(mode) & 0o077:
        with contextlib.suppress(PermissionError):  # someone else's file that we may write: left as it is
            os.fchmod(fd, 0o600)
    return fd


def _new_private_file(path: Path) -> Any:
    """A new owner-only file at ``path`` for writing bytes (see ``statefiles.create_new``)."""
    return os.fdopen(create_new(path, private=True), "wb")


def own_file_size(path: Path) -> int:
    """The size of one of batchinfer's own files (0 when there is none), refusing what open_own_file refuses."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISREG(info.st_mode):
        what = "is a symbolic link" if stat.S_ISLNK(info.st_mode) else "is not a regular file"
        raise OutputError(f"{path} {what}", hint="batchinfer writes its own files there: remove it, "
                          "or choose another --output")
    return info.st_size


class BadLine(ValueError):
    """A journal line that batchinfer did not write (or not this way): why, in a few words."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) < len(keys):
        raise BadLine("a key appears twice")
    return dict(pairs)


def _not_a_number(name: str) -> Any:
    raise BadLine(f"{name} is not a number")


_DECODER = json.JSONDecoder(object_pairs_hook=_unique, parse_constant=_not_a_number)
_NUMBER = rb"(0|[1-9][0-9]{0,18})"
_PLAIN = re.compile(rb'\{"v":%d,"id":%s,"digest":"([0-9a-f]{0,64})","end":%s,"items":%s,"succeeded":%s\}'
                    % (JOURNAL_FORMAT, _NUMBER, _NUMBER, _NUMBER, _NUMBER))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(data: dict[str, Any], key: str, low: int = 0) -> int:
    value = data[key]
    if type(value) is not int or not low <= value <= MAX_NUMBER:  # type(): True is not a number here
        raise BadLine(f"{key} must be a whole number from {low} to 2**63-1, not {_shown(value)}")
    return value


def parse_line(raw: bytes) -> tuple[JournalEntry, int]:
    """One journal line (without its newline) as an entry and the format it was written in.

    Raises :class:`BadLine` for anything batchinfer would not have written.
    """
    plain = _PLAIN.fullmatch(raw)
    if plain:  # the common line, as _line writes it: checked without the json module (a resume reads millions)
        number, digest, end, items, succeeded = plain.groups()
        values = [int(x) for x in (number, end, items, succeeded)]
        if max(values) <= MAX_NUMBER and values[2] == values[3]:
            return JournalEntry(values[0], None, digest.decode(), None, values[1], values[2], values[3], 0, 1, True), 2
    try:
        data = _DECODER.decode(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadLine("not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, BadLine):
            raise
        raise BadLine("not a JSON line") from None
    if not isinstance(data, dict):
        raise BadLine("not a JSON object")
    version = data.get("v", 1)
    if "v" in data and (type(version) is not int or version != JOURNAL_FORMAT):
        if type(version) is int and version > JOURNAL_FORMAT:
            raise BadLine(f"written by a newer batchinfer (journal format {version}; this one reads "
                          f"format {JOURNAL_FORMAT} and 0.1.0's)")
        raise BadLine(f"unknown journal format {_shown(version)}")
    unknown = sorted(set(data) - _KEYS[version])
    if unknown:
        raise BadLine(f"unknown key {_shown(unknown[0])}")
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise BadLine(f"{missing[0]} is missing")
    data = {**_DEFAULTS, **data}
    if data.get("retry") is not None and not isinstance(data["retry"], str):
        raise BadLine("retry must be a string")  # 0.1.0's pickle: checked for type, never decoded
    for key in ("id", "end", "items", "succeeded", "failed"):
        _number(data, key)
    _number(data, "tries", low=1)
    if not isinstance(data["digest"], str) or not _DIGEST.fullmatch(data["digest"]):
        raise BadLine(f"digest must be a hexadecimal string, not {_shown(data['digest'])}")
    if type(data["ok"]) is not bool:
        raise BadLine(f"ok must be true or false, not {_shown(data['ok'])}")
    if data["kind"] is not None and not (isinstance(data["kind"], str) and _KIND.fullmatch(data["kind"])):
        raise BadLine(f"kind must be a failure kind such as 'exception', not {_shown(data['kind'])}")
    labels = data["failed_items"]
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise BadLine("failed_items must be a list of strings")
    if data["succeeded"] + data["failed"] != data["items"]:
        raise BadLine("succeeded + failed is not items")
    if data["ok"] == bool(labels) or (not data["ok"] and data["succeeded"]):
        raise BadLine("ok does not agree with succeeded and failed_items")
    part = data["part"]
    if part is not None:
        if not (isinstance(part, list) and len(part) == 2 and all(type(x) is int for x in part)
                and 0 <= part[0] < part[1] <= MAX_NUMBER):
            raise BadLine(f"part must be [lo, hi] with 0 <= lo < hi, not {_shown(part)}")
        if data["root_items"] is None or _number(data, "root_items") < part[1]:
            raise BadLine("a part needs root_items, at least its end")
    elif data["root_items"] is not None:
        raise BadLine("root_items without part")
    data.pop("v", None)
    data.pop("retry", None)
    return JournalEntry(**data), version


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
        if self.path.exists() or self.path.is_symlink():
            # no output file: none of the rows the journal covers are on disk, they are redone
            limit = own_file_size(output) if output is not None else None
            self._load(limit)
        # the journal names the job's inputs (and, before 0.1.1, held them pickled): the owner's only
        self._file = os.fdopen(open_own_file(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab")
        self._last_sync = time.monotonic()

    def _load(self, limit: int | None) -> None:
        """Read and check the journal; cut off a torn last line and the lines whose rows are not on disk.

        Those two are what a crash or a power cut leaves; anything else that batchinfer would not
        have written (a damaged or forged journal) is an :class:`OutputError` naming the line.
        """
        with os.fdopen(open_own_file(self.path, os.O_RDONLY), "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        lines.pop()  # a torn last line (no newline: the crash came mid-write) was never committed
        parts: dict[int, list[JournalEntry]] = {}  # while loading: the parts of each bisected mini-batch
        migrate = None  # a journal of 0.1.0 is rewritten in the current format, line by line, here
        kept = 0
        for number, raw in enumerate(lines, 1):
            try:
                entry, version = parse_line(raw)
                if number == 1 and version < JOURNAL_FORMAT:
                    migrate = _new_private_file(self.path.with_name(JOURNAL + ".tmp"))
                elif (version < JOURNAL_FORMAT) != (migrate is not None):
                    raise BadLine("journal formats are mixed")
                if entry.end < self.end:
                    raise BadLine(f"end {entry.end} is before the previous line's end ({self.end})")
                if limit is not None and entry.end > limit:
                    break  # its rows never reached the disk (a power cut): that and what follows is redone
                self._check(entry, parts)
            except BadLine as bad:
                if migrate is not None:
                    migrate.close()
                    os.unlink(self.path.with_name(JOURNAL + ".tmp"))
                raise OutputError(
                    f"{self.path}, line {number}: {bad}",
                    hint="the journal was damaged or changed by something other than batchinfer; "
                         "run the job again with --restart to score it from the start in that folder",
                ) from None
            if migrate is not None:  # 0.1.0 wrote labels as they were: credentials too
                entry.failed_items = [redact_text(label) for label in entry.failed_items]
                migrate.write(_line(entry))
            self._remember(entry, loaded=True)
            kept += len(raw) + 1
        if migrate is not None:
            migrate.flush()
            os.fsync(migrate.fileno())
            migrate.close()
            os.replace(self.path.with_name(JOURNAL + ".tmp"), self.path)
        elif kept < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(kept)

    def _check(self, entry: JournalEntry, parts: dict[int, list[JournalEntry]]) -> None:
        """Refuse a line that contradicts an earlier one: only a failed entry may be replaced
        (by --retry-failed, under the same key), and the parts of a mini-batch never overlap."""
        if entry.id in self.done:
            raise BadLine(f"mini-batch {entry.id} was already committed on an earlier line")
        earlier = self.entries.get(entry.key)
        if earlier is not None and earlier.ok:
            raise BadLine(f"mini-batch {entry.id} part {entry.part} was already committed on an earlier line")
        siblings = parts.get(entry.id, [])
        if entry.part is None:
            if siblings:
                raise BadLine(f"mini-batch {entry.id} is whole here but in parts on an earlier line")
            return
        if (entry.id, None) in self.entries:
            raise BadLine(f"mini-batch {entry.id} is in parts here but whole on an earlier line")
        lo, hi = entry.part
        for other in siblings:
            if other.root_items != entry.root_items:
                raise BadLine(f"mini-batch {entry.id}: root_items differs from an earlier line's")
            if other.key != entry.key and other.part[0] < hi and lo < other.part[1]:
                raise BadLine(f"mini-batch {entry.id}: part {entry.part} overlaps part {other.part}")
        siblings.append(entry)
        parts[entry.id] = siblings

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

    def __init__(self, folder: Path, file_name: str, fmt: str, journal: Journal, data_dir: Path | None = None) -> None:
        self.path = (data_dir or folder) / file_name  # data_dir: a pipeline step's output port
        self.fmt = fmt
        self.journal = journal
        self.parts = folder / STATE_DIR / "parts"
        if fmt == "parquet":
            self.parts.mkdir(parents=True, exist_ok=True)
            self._file = None
            return
        self._file = os.fdopen(open_own_file(self.path, os.O_RDWR | os.O_CREAT, private=False), "r+b")
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
        tmp.unlink(missing_ok=True)  # written anew, never through a link left in its place
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
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, never through a link (see ``statefiles.write_atomic``)."""
    write_atomic(path, text.encode("utf-8"))
