"""In the worker: turn a mini-batch descriptor into what ``run()`` receives.

Table slices become a ``pandas.DataFrame`` read from just the bytes or row groups
they name: a remote CSV/JSON-lines slice is two ranged GETs (its header line and
its bytes), a remote Parquet slice the footer and its row groups' column chunks.
File inputs are fetched by ``fetch.py``.
"""

from __future__ import annotations

import io
import json
import os
import stat
from typing import Any

from batchinfer.partitions import partition_values
from batchinfer.protocol import MiniBatch, Partition, ReadOptions, TableSlice
from batchinfer.redact import redact_url
from batchinfer.retry import retrying

DEFAULTS = ReadOptions()


def is_url(path: str) -> bool:
    """True for fsspec URLs (the same rule as the spec's)."""
    return "://" in path and not path.startswith("file://")


KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
         (stat.S_ISDIR, "a folder"))


def check_regular(path: str) -> None:
    """Raise (naming the path and why) unless ``path`` is a regular file: a FIFO or a device
    would block or never end, so no script is handed one, and no worker opens one."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise OSError(exc.errno, f"{path!r} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in KINDS if test(mode)), "not a regular file")
        raise OSError(f"{path!r} is {kind}, not a regular file")


def _open(path: str, storage_options: dict[str, Any], compression: str | None = None, exact: bool = False):
    """Open a file for reading: plain open() for local files, fsspec for URLs and compression.

    ``exact``: each read of a remote file fetches just the bytes asked for (Parquet: the footer,
    then the column chunks of the row groups read), not fsspec's default read-ahead blocks
    (5 MB for s3fs, 4 MB for adlfs), which for a slice of a file can be most of the file."""
    if not is_url(path):
        check_regular(path)
        if compression is None:
            return open(path, "rb")
    import fsspec

    extra = {"cache_type": "none"} if exact and compression is None else {}
    # expand=False: fsspec never reads '?', '*' or '[' in the name as a glob
    return fsspec.open(path, "rb", compression=compression, expand=False, **extra, **storage_options).open()


def _remote_bytes(table: TableSlice, storage_options: dict[str, Any]) -> bytes:
    """A remote CSV/JSON-lines slice's bytes: its header line and its byte range, one ranged GET each
    (the whole object only for a slice that is the whole file), retried as every store read is."""
    from batchinfer.storage import filesystem

    fs, path = filesystem(table.path, storage_options)
    what = f"reading {redact_url(table.path)}"
    if table.byte_range is None:
        return retrying(lambda: fs.cat_file(path), what)
    header = retrying(lambda: _ranged(fs, path, 0, table.header_end), what) if table.header_end else b""
    start, end = table.byte_range
    return header + retrying(lambda: _ranged(fs, path, start, end), what)


def _ranged(fs: Any, path: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of a remote file (a server that ignores Range sends all of it: cut it here)."""
    data = fs.cat_file(path, start=start, end=end)
    return data[start:end] if len(data) > end - start else data


def separator(path: str, options: ReadOptions = DEFAULTS) -> str:
    """The delimiter of a CSV file: ``inputs.delimiter``, else a tab for ``.tsv`` files, else a comma."""
    if options.delimiter is not None:
        return options.delimiter
    return "\t" if ".tsv" in path.lower() else ","


def finish(frame: Any, path: str, options: ReadOptions) -> Any:
    """Add the path and partition columns and drop or keep columns, as MLTable's steps do: the
    ``Path`` column first, the partition columns last, then ``drop_columns``, then ``keep_columns``
    (which keeps the table's order)."""
    if options.include_path_column:
        frame.insert(0, "Path", path)
    if options.partition_format is not None:
        import pandas as pd

        values = partition_values(path, options.partition_format)
        if values is None:
            raise ValueError(f"{path!r} does not match partition_format {options.partition_format!r}")
        dates = {k: v for k, v in values.items() if not isinstance(v, str)}
        for name, value in values.items():  # MLTable adds the text columns first, then the dates
            if name not in dates:
                frame[name] = value
        for name, value in dates.items():
            frame[name] = pd.Timestamp(value)
    for column, kind in options.column_types:
        if column in frame.columns:
            frame[column] = _converted(frame[column], kind)
    if options.drop_columns:
        frame = frame.drop(columns=[c for c in options.drop_columns if c in frame.columns])
    if options.keep_columns is not None:
        frame = frame[[c for c in frame.columns if c in options.keep_columns]]
    return frame


