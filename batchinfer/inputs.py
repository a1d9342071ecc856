"""Find the inputs through fsspec and cut them, lazily, into picklable mini-batch descriptors.

Only descriptors (paths, byte ranges, row-group ids, partition values) leave
this module; workers read the data themselves (``readers.py``). Listing is a
generator: the first mini-batch exists before a big folder is fully listed.

Order: the paths of ``inputs.path`` in the order given; inside a folder or
glob, entries sorted by name, depth first. Names starting with ``.`` are
skipped when walking folders.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from batchinfer.errors import InputError
from batchinfer.protocol import MiniBatch, Partition, TableSlice
from batchinfer.readers import separator
from batchinfer.rowscan import RowEnds
from batchinfer.spec import BatchSize, InputSpec, JobSpec, is_url

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


@dataclass(frozen=True)
class FoundFile:
    """A file found by the listing, with what the fingerprint needs."""

    path: str
    size: int | None
    mtime: float | None


def _mtime(info: dict[str, Any]) -> float | None:
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if value is None:
        return None
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


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


def _walk_local(root: str, depth: int | None) -> Iterator[dict]:
    """A local folder walk: names only (no stat) are read and sorted before the first file is
    yielded, and each name is let go once yielded, so a folder of 200,000 files costs its
    names, once."""
    names: list[str] = []
    folders: set[str] = set()
    try:
        with os.scandir(root) as scan:
            for entry in scan:
                if entry.name[0] != ".":
                    names.append(entry.name)
                    if entry.is_dir():
                        folders.add(entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    except PermissionError as exc:
        raise InputError(f"cannot list {root}: {exc}", hint="check the folder's permissions") from None
    names.sort(reverse=True)  # popped from the end: in order, and freed as we go
    prefix = root if root.endswith("/") else root + "/"
    while names:
        name = names.pop()
        if name in folders:
            if depth is None or depth > 1:
                yield from _walk_local(prefix + name, None if depth is None else depth - 1)
        else:
            yield {"name": prefix + name, "type": "file", "local": True}


class Lister:
    """Walks one input's paths with fsspec, yielding files lazily in a stable order."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec

    def _fs(self, path: str) -> tuple[fsspec.AbstractFileSystem, str]:
        try:
            return fsspec.core.url_to_fs(path, **self.spec.storage_options)
        except (ImportError, ValueError) as exc:
            raise InputError(f"inputs.path {path!r}: {exc}") from None

    def _walk(self, fs: fsspec.AbstractFileSystem, root: str, depth: int | None) -> Iterator[dict]:
        if isinstance(fs, LocalFileSystem):
            yield from _walk_local(root, depth)
            return
        try:
            entries = fs.ls(root, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return
        except PermissionError as exc:
            raise InputError(f"cannot list {root}: {exc}", hint="check the folder's permissions") from None
        for entry in sorted(entries, key=lambda e: e["name"]):
            name = entry["name"].rstrip("/")
            if name.rsplit("/", 1)[-1].startswith(".") or name == root.rstrip("/"):
                continue
            if entry["type"] == "directory":
                if depth is None or depth > 1:
                    yield from self._walk(fs, name, None if depth is None else depth - 1)
            else:
                yield entry

    def check(self) -> None:
        """Fail early, before any worker starts, on a plain path (not a glob) that does not exist."""
        for path in self.spec.path:
            fs, root = self._fs(path)
            if not GLOB_CHARS.search(root) and not fs.exists(root):
                raise InputError(
                    f"input {path} does not exist",
                    hint="input paths are relative to the job spec's folder",
                )

    def files(self) -> Iterator[FoundFile]:
        """Every file of this input, lazily, paths as local paths or full URLs."""
        for path in self.spec.path:
            fs, root = self._fs(path)
            url = is_url(path)
            if GLOB_CHARS.search(root):
                parts = root.split("/")
                static = next(i for i, p in enumerate(parts) if GLOB_CHARS.search(p))
                base = "/".join(parts[:static]) or ("/" if root.startswith("/") else ".")
                depth = None if "**" in root else len(parts) - static
                regex = _glob_regex(root)
                entries = (e for e in self._walk(fs, base, depth) if regex.match(e["name"]))
            elif fs.isdir(root):
                entries = self._walk(fs, root, None)
            else:
                entries = iter([fs.info(root)]) if fs.exists(root) else iter(())
            for entry in entries:
                if "local" in entry:  # stat only now, one file at a time
                    try:
                        stat = os.stat(entry["name"])
                    except FileNotFoundError:
                        continue  # removed while we listed
                    yield FoundFile(entry["name"], stat.st_size, stat.st_mtime)
                    continue
                name = fs.unstrip_protocol(entry["name"]) if url else entry["name"]
                yield FoundFile(name, entry.get("size"), _mtime(entry))


def _table_format(path: str, declared: str) -> tuple[str | None, str | None]:
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


def _split_lines(fs: Any, found: FoundFile, fmt: str, size: BatchSize) -> Iterator[TableSlice]:
    """Cut a CSV/TSV/JSON-lines file into slices that start and end where rows end (quote-aware,
    see ``rowscan.py``); CSV: the header row is kept for each slice."""
    total = found.size if found.size is not None else fs.size(found.path)
    with fs.open(found.path, "rb") as f:
        rows = RowEnds(f, 0, total, separator(found.path).encode() if fmt == "csv" else None)
        header_end = rows.skip_rows(1) if fmt == "csv" else 0
        if header_end >= total:
            return  # a header and no rows: nothing to score
        if size.unit == "bytes" and total - header_end <= size.value:
            yield TableSlice(found.path, fmt, header_end=header_end)
            return
        start = header_end
        while start < total:
            if size.unit == "bytes":
                end = rows.end_at_or_after(min(start + size.value, total))
            else:
                end = rows.skip_rows(size.value)
            yield TableSlice(found.path, fmt, byte_range=(start, end), header_end=header_end)
            start = end


def _split_parquet(fs: Any, found: FoundFile, size: BatchSize) -> Iterator[tuple[TableSlice, int]]:
    """Cut a Parquet file by row groups, or by row slices of a row group too big for one batch."""
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


class InputPlan:
    """The job's inputs as a lazy stream of :class:`MiniBatch` descriptors."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.listers = [Lister(i) for i in spec.inputs]
        self.files_seen = 0
        self._started: dict[int, Iterator[FoundFile]] = {}  # listings begun by check()

    def check(self) -> None:
        """Fail before any worker starts if a path is missing or nothing matches at all."""
        for kind, named in (("models", self.spec.models), ("side_inputs", self.spec.side_inputs)):
            for name, path in named.items():
                if not is_url(path) and not os.path.exists(path):
                    raise InputError(f"{kind}.{name}: {path} does not exist", hint="paths are relative to the job spec's folder")
        for lister in self.listers:
            lister.check()
        if not any(self._peek(i) for i in range(len(self.listers))):
            patterns = ", ".join(p for i in self.spec.inputs for p in i.path)
            what = "files" if self.spec.input_type == "file" else "CSV, Parquet or JSON-lines files"
            raise InputError(
                f"no input {what} match {patterns}",
                hint="check inputs.path (relative to the job spec's folder); names starting with '.' are skipped",
            )

    def _table_files(self, index: int) -> Iterator[FoundFile]:
        """Files of input ``index``; for tabular inputs, only those of a known format."""
        declared = self.spec.inputs[index].format
        for found in self.listers[index].files():
            if self.spec.input_type == "file" or _table_format(found.path, declared)[0]:
                yield found

    def _peek(self, index: int) -> bool:
        """Whether input ``index`` has a file; the listing started here is kept for :meth:`files`,
        so a big folder is not listed twice before the first mini-batch."""
        listing = self._table_files(index)
        first = next(listing, None)
        if first is None:
            return False
        self._started[index] = itertools.chain([first], listing)
        return True

    def files(self) -> Iterator[tuple[int, FoundFile]]:
        """Every input file with the index of the input it belongs to."""
        for index in range(len(self.listers)):
            for found in self._started.pop(index, None) or self._table_files(index):
                self.files_seen += 1
                yield index, found

    def mini_batches(self) -> Iterator[MiniBatch]:
        """Every mini-batch, lazily, numbered from 0 in a stable order."""
        ids = itertools.count()
        if self.spec.input_type == "file":
            assert self.spec.mini_batch_size is not None
            per_batch = self.spec.mini_batch_size.value
            for index, group in itertools.groupby(self.files(), key=lambda pair: pair[0]):
                found_files = (found for _, found in group)
                while chunk := tuple(itertools.islice(found_files, per_batch)):
                    yield MiniBatch(
                        next(ids), index, files=tuple(f.path for f in chunk), known_items=len(chunk),
                        digest=_digest(*chunk),
                    )
        elif self.spec.partition_keys:
            yield from self._partitions(ids)
        else:
            for index, found in self.files():
                for table, rows in self._slices(index, found):
                    yield MiniBatch(next(ids), index, table=table, known_items=rows, digest=_digest(found, table.label()))

    def _slices(self, index: int, found: FoundFile) -> Iterator[tuple[TableSlice, int | None]]:
        spec_input = self.spec.inputs[index]
        fmt, compression = _table_format(found.path, spec_input.format)
        assert fmt is not None and self.spec.mini_batch_size is not None
        fs, path = self.listers[index]._fs(found.path)
        local = FoundFile(path, found.size, found.mtime)
        if compression:  # a compressed file cannot be cut: it is one mini-batch
            yield TableSlice(found.path, fmt, compression=compression), None
            return
        try:
            if fmt == "parquet":
                try:
                    slices = list(_split_parquet(fs, local, self.spec.mini_batch_size))
                except OSError:
                    raise
                except Exception:  # a corrupt footer: one slice, whose read fails in the worker and says why
                    slices = [(TableSlice(path, fmt), None)]
                for table, rows in slices:
                    yield _with_path(table, found.path), rows
            else:
                for table in _split_lines(fs, local, fmt, self.spec.mini_batch_size):
                    yield _with_path(table, found.path), None
        except OSError as exc:
            raise InputError(f"cannot read {found.path}: {exc}") from None

    def _partitions(self, ids: Iterator[int]) -> Iterator[MiniBatch]:
        """Group rows by ``partition_keys`` across all files (reads only the key columns)."""
        from batchinfer.readers import read_columns

        keys = list(self.spec.partition_keys or [])
        groups: dict[tuple, dict[tuple[str, str], int]] = {}
        index_of: dict[tuple, int] = {}
        found_by_path: dict[str, FoundFile] = {}
        for index, found in self.files():
            found_by_path[found.path] = found
            fmt, _ = _table_format(found.path, self.spec.inputs[index].format)
            assert fmt is not None
            try:
                frame = read_columns(found.path, fmt, keys, self.spec.inputs[index].storage_options)
            except KeyError as exc:
                raise InputError(
                    f"partition_keys: column {exc.args[0]!r} is not in {found.path}",
                    hint="partition_keys must name columns present in every input file",
                ) from None
            for values, count in frame.groupby(keys, dropna=False, sort=True).size().items():
                values = values if isinstance(values, tuple) else (values,)
                files = groups.setdefault(values, {})
                files[(found.path, fmt)] = files.get((found.path, fmt), 0) + int(count)
                index_of.setdefault(values, index)
        for values in sorted(groups, key=lambda v: tuple(str(x) for x in v)):
            files = groups[values]
            partition = Partition(tuple(files), dict(zip(keys, (_plain(v) for v in values))))
            digest = _digest(*(found_by_path[path] for path, _ in partition.files), partition.label())
            yield MiniBatch(next(ids), index_of[values], table=partition, known_items=sum(files.values()), digest=digest)


def _digest(*parts: FoundFile | str) -> str:
    """A short hash of listed files (path, size, modification time) and slice labels."""
    text = "\0".join(p if isinstance(p, str) else f"{p.path}|{p.size}|{p.mtime}" for p in parts)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _with_path(table: TableSlice, path: str) -> TableSlice:
    """The same slice named by the user-facing path (a URL keeps its protocol)."""
    if table.path == path:
        return table
    return TableSlice(path, table.format, table.byte_range, table.header_end, table.row_groups, table.row_window)


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so partition values print and serialise plainly."""
    return value.item() if hasattr(value, "item") else value


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
                "first": labels[0],
                "last": labels[-1] if len(labels) > 1 else None,
            })
    sizes.sort()
    return {
        "input_type": plan.spec.input_type,
        "mini_batch_size": str(plan.spec.mini_batch_size) if plan.spec.mini_batch_size else "by partition",
        "files": plan.files_seen,
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
