"""Find the inputs through fsspec and cut them, lazily, into picklable mini-batch descriptors.

Only descriptors (paths, byte ranges, row-group ids, partition values) leave
this module; workers read the data themselves (``readers.py``). Listing is a
generator: the first mini-batch exists before a big folder is fully listed.

Order: the paths of ``inputs.path`` in the order given; inside a folder or
glob, entries sorted by name, depth first. Names starting with ``.`` are
skipped when walking folders.

What is an input (the README's rules): an entry of ``inputs.path`` that exists
as written is taken literally; otherwise one with ``*``, ``?`` or ``[`` is a
glob; an http(s) URL is never a glob. Every entry must match a file. The job's
output folder, and any other folder holding ``.batchinfer/``, is never walked.
Every name a folder listing shows becomes an item (or, for a folder, is
walked): what cannot be read fails as an item with the reason, never vanishes.

Tables are cut where rows end, in the input's delimiter; the reading keys
(``header``, ``encoding`` ...) travel to the workers in ``WorkerConfig.read_options``,
except the column names a slice needs when its bytes hold no header line of their
own (``TableSlice.names``). ``partition_format`` gives every file values from its
path; a file it does not describe is an error naming the file. With
``partition_keys``, files (or, for tables, rows) with equal values form one
mini-batch (``partitions.py``); partitions need the whole listing before the
first mini-batch, and table files are read only for keys that are columns
rather than path values.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import math
import os
import re
import stat
import threading
from dataclasses import replace
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import fsspec
from fsspec.implementations.local import LocalFileSystem

from batchinfer import storage
from batchinfer.errors import InputError, StorageError
from batchinfer.modelcache import Remote, resolve
from batchinfer.output import STATE_DIR
from batchinfer.protocol import MiniBatch, ReadOptions, TableSlice
from batchinfer.partitions import file_partitions, partition_values, table_partitions
from batchinfer.readers import separator
from batchinfer.redact import for_log, redact_url
from batchinfer.retry import retrying
from batchinfer.rowscan import RowEnds
from batchinfer.spec import WHOLE_FILE_ENCODINGS, BatchSize, InputSpec, JobSpec, is_url

FORMAT_BY_EXTENSION = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
COMPRESSION_EXTENSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")
GLOB_CHARS = re.compile(r"[*?\[]")


class FoundFile(NamedTuple):
    """A file found by the listing, with what the fingerprint needs.

    ``regular`` is False for an entry that is not a regular file (a FIFO, a socket, a device,
    a dangling or looping symbolic link, a file removed while listing): it is still an item,
    never dropped, and its read fails with the reason (see ``readers.py``).
    """

    path: str
    size: int | None
    mtime: float | None
    regular: bool = True


def _why(exc: BaseException) -> str:
    """What went wrong, from the innermost cause (fsspec wraps network errors in others)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return f"HTTP {status} {getattr(exc, 'message', '')}".rstrip()
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _mtime(info: dict[str, Any]) -> float | None:
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if value is None:
        return None
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def _is_http(path: str) -> bool:
    return path.lower().startswith(("http://", "https://"))


