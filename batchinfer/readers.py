"""In the worker: turn a mini-batch descriptor into what ``run()`` receives.

File inputs become a ``list[str]`` of local paths (remote files are fetched
into the worker's private folder first); table slices become a
``pandas.DataFrame`` read from just the bytes or row groups they name.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

from batchinfer.protocol import MiniBatch, Partition, TableSlice


def is_url(path: str) -> bool:
    """True for fsspec URLs (the same rule as the spec's)."""
    return "://" in path and not path.startswith("file://")


def _open(path: str, storage_options: dict[str, Any], compression: str | None = None):
    """Open a file for reading: plain open() for local files, fsspec for URLs and compression."""
    if not is_url(path) and compression is None:
        return open(path, "rb")
    import fsspec

    return fsspec.open(path, "rb", compression=compression, **storage_options).open()


def fetch_files(paths: tuple[str, ...], storage_options: dict[str, Any], make_folder: Callable[[], str]) -> list[str]:
    """Local paths for ``paths``: local files as they are, URLs downloaded into a folder that
    ``make_folder()`` creates only when there is something to download."""
    local = []
    folder = None
    for i, path in enumerate(paths):
        if not is_url(path):
            local.append(path)
            continue
        import fsspec

        folder = folder or make_folder()
        fs, remote = fsspec.core.url_to_fs(path, **storage_options)
        target = os.path.join(folder, f"{i:06d}-{os.path.basename(remote.rstrip('/'))}")
        fs.get(remote, target)
        local.append(target)
    return local


def separator(path: str) -> str:
    """The delimiter of a CSV file: a tab for ``.tsv`` files, else a comma."""
    return "\t" if ".tsv" in path.lower() else ","


def _read_lines(table: TableSlice, storage_options: dict[str, Any]):
    """A CSV or JSON-lines slice: the header line plus the slice's byte range."""
    import pandas as pd

    with _open(table.path, storage_options, table.compression) as f:
        if table.byte_range is None:
            data = f.read()
        else:
            header = f.read(table.header_end) if table.header_end else b""
            f.seek(table.byte_range[0])
            data = header + f.read(table.byte_range[1] - table.byte_range[0])
    if table.format == "jsonl":
        return pd.read_json(io.BytesIO(data), lines=True)
    return pd.read_csv(io.BytesIO(data), sep=separator(table.path))


def _read_parquet(table: TableSlice, storage_options: dict[str, Any]):
    """A Parquet slice: the named row groups, then the row window inside them."""
    import pyarrow.parquet as pq

    with _open(table.path, storage_options) as f:
        parquet = pq.ParquetFile(f)
        groups = table.row_groups if table.row_groups is not None else range(parquet.num_row_groups)
        arrow = parquet.read_row_groups(list(groups))
    if table.row_window is not None:
        lo, hi = table.row_window
        arrow = arrow.slice(lo, hi - lo)
        return arrow.to_pandas().reset_index(drop=True)
    return arrow.to_pandas()


def read_table(table: TableSlice, storage_options: dict[str, Any]):
    """Read one table slice into a DataFrame."""
    if table.format == "parquet":
        return _read_parquet(table, storage_options)
    frame = _read_lines(table, storage_options)
    if table.row_window is not None:
        frame = frame.iloc[table.row_window[0] : table.row_window[1]].reset_index(drop=True)
    return frame


def read_columns(path: str, fmt: str, columns: list[str], storage_options: dict[str, Any]):
    """Just some columns of a whole file (for partitioning); KeyError names a missing column."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with _open(path, storage_options) as f:
            names = pq.ParquetFile(f).schema_arrow.names
            for column in columns:
                if column not in names:
                    raise KeyError(column)
            f.seek(0)
            return pq.read_table(f, columns=columns).to_pandas()
    frame = read_table(TableSlice(path, fmt), storage_options)
    for column in columns:
        if column not in frame.columns:
            raise KeyError(column)
    return frame[columns]


def read_partition(partition: Partition, storage_options: dict[str, Any]):
    """The rows of every file whose key columns equal the partition's values."""
    import pandas as pd

    parts = []
    for path, fmt in partition.files:
        frame = read_table(TableSlice(path, fmt), storage_options)
        mask = pd.Series(True, index=frame.index)
        for column, value in partition.values.items():
            mask &= frame[column].isna() if _is_missing(value) else frame[column] == value
        parts.append(frame[mask])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def read_mini_batch(batch: MiniBatch, storage_options: dict[str, Any], make_folder: Callable[[], str]):
    """What ``run()`` receives for ``batch``: a list of local paths or a DataFrame."""
    if batch.table is None:
        return fetch_files(batch.files, storage_options, make_folder)
    if isinstance(batch.table, Partition):
        return read_partition(batch.table, storage_options)
    return read_table(batch.table, storage_options)