TRUE_WORDS = frozenset(("true", "t", "1"))
FALSE_WORDS = frozenset(("false", "f", "0"))


def _converted(column: Any, kind: str) -> Any:
    """A column converted as MLTable's convert_column_types does: what does not convert is missing;
    an int column with a missing value is float (as pandas holds it); booleans are true/t/1, false/f/0."""
    import numpy as np
    import pandas as pd

    if kind == "string":
        return column.map(lambda v: None if _is_missing(v) else str(v)).astype(object)
    if kind == "boolean":
        def word(v: Any) -> Any:
            text = str(v).strip().lower()
            return True if text in TRUE_WORDS else False if text in FALSE_WORDS else None
        values = column.map(lambda v: None if _is_missing(v) else word(v)).astype(object)
        return values.astype(bool) if values.notna().all() else values
    numbers = pd.to_numeric(column.map(lambda v: str(v).strip() if isinstance(v, str) else v), errors="coerce")
    numbers = numbers.astype(float)
    if kind == "float":
        return numbers
    numbers = np.trunc(numbers)
    return numbers.astype("int64") if numbers.notna().all() else numbers


def _csv_options(options: ReadOptions) -> dict[str, Any]:
    """pandas' read_csv arguments for the reading keys."""
    kwargs: dict[str, Any] = {"encoding": options.encoding}
    if options.empty_as_string:
        kwargs["na_filter"] = False  # an empty field is an empty string
    elif options.empty_as_string is False:
        kwargs.update(keep_default_na=False, na_values=[""])  # only an empty field is missing, not 'NA'
    if not options.infer_column_types:
        kwargs["dtype"] = object if options.empty_as_string is not None else str
    return kwargs


def _valid_json_lines(data: bytes, encoding: str) -> bytes:
    """invalid_lines: drop: only the lines that are JSON objects."""
    kept = []
    for line in data.decode(encoding).splitlines():
        try:
            if isinstance(json.loads(line), dict):
                kept.append(line)
        except ValueError:
            continue
    return "\n".join(kept).encode("utf-8")


def _read_bytes(table: TableSlice, storage_options: dict[str, Any]) -> bytes:
    with _open(table.path, storage_options, table.compression) as f:
        if table.byte_range is None:
            return f.read()
        header = f.read(table.header_end) if table.header_end else b""
        f.seek(table.byte_range[0])
        return header + f.read(table.byte_range[1] - table.byte_range[0])


def _read_lines(table: TableSlice, storage_options: dict[str, Any], options: ReadOptions):
    """A CSV or JSON-lines slice: the header line (if the slice names none itself) plus its byte range."""
    import pandas as pd

    if is_url(table.path) and table.compression is None:
        data = _remote_bytes(table, storage_options)
    elif is_url(table.path):  # a compressed file is read whole, as a stream
        data = retrying(lambda: _read_bytes(table, storage_options), f"reading {redact_url(table.path)}")
    else:
        data = _read_bytes(table, storage_options)
    if table.format == "jsonl":
        encoding = options.encoding
        if options.invalid_lines == "drop":
            data, encoding = _valid_json_lines(data, encoding), "utf-8"
            if not data:
                return pd.DataFrame()
        elif encoding not in ("utf-8", "utf-8-sig"):
            data, encoding = data.decode(encoding).encode("utf-8"), "utf-8"
        return pd.read_json(io.BytesIO(data), lines=True, encoding=encoding)
    sep = separator(table.path, options)
    kwargs = _csv_options(options)
    if options.column_types and "dtype" not in kwargs:  # converted columns start from their text
        kwargs["dtype"] = {c: object for c, _ in options.column_types}
        if options.header == "no_header":  # Column<n> is column n-1 of the file
            kwargs["dtype"] = {int(c[6:]) - 1: object for c, _ in options.column_types
                               if c.startswith("Column") and c[6:].isdigit() and int(c[6:]) > 0}
    if options.header == "no_header":
        frame = pd.read_csv(io.BytesIO(data), sep=sep, header=None, **kwargs)
        frame.columns = [f"Column{i + 1}" for i in range(frame.shape[1])]  # MLTable's names
        return frame
    if table.names is not None:
        return pd.read_csv(io.BytesIO(data), sep=sep, header=None, names=list(table.names), **kwargs)
    return pd.read_csv(io.BytesIO(data), sep=sep, **kwargs)