def _glob_regex(pattern: str) -> re.Pattern:
    """Translate a glob (``*``, ``?``, ``[...]``, ``**`` across folders) into a regex."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _walk_local(root: str, depth: int | None, skip: frozenset[str], skipped: dict[str, str],
                ordered: bool = True) -> Iterator[str]:
    """Every file under a local folder, sorted by name, depth first (without recursion, so any
    depth is fine). Names are read and sorted a folder at a time and let go once yielded, so a
    folder of 200,000 files costs its names, once; only sub-folders are stat'ed.

    Not walked: names starting with '.', the folders in ``skip`` (the job's output folder), and
    any sub-folder holding ``.batchinfer/`` (another batchinfer output folder). A folder that
    leads back to one it is inside (a symbolic link loop) holds nothing that is not listed
    already: it is not followed, and ``skipped`` says why (the run prints it as a note).

    ``ordered=False`` (counting.py): the same files in no particular order, a folder's names read
    lazily and never kept (only its sub-folders are), so that counting costs no memory per file.
    """
    try:
        top = os.stat(root)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputError(f"cannot read input folder {for_log(root)}: {exc.strerror}",
                         hint="check the folder and its permissions") from None
    # each level: (folder, its depth left, (device, inode), names still to visit, which are folders)
    stack = [(root, depth, (top.st_dev, top.st_ino), *_scan(root, None, ordered))]
    while stack:
        folder, left, _, names, folders = stack[-1]
        if ordered:
            name = names.pop() if names else None
        else:
            name = next(names, None)
        if name is None:
            stack.pop()
            continue
        path = (folder if folder.endswith("/") else folder + "/") + name
        if name not in folders:
            yield path
            continue
        if (left is not None and left <= 1) or path in skip:
            continue
        try:
            info = os.stat(path)
        except FileNotFoundError:
            continue  # removed while we listed: nothing in it was seen
        except OSError as exc:
            raise InputError(f"cannot read input folder {for_log(path)}: {exc.strerror}",
                             hint="check the folder and its permissions") from None
        key = (info.st_dev, info.st_ino)
        loop = next((f for f, _, k, _, _ in stack if k == key), None)
        if loop is not None:  # all it holds is being listed already: following it would never end
            skipped[path] = f"it leads back to {loop} (a symbolic link loop)"
            continue
        sub_names, sub_folders = _scan(path, skipped, ordered)
        stack.append((path, None if left is None else left - 1, key, sub_names, sub_folders))


def _scan(folder: str, skipped: dict[str, str] | None, ordered: bool = True) -> tuple[Any, set[str]]:
    """(names to visit, in reverse order so that pop() gives them in order; which are folders).
    A sub-folder (``skipped`` given: not the top) that holds ``.batchinfer/`` is a batchinfer
    output folder: nothing in it is an input, and ``skipped`` says so. Not ``ordered``: the names
    as an iterator that reads the folder again, lazily (see ``_walk_local``)."""
    names: list[str] = []
    folders: set[str] = set()
    try:
        with os.scandir(folder) as scan:
            for entry in scan:
                if entry.name[0] != ".":
                    if ordered:
                        names.append(entry.name)
                    if _is_folder(entry):
                        folders.add(entry.name)
                elif skipped is not None and entry.name == STATE_DIR and entry.is_dir(follow_symlinks=False):
                    skipped[folder] = f"it is a batchinfer output folder (it holds {STATE_DIR}/)"
                    return ([] if ordered else iter(())), set()
    except (FileNotFoundError, NotADirectoryError):
        return ([] if ordered else iter(())), set()  # removed while we listed: nothing in it was seen
    except OSError as exc:
        raise InputError(f"cannot list input folder {for_log(folder)}: {exc.strerror}",
                         hint="check the folder's permissions") from None
    if not ordered:
        return _names_again(folder), folders
    names.sort(reverse=True)  # popped from the end: in order, and freed as we go
    return names, folders


def _names_again(folder: str) -> Iterator[str]:
    """A folder's names (but '.' ones), read again and lazily: counted, never kept."""
    try:
        with os.scandir(folder) as scan:
            for entry in scan:
                if entry.name[0] != ".":
                    yield entry.name
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise InputError(f"cannot list input folder {for_log(folder)}: {exc.strerror}",
                         hint="check the folder's permissions") from None


def _is_folder(entry: os.DirEntry) -> bool:
    """Whether an entry is a folder, following symbolic links; False for a dangling or looping
    link (which is then listed as an item whose read says why)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _found_local(path: str) -> FoundFile:
    """A listed local name as an item: stat'ed only now, one at a time; never dropped."""
    try:
        info = os.stat(path)
    except OSError:  # dangling or looping link, removed since: an item whose read says why
        return FoundFile(path, None, None, regular=False)
    return FoundFile(path, info.st_size, info.st_mtime, regular=stat.S_ISREG(info.st_mode))


class ListingStopped(Exception):
    """A :class:`Lister` was asked to stop (its ``stop`` event is set) in the middle of a walk."""


def _inside(path: str, folders: frozenset[str]) -> str | None:
    """The folder of ``folders`` that holds (or is) ``path``, if any."""
    return next((f for f in folders if path == f or path.startswith(f.rstrip("/") + "/")), None)


class Lister:
    """Walks one input's paths with fsspec, yielding files lazily in a stable order.

    Each entry of ``inputs.path`` is taken literally when it exists as written (a local name
    with ``?``, ``*`` or ``[`` too); otherwise, if it holds one of those, it is a glob. An
    http(s) URL is never a glob: its query string is part of it. Folders in ``exclude`` (the
    job's output folder) are never part of the inputs.
    """

    def __init__(self, spec: InputSpec, exclude: frozenset[str] = frozenset(), ordered: bool = True,
                 stop: threading.Event | None = None) -> None:
        self.spec = spec
        self.exclude = exclude
        self.ordered = ordered  # False: local folders' files in no order, their names not kept (counting.py)
        self.stop = stop  # once set, the next question to the file system raises ListingStopped (counting.py)
        self.skipped: dict[str, str] = {}  # folders not followed, and why

    def filesystem(self, path: str) -> tuple[fsspec.AbstractFileSystem, str]:
        """The filesystem of ``path`` (an entry of ``inputs.path``, or a file it lists) and the path
        within it; a missing package (``pip install 'batchinfer[s3]'``) or unusable
        storage_options are one StorageError naming the input."""
        try:
            return storage.filesystem(path, self.spec.storage_options)
        except StorageError as exc:
            raise StorageError(f"input {exc.message}", hint=exc.hint) from None

    def _ask(self, path: str, call: Callable[[], Any]) -> Any:
        """``call()`` (a question to the file system about ``path``); whatever goes wrong other
        than 'not found' becomes one error naming the path, not a traceback: on an object store,
        transient errors are asked again, and a missing bucket, refused credentials or denied
        access say so (see ``storage.store_error``). Once ``stop`` is set, :class:`ListingStopped`
        instead: every request of a remote walk comes here, so a stopped walk asks nothing more."""
        if self.stop is not None and self.stop.is_set():
            raise ListingStopped
        try:
            if storage.is_object_store(path):
                return retrying(call, f"listing {redact_url(path)}")
            return call()
        except (InputError, FileNotFoundError):
            raise
        except Exception as exc:
            if storage.is_object_store(path):
                raise storage.store_error(exc, path, "input") from None
            verb = "reach" if is_url(path) else "read"
            raise InputError(
                f"cannot {verb} input {for_log(path)}: {_why(exc)}",
                hint="check the path or URL, the network and inputs.storage_options",
            ) from None

    def _walk(self, fs: fsspec.AbstractFileSystem, root: str, depth: int | None) -> Iterator[str | dict]:
        """Files under a folder: local ones as paths, remote ones as fsspec's info dicts."""
        if isinstance(fs, LocalFileSystem):
            yield from _walk_local(root, depth, self.exclude, self.skipped, self.ordered)  # names: local files
            return
        try:
            entries = self._ask(root, lambda: fs.ls(root, detail=True))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in sorted(entries, key=lambda e: e["name"]):
            name = entry["name"].rstrip("/")
            if name.rsplit("/", 1)[-1].startswith(".") or name == root.rstrip("/"):
                continue
            if entry["type"] == "directory":
                if depth is None or depth > 1:
                    yield from self._walk(fs, name, None if depth is None else depth - 1)
            else:
                yield entry

    def entries(self, path: str) -> Iterator[str | dict]:
        """What one entry of ``inputs.path`` names: a file, a folder's files, or a glob's matches,
        lazily and unfiltered by format: local files as paths (not stat'ed), remote ones as fsspec's
        info dicts (``name`` is a path within :meth:`filesystem`'s filesystem, ``size`` if known)."""
        fs, root = self.filesystem(path)
        local = isinstance(fs, LocalFileSystem)
        if local and (outside := _inside(os.path.normpath(root), self.exclude)):
            raise InputError(
                f"input {for_log(path)} is inside the output folder {for_log(outside)}",
                hint="choose an output folder outside the inputs",
            )
        if _is_http(path):  # literal: a query string is not a glob
            if path.endswith("/"):
                return self._walk(fs, root, None)
            try:
                info = self._ask(path, lambda: fs.info(root))
            except FileNotFoundError as exc:
                raise InputError(f"cannot read input {for_log(path)}: {_why(exc)}",
                                 hint="check the URL and that its server answers") from None
            return iter([info])
        if self._ask(path, lambda: fs.exists(root)):
            if self._ask(path, lambda: fs.isdir(root)):
                return self._walk(fs, root, None)
            return iter([root if local else self._ask(path, lambda: fs.info(root))])
        # the glob starts at the first part with a glob character, unless the folder up to there
        # exists as written (a folder named 'd[1]' is taken literally there too)
        parts = root.split("/")
        static = 0
        while static < len(parts) - 1 and (
            GLOB_CHARS.search(parts[static]) is None
            or self._ask(path, lambda: fs.isdir("/".join(parts[: static + 1])))
        ):
            static += 1
        base = "/".join(parts[:static]) or ("/" if root.startswith("/") else ".")
        rest = "/".join(parts[static:])
        if not GLOB_CHARS.search(rest):
            raise InputError(f"input {for_log(path)} does not exist",
                             hint="input paths are relative to the job spec's folder")
        depth = None if "**" in rest else len(parts) - static
        regex = re.compile(re.escape(base.rstrip("/") + "/") + _glob_regex(rest).pattern)
        return (e for e in self._walk(fs, base, depth) if regex.match(e if isinstance(e, str) else e["name"]))

    def files_of(self, path: str) -> Iterator[FoundFile]:
        """Every file one entry of ``inputs.path`` names, lazily, as local paths or full URLs."""
        url = is_url(path)
        fs = None
        for entry in self.entries(path):
            if isinstance(entry, str):  # a local file, stat'ed only now
                yield _found_local(entry)
                continue
            fs = fs or self.filesystem(path)[0]
            name = entry["name"] if not url or _is_http(entry["name"]) else fs.unstrip_protocol(entry["name"])
            yield FoundFile(name, entry.get("size"), _mtime(entry))


def table_format(path: str, declared: str) -> tuple[str | None, str | None]:
    """(format, compression) of a table file; format None when auto cannot tell."""
    lower = path.lower()
    compression = None
    for ext in COMPRESSION_EXTENSIONS:
        if lower.endswith(ext):
            compression = {"gz": "gzip", "bz2": "bz2", "xz": "xz", "zst": "zstd", "zip": "zip"}[ext[1:]]
            lower = lower[: -len(ext)]
    if declared != "auto":
        return declared, compression
    for ext, fmt in FORMAT_BY_EXTENSION.items():
        if lower.endswith(ext):
            return fmt, compression
    return None, compression


class Header(NamedTuple):
    """How the slices of one CSV file get their column names (see ``inputs.header``)."""

    skip_line: bool  # the file's first line is a header (not data)
    names: tuple[str, ...] | None  # names to use instead of the file's own line (or lack of one)


def _header_names(line: bytes, sep: str, encoding: str) -> tuple[str, ...]:
    """The column names a header line gives (quotes as CSV has them)."""
    text = line.decode(encoding, errors="replace").rstrip("\r\n")
    return tuple(next(csv.reader([text], delimiter=sep), []))


def _split_lines(fs: Any, found: FoundFile, fmt: str, size: BatchSize, options: ReadOptions,
                 first_names: list[tuple[str, ...]]) -> Iterator[TableSlice]:
    """Cut a CSV/TSV/JSON-lines file into slices that start and end where rows end (quote-aware,
    see ``rowscan.py``); CSV: the header row is kept for each slice.

    ``first_names`` holds the names of the input's first file with a header line, once known:
    ``all_files_same_headers`` gives them to a file whose own header differs, ``from_first_file``
    to every later file (whose first line is then data)."""
    total = found.size if found.size is not None else fs.size(found.path)
    sep = separator(found.path, options)
    with fs.open(found.path, "rb") as f:
        rows = RowEnds(f, 0, total, sep.encode() if fmt == "csv" else None)
        header = Header(fmt == "csv" and options.header != "no_header", None)
        if header.skip_line and options.header == "from_first_file" and first_names:
            header = Header(False, first_names[0])
        header_end = rows.skip_rows(1) if header.skip_line else 0
        if header.skip_line and options.header in ("all_files_same_headers", "from_first_file"):
            line = rows.head()
            if line is None:  # a header longer than the scan keeps: read it again
                with fs.open(found.path, "rb") as again:
                    line = again.read(header_end)
            names = _header_names(line, sep, options.encoding)
            if not first_names:
                first_names.append(names)
            elif names != first_names[0]:
                header = Header(True, first_names[0])
        if header_end >= total:
            return  # a header and no rows: nothing to score
        if header.names is not None:  # the bytes read hold no header line: the names go with each slice
            start, kept = header_end, 0
        else:
            start, kept = header_end, header_end
        if size.unit == "bytes" and total - start <= size.value:
            if header.names is None:
                yield TableSlice(found.path, fmt, header_end=kept)
            else:
                yield TableSlice(found.path, fmt, byte_range=(start, total), names=header.names)
            return
        while start < total:
            if size.unit == "bytes":
                end = rows.end_at_or_after(min(start + size.value, total))
            else:
                end = rows.skip_rows(size.value)
            yield TableSlice(found.path, fmt, byte_range=(start, end), header_end=kept, names=header.names)
            start = end


def split_parquet(fs: Any, found: FoundFile, size: BatchSize) -> Iterator[tuple[TableSlice, int]]:
    """Cut a Parquet file by row groups, or by row slices of a row group too big for one batch:
    (slice, its rows). Reads only the footer, through ``fs`` (any fsspec filesystem; ``found.path``
    is a path within it); a corrupt footer raises pyarrow's error, an unreadable file OSError."""
    import pyarrow.parquet as pq

    with fs.open(found.path, "rb") as f:
        meta = pq.ParquetFile(f).metadata
    groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
    if size.unit == "rows":
        starts = list(itertools.accumulate((g.num_rows for g in groups), initial=0))
        for lo in range(0, meta.num_rows, size.value):
            hi = min(lo + size.value, meta.num_rows)
            first = max(i for i, s in enumerate(starts[:-1]) if s <= lo)
            last = max(i for i, s in enumerate(starts[:-1]) if s < hi)
            window = (lo - starts[first], hi - starts[first])
            yield TableSlice(found.path, "parquet", row_groups=tuple(range(first, last + 1)), row_window=window), hi - lo
        return
    pending: list[int] = []
    pending_bytes = pending_rows = 0
    for i, group in enumerate(groups):
        group_bytes = sum(group.column(c).total_compressed_size for c in range(group.num_columns))
        if group.num_rows == 0:
            continue
        if group_bytes > size.value:
            if pending:
                yield TableSlice(found.path, "parquet", row_groups=tuple(pending)), pending_rows
                pending, pending_bytes, pending_rows = [], 0, 0
            pieces = min(math.ceil(group_bytes / size.value), group.num_rows)
            step = math.ceil(group.num_rows / pieces)
            for lo in range(0, group.num_rows, step):
                hi = min(lo + step, group.num_rows)
                yield TableSlice(found.path, "parquet", row_groups=(i,), row_window=(lo, hi)), hi - lo
            continue
        if pending and pending_bytes + group_bytes > size.value:
            yield TableSlice(found.path, "parquet", row_groups=tuple(pending)), pending_rows
            pending, pending_bytes, pending_rows = [], 0, 0
        pending.append(i)
        pending_bytes += group_bytes
        pending_rows += group.num_rows
    if pending:
        yield TableSlice(found.path, "parquet", row_groups=tuple(pending)), pending_rows


TABLE_NAMES = ", ".join(FORMAT_BY_EXTENSION) + " files (optionally compressed)"


def _normalized(folders: Iterable[str | os.PathLike]) -> frozenset[str]:
    """Folders as the walk names them (absolute, normalised), and as their real paths too."""
    out = set()
    for folder in folders:
        path = os.path.normpath(os.path.abspath(folder))
        out.update((path, os.path.realpath(path)))
    return frozenset(out)


class InputPlan:
    """The job's inputs as a lazy stream of :class:`MiniBatch` descriptors.

    ``exclude``: folders that are never inputs, whatever ``inputs.path`` says (the job's
    output folder, which may lie inside an input folder).
    """

    def __init__(self, spec: JobSpec, exclude: Iterable[str | os.PathLike] = ()) -> None:
        self.spec = spec
        skip = _normalized(exclude)
        self.listers = [Lister(i, skip) for i in spec.inputs]
        self.files_seen = 0
        # for counting.Counter (read from its thread): the partitions, once grouped; table slices cut so far
        self.partition_count: int | None = None
        self.batches_listed = 0
        self.current_file_slices = 0  # of the table file being cut now (the files_seen-th)
        self.current_file_cut: tuple[int, int] | None = None  # its (bytes cut so far, size), when cut by bytes
        self.files_without_rows: dict[str, None] = {}  # table files that hold no rows, in order
        self._started: dict[tuple[int, int], Iterator[FoundFile]] = {}  # listings begun by check()
        self.read_options = [i.read_options() for i in spec.inputs]
        self.remotes: list[Remote] = []  # models and side inputs at URLs, once check() has asked their store

    def check(self) -> None:
        """Fail before any worker starts if an entry of ``inputs.path`` is missing or matches no
        file (each entry must match one at least), or a model or side input is missing (at a URL: the
        store says so, or refuses the credentials, or its package is not installed)."""
        self.check_stores()
        for kind, named in (("models", self.spec.models), ("side_inputs", self.spec.side_inputs)):
            for name, location in named.items():
                path = location.path  # a URL is checked by modelcache.resolve, with the store's answer
                if not is_url(path) and not os.path.exists(path):
                    raise InputError(f"{kind}.{name}: {for_log(path)} does not exist", hint="paths are relative to the job spec's folder")
        self.remotes = resolve(self.spec)  # those at URLs: the store's metadata (their versions), no download
        for index, lister in enumerate(self.listers):
            for entry, path in enumerate(lister.spec.path):
                listing = self._entry_files(index, entry)
                first = next(listing, None)
                if first is None:
                    tabular = self.spec.input_type == "tabular"
                    raise InputError(
                        f"no input {'table ' if tabular else ''}files match {for_log(path)}",
                        hint=(f"tabular inputs are {TABLE_NAMES}, or set inputs.format; " if tabular else "")
                        + "paths are relative to the job spec's folder; names starting with '.' are skipped",
                    )
                self._started[(index, entry)] = itertools.chain([first], listing)

    def check_stores(self) -> None:
        """The preflight of every object-store URL the spec names (inputs, models, side_inputs, output):
        its package installed, its bucket there, its credentials accepted (``storage.check_reachable``);
        one StorageError (exit 2) for the first that is not, before anything runs."""
        urls = [(p, i.storage_options, "input") for i in self.spec.inputs for p in i.path]
        for kind, named in (("model", self.spec.models), ("side input", self.spec.side_inputs)):
            for name, location in named.items():  # a path, or a location with its own storage_options
                urls.append((getattr(location, "path", location), self.spec.location_options(location),
                             f"{kind} {name!r}"))
        if self.spec.output is not None and self.spec.output.path != "-":
            urls.append((self.spec.output.path, self.spec.output.storage_options, "output"))
        for url, options, role in urls:
            if is_url(url) and storage.protocol_of(url) not in ("http", "https"):
                storage.check_reachable(url, options, role)

    def _entry_files(self, index: int, entry: int) -> Iterator[FoundFile]:
        """Files of one entry of input ``index``; for tabular inputs, only those of a known format."""
        declared = self.spec.inputs[index].format
        for found in self.listers[index].files_of(self.spec.inputs[index].path[entry]):
            if self.spec.input_type == "file" or table_format(found.path, declared)[0]:
                yield found

    def notes(self) -> list[str]:
        """What the user should know about a listing that went through: files without rows,
        folders not followed (one line each, for stderr)."""
        lines = []
        if self.files_without_rows:
            paths = list(self.files_without_rows)
            shown = ", ".join(for_log(os.path.basename(p)) for p in paths[:5]) + (", ..." if len(paths) > 5 else "")
            lines.append(f"note: {len(paths)} input file{'s hold' if len(paths) > 1 else ' holds'} no rows: {shown}")
        for lister in self.listers:
            for path, why in lister.skipped.items():
                lines.append(f"note: input folder {for_log(path)} was not followed: {for_log(why)}")
        return lines

    def files(self) -> Iterator[tuple[int, FoundFile]]:
        """Every input file with the index of the input it belongs to (a listing that
        :meth:`check` began is taken up where it stopped: a big folder is not listed twice).
        With ``partition_format``, a file whose path does not match it is an error naming it."""
        for index, lister in enumerate(self.listers):
            partition_format = lister.spec.partition_format
            for entry in range(len(lister.spec.path)):
                for found in self._started.pop((index, entry), None) or self._entry_files(index, entry):
                    if partition_format is not None and partition_values(found.path, partition_format) is None:
                        raise InputError(
                            f"input file {for_log(found.path)} does not match partition_format "
                            f"{for_log(partition_format)}",
                            hint="the format matches the end of each path, one {field} per folder or part of a name; "
                            "narrow inputs.path to the files it describes",
                        )
                    self.files_seen += 1
                    yield index, found

    def mini_batches(self) -> Iterator[MiniBatch]:
        """Every mini-batch, lazily, numbered from 0 in a stable order."""
        ids = itertools.count()
        if self.spec.input_type == "file" and self.spec.partition_keys:
            yield from file_partitions(self, ids)
        elif self.spec.input_type == "file":
            assert self.spec.mini_batch_size is not None
            per_batch = self.spec.mini_batch_size.value
            for index, group in itertools.groupby(self.files(), key=lambda pair: pair[0]):
                found_files = (found for _, found in group)
                while chunk := tuple(itertools.islice(found_files, per_batch)):
                    yield MiniBatch(
                        next(ids), index, files=tuple(f.path for f in chunk), known_items=len(chunk),
                        digest=digest(*chunk),
                    )
        elif self.spec.partition_keys:
            yield from table_partitions(self, ids)
        else:
            first_names: dict[int, list[tuple[str, ...]]] = {}  # per input: its first CSV header's names
            for index, found in self.files():
                self.current_file_slices, self.current_file_cut = 0, None
                for table, rows in self._slices(index, found, first_names.setdefault(index, [])):
                    self.batches_listed += 1
                    self.current_file_slices += 1
                    if table.byte_range is not None and found.size:
                        self.current_file_cut = (table.byte_range[1], found.size)
                    yield MiniBatch(next(ids), index, table=table, known_items=rows, digest=digest(found, table.label()))

    def _slices(self, index: int, found: FoundFile, first_names: list[tuple[str, ...]]
                ) -> Iterator[tuple[TableSlice, int | None]]:
        spec_input = self.spec.inputs[index]
        fmt, compression = table_format(found.path, spec_input.format)
        assert fmt is not None and self.spec.mini_batch_size is not None
        options = self.read_options[index]
        whole = fmt != "parquet" and options.encoding in WHOLE_FILE_ENCODINGS
        if compression or whole or not found.regular:
            # a compressed or UTF-16 file cannot be cut by bytes; what is not a regular file is never
            # opened here (a FIFO would block): each is one mini-batch, whose read scores it or says why
            yield TableSlice(found.path, fmt, compression=compression), None
            return
        fs, path = self.listers[index].filesystem(found.path)
        local = FoundFile(path, found.size, found.mtime)
        slices = 0
        try:
            if fmt == "parquet":
                try:
                    cut = list(split_parquet(fs, local, self.spec.mini_batch_size))
                except OSError:
                    raise
                except Exception:  # a corrupt footer: one slice, whose read fails in the worker and says why
                    cut = [(TableSlice(path, fmt), None)]
                for table, rows in cut:
                    slices += 1
                    yield _with_path(table, found.path), rows
            else:
                for table in _split_lines(fs, local, fmt, self.spec.mini_batch_size, options, first_names):
                    slices += 1
                    yield _with_path(table, found.path), None
        except OSError:
            # unreadable now: the rest of the file is one mini-batch, whose read fails with the
            # reason (or succeeds, if the trouble passed); its items are never dropped
            if slices == 0:
                yield TableSlice(found.path, fmt), None
            elif fmt != "parquet" and table.byte_range is not None and table.byte_range[1] < (found.size or 0):
                yield replace(table, path=found.path, byte_range=(table.byte_range[1], found.size or 0)), None
            return
        if slices == 0:
            self.files_without_rows[found.path] = None

def digest(*parts: FoundFile | str) -> str:
    """A short hash of listed files (path, size, modification time) and slice labels. A URL counts
    redacted (its SAS or presigned signature, its ``user:pass@`` rotate); a local path as it is."""
    text = "\0".join(p if isinstance(p, str) else f"{_digest_path(p.path)}|{p.size}|{p.mtime}" for p in parts)
    # surrogateescape: a file name that is not UTF-8 hashes as its bytes
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def _digest_path(path: str) -> str:
    return redact_url(path) if "://" in path else path


def _with_path(table: TableSlice, path: str) -> TableSlice:
    """The same slice named by the user-facing path (a URL keeps its protocol)."""
    return table if table.path == path else replace(table, path=path)


def describe(plan: InputPlan, first: int = 10) -> dict[str, Any]:
    """What ``batchinfer plan`` shows: counts and sizes of the mini-batches, and the first few."""
    batches = 0
    known_items = 0
    unknown = 0
    sizes: list[int] = []
    shown: list[dict[str, Any]] = []
    for batch in plan.mini_batches():
        batches += 1
        if batch.known_items is None:
            unknown += 1
        else:
            known_items += batch.known_items
            sizes.append(batch.known_items)
        if len(shown) < first:
            labels = batch.item_labels()
            shown.append({
                "id": batch.id,
                "items": batch.known_items,
                "first": for_log(labels[0]),
                "last": for_log(labels[-1]) if len(labels) > 1 else None,
            })
    sizes.sort()
    return {
        "input_type": plan.spec.input_type,
        "mini_batch_size": str(plan.spec.mini_batch_size) if plan.spec.mini_batch_size else "by partition",
        "files": plan.files_seen,
        "files_without_rows": len(plan.files_without_rows),
        "mini_batches": batches,
        "items": known_items if not unknown else None,
        "items_known": known_items,
        "mini_batches_counted_when_read": unknown,
        "items_per_mini_batch": (
            {"min": sizes[0], "median": sizes[len(sizes) // 2], "max": sizes[-1]} if sizes else None
        ),
        "workers": plan.spec.worker_count,
        "first_mini_batches": shown,
    }