def _read_row_groups(table: TableSlice, storage_options: dict[str, Any]):
    import pyarrow.parquet as pq

    with _open(table.path, storage_options, exact=True) as f:
        parquet = pq.ParquetFile(f)
        groups = table.row_groups if table.row_groups is not None else range(parquet.num_row_groups)
        return parquet.read_row_groups(list(groups))


def _read_parquet(table: TableSlice, storage_options: dict[str, Any]):
    """A Parquet slice: the named row groups, then the row window inside them."""
    if is_url(table.path):
        arrow = retrying(lambda: _read_row_groups(table, storage_options), f"reading {redact_url(table.path)}")
    else:
        arrow = _read_row_groups(table, storage_options)
    if table.row_window is not None:
        lo, hi = table.row_window
        arrow = arrow.slice(lo, hi - lo)
        return arrow.to_pandas().reset_index(drop=True)
    return arrow.to_pandas()


def read_table(table: TableSlice, storage_options: dict[str, Any], options: ReadOptions = DEFAULTS):
    """Read one table slice into a DataFrame, with the input's reading keys applied."""
    if table.format == "parquet":
        return finish(_read_parquet(table, storage_options), table.path, options)
    frame = _read_lines(table, storage_options, options)
    if table.row_window is not None:
        frame = frame.iloc[table.row_window[0] : table.row_window[1]].reset_index(drop=True)
    return finish(frame, table.path, options)


def read_columns(path: str, fmt: str, columns: list[str], storage_options: dict[str, Any],
                 options: ReadOptions = DEFAULTS):
    """Just some columns of a whole file (for partitioning); KeyError names a missing column."""
    if fmt == "parquet" and options == DEFAULTS:
        import pyarrow.parquet as pq

        with _open(path, storage_options) as f:
            names_ = pq.ParquetFile(f).schema_arrow.names
            for column in columns:
                if column not in names_:
                    raise KeyError(column)
            f.seek(0)
            return pq.read_table(f, columns=columns).to_pandas()
    frame = read_table(TableSlice(path, fmt), storage_options, options)
    for column in columns:
        if column not in frame.columns:
            raise KeyError(column)
    return frame[columns]


def read_partition(partition: Partition, storage_options: dict[str, Any], options: ReadOptions = DEFAULTS):
    """The rows of every file whose key columns equal the partition's values."""
    import pandas as pd

    parts = []
    for path, fmt in partition.files:
        frame = read_table(TableSlice(path, fmt), storage_options, options)
        mask = pd.Series(True, index=frame.index)
        for column, value in partition.values.items():
            mask &= frame[column].isna() if _is_missing(value) else frame[column] == value
        parts.append(frame[mask])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def read_rows(batch: MiniBatch, storage_options: dict[str, Any], options: ReadOptions = DEFAULTS):
    """What ``run()`` receives for a table mini-batch: a DataFrame (file mini-batches: see fetch.py)."""
    if isinstance(batch.table, Partition):
        return read_partition(batch.table, storage_options, options)
    assert batch.table is not None, "file mini-batches are fetched by fetch.py"
    return read_table(batch.table, storage_options, options)
