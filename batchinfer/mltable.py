"""An MLTable folder as a native ``inputs`` mapping, read the way Azure ML reads it.

:func:`input_from_mltable` turns the folder's ``MLTable`` file into the keys of
``spec.InputSpec`` (``path``, ``type``, ``format``, ``delimiter``, ``header`` ...), so
the rows batchinfer reads equal ``mltable.load(folder).to_pandas_dataframe()`` (Microsoft's
``mltable`` package, the reference in the tests) while mini-batches stay lazy: byte ranges
of CSV and JSON-lines files, row groups of Parquet files. Nothing here reads the data.

What is read how (the README's table):

- ``paths``: ``file``, ``folder``, ``pattern`` (globs, ``**`` too), relative to the MLTable's
  folder; URLs pass through. An MLTable without a ``read_*`` step is a list of files: a
  ``type: file`` input (a ``file`` that names a folder stands for the files in it).
- ``read_delimited``, ``read_parquet``, ``read_json_lines`` and their options; the steps
  ``extract_columns_from_partition_format``, ``drop_columns``, ``keep_columns``,
  ``convert_column_types`` (to int, float, string, boolean; each slice on its own);
  date fields in partition formats (``{PartitionDate:yyyy/MM/dd}``) become datetime columns.
- Steps that need the whole table in order (``take``, ``skip``, ``filter``, samples, ...)
  cannot be applied to mini-batches read lazily: one line naming the step.

Every problem is one :class:`~batchinfer.errors.SpecError` naming the MLTable file and the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from batchinfer.errors import SpecError
from batchinfer.partitions import partition_fields
from batchinfer.spec import COLUMN_TYPES, ENCODINGS, HEADERS, is_url, read_yaml

READ_STEPS = {"read_delimited": "csv", "read_parquet": "parquet", "read_json_lines": "jsonl"}
# each read step's options -> the native key they become (None: accepted, no meaning here)
READ_OPTIONS: dict[str, dict[str, str | None]] = {
    "read_delimited": {
        "delimiter": "delimiter", "header": "header", "encoding": "encoding", "empty_as_string": "empty_as_string",
        "include_path_column": "include_path_column", "infer_column_types": "infer_column_types",
        "support_multi_line": None,  # quoted line breaks are always read as part of the field
        "partition_size": None,  # how Azure splits its own work
        "path_column": "path_column",
    },
    "read_parquet": {"include_path_column": "include_path_column", "path_column": "path_column"},
    "read_json_lines": {
        "invalid_lines": "invalid_lines", "encoding": "encoding", "include_path_column": "include_path_column",
        "partition_size": None, "path_column": "path_column",
    },
}
# steps that need the whole table, in order: a mini-batch read on its own cannot apply them
WHOLE_TABLE_STEPS = {"take", "skip", "filter", "take_random_sample", "sample", "select_partitions"}
COLUMN_STEPS = {"extract_columns_from_partition_format", "drop_columns", "keep_columns", "convert_column_types"}
TOP_LEVEL = {"$schema", "type", "paths", "transformations", "metadata", "traits", "query_source"}


class _Reader:
    """One MLTable file being turned into an ``inputs`` mapping; ``fail`` names the file and key."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.file = folder / "MLTable"

    def fail(self, where: str, message: str, hint: str | None = None) -> SpecError:
        return SpecError(f"{self.file}: {where}: {message}", hint=hint)

    def load(self) -> dict[str, Any]:
        if not self.file.is_file():
            raise SpecError(f"{self.folder}: an MLTable folder needs a file named MLTable in it",
                            hint="give the folder that holds the MLTable file")
        try:
            table = read_yaml(self.file)  # the job spec's own reading: size, encoding, aliases, one-line errors
        except SpecError as exc:
            raise SpecError(exc.message.replace("a job spec", "an MLTable file"),
                            hint="see Azure ML's MLTable reference" if exc.hint and "job spec" in exc.hint else exc.hint) from None
        for key in table:
            if key not in TOP_LEVEL:
                raise self.fail(str(key), "is not an MLTable key", hint=f"known: {', '.join(sorted(TOP_LEVEL))}")
        if "type" in table and table["type"] != "mltable":
            raise self.fail("type", f"must be 'mltable', not {str(table['type'])[:40]!r}")
        if "query_source" in table:
            raise self.fail("query_source", "a database query cannot be read here",
                            hint="export the query's result to files and list them under paths")
        native: dict[str, Any] = {"type": "file", "path": self.paths(table.get("paths"))}
        steps = table.get("transformations")
        if steps is None:
            return native
        if not isinstance(steps, list):
            raise self.fail("transformations", f"must be a list (got {type(steps).__name__})")
        for i, step in enumerate(steps):
            self.step(native, i, step)
        return native

    def paths(self, entries: Any) -> list[str]:
        if entries is None:
            raise self.fail("paths", "is required: list the data as '- file: ./data.csv', '- folder: ./data' "
                                     "or '- pattern: ./**/*.csv'")
        if not isinstance(entries, list) or not entries:
            raise self.fail("paths", "must be a list of file, folder or pattern entries")
        out = []
        for i, entry in enumerate(entries):
            where = f"paths[{i}]"
            if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in ("file", "folder", "pattern"):
                raise self.fail(where, "must be one of 'file: PATH', 'folder: PATH' or 'pattern: GLOB'")
            kind, value = next(iter(entry.items()))
            if not isinstance(value, str) or not value.strip():
                raise self.fail(f"{where}.{kind}", "must be a path")
            out.append(self.path(value, f"{where}.{kind}"))
        return out

    def path(self, value: str, where: str) -> str:
        if value.startswith("azureml:"):
            raise self.fail(where, f"{value[:80]!r} is an Azure ML datastore or asset, which batchinfer cannot reach",
                            hint="download the data and give a local path or an fsspec URL in the MLTable, "
                                 "or bind the input to a local folder with --input")
        if value.startswith("file://"):
            value = value[len("file://"):]
        if is_url(value):
            return value
        return os.path.normpath(self.folder / value)

    def step(self, native: dict[str, Any], i: int, step: Any) -> None:
        if isinstance(step, str):
            name, args = step, None
        elif isinstance(step, dict) and len(step) == 1:
            name, args = next(iter(step.items()))
        else:
            raise self.fail(f"transformations[{i}]", "each step is a name or one 'name: options' mapping")
        where = f"transformations[{i}].{name}"
        if name in READ_STEPS:
            self.read_step(native, where, name, args)
        elif name == "read_delta_lake":
            raise self.fail(where, "Delta Lake tables cannot be read here",
                            hint="read the table's Parquet files with read_parquet, or export them")
        elif name in WHOLE_TABLE_STEPS:
            raise self.fail(where, f"cannot be applied lazily to mini-batches: '{name}' needs the whole table "
                                   "in order, which batchinfer never reads at once",
                            hint=f"remove '{name}' and do it in run(), or prepare the data beforehand")
        elif name == "convert_column_types":
            if native["type"] != "tabular":
                raise self.fail(where, "works on columns: it needs a read step before it")
            native["column_types"] = {**native.get("column_types", {}), **self.column_types(where, args)}
        elif name in COLUMN_STEPS:
            self.column_step(native, where, name, args)
        else:
            known = sorted({*READ_STEPS, *COLUMN_STEPS})
            raise self.fail(where, "is not a transformation batchinfer knows", hint=f"known: {', '.join(known)}")

    def read_step(self, native: dict[str, Any], where: str, name: str, args: Any) -> None:
        if native["type"] == "tabular":
            raise self.fail(where, "a second read step: an MLTable reads its files once")
        if any(k in native for k in ("partition_format", "drop_columns", "keep_columns", "column_types")):
            raise self.fail(where, "must come before the steps that work on columns")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise self.fail(where, f"its options must be a mapping (got {type(args).__name__})")
        native.update(type="tabular", format=READ_STEPS[name])
        if name == "read_delimited":  # MLTable's defaults, which differ from batchinfer's own
            native.update(header="all_files_same_headers", empty_as_string=False)
        for key, value in args.items():
            if key not in READ_OPTIONS[name]:
                raise self.fail(f"{where}.{key}", "is not an option of this step",
                                hint=f"known: {', '.join(READ_OPTIONS[name])}")
            target = READ_OPTIONS[name][key]
            if target is not None:
                native[target] = self.option(f"{where}.{key}", key, value)
            if key == "infer_column_types" and isinstance(value, dict) and "column_type_overrides" in value:
                native["column_types"] = self.column_types(f"{where}.{key}.column_type_overrides",
                                                           value["column_type_overrides"])
        if native.pop("path_column", "Path") != "Path":
            raise self.fail(f"{where}.path_column", "only the default name 'Path' is supported",
                            hint="remove path_column and rename the column in run()")

    def option(self, where: str, key: str, value: Any) -> Any:
        if key in ("include_path_column", "empty_as_string"):
            if not isinstance(value, bool):
                raise self.fail(where, f"must be true or false (got {str(value)[:40]!r})")
            return value
        if key == "infer_column_types":
            if isinstance(value, bool):
                return value
            if isinstance(value, dict) and set(value) <= {"sample_size", "column_type_overrides"}:
                return True  # types are inferred per mini-batch, from its own rows; overrides: read_step
            raise self.fail(where, "must be true, false or a mapping of sample_size and column_type_overrides")
        if not isinstance(value, str):
            raise self.fail(where, f"must be text (got {type(value).__name__})")
        if key == "header" and value not in HEADERS:
            raise self.fail(where, f"{value[:40]!r} is not one of {', '.join(HEADERS)}")
        if key == "encoding" and value.lower() not in ENCODINGS:
            raise self.fail(where, f"{value[:40]!r} is not one of {', '.join(ENCODINGS)}")
        if key == "delimiter" and (len(value) != 1 or len(value.encode("utf-8")) != 1 or value in "\r\n\""):
            raise self.fail(where, f"{value[:10]!r}: batchinfer reads a delimiter of one single-byte character",
                            hint="use one character such as ',', ';', '|' or '\\t'")
        if key == "invalid_lines" and value not in ("error", "drop"):
            raise self.fail(where, f"{value[:40]!r} is not one of error, drop")
        return value

    def column_types(self, where: str, entries: Any) -> dict[str, str]:
        """convert_column_types (or column_type_overrides): [{columns: a | [a, b], column_type: int}, ...]."""
        if not isinstance(entries, list):
            raise self.fail(where, "must be a list of {columns: ..., column_type: ...}")
        types: dict[str, str] = {}
        for i, entry in enumerate(entries):
            here = f"{where}[{i}]"
            if not isinstance(entry, dict) or set(entry) != {"columns", "column_type"}:
                raise self.fail(here, "must be a mapping of columns and column_type")
            columns, kind = entry["columns"], entry["column_type"]
            columns = [columns] if isinstance(columns, str) else columns
            if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
                raise self.fail(f"{here}.columns", "must be a column name or a list of them (a pattern is not supported)")
            if kind not in COLUMN_TYPES:
                shown = next(iter(kind)) if isinstance(kind, dict) and kind else str(kind)[:40]
                options = " with options" if isinstance(kind, dict) else ""
                raise self.fail(f"{here}.column_type", f"{shown!r}{options} is not supported: batchinfer converts "
                                                       f"to {', '.join(COLUMN_TYPES)} (plain names)",
                                hint="remove it and convert the column in run() (pandas to_datetime, astype)")
            types.update(dict.fromkeys(columns, kind))
        return types

    def column_step(self, native: dict[str, Any], where: str, name: str, args: Any) -> None:
        if name == "extract_columns_from_partition_format":
            fmt = args.get("partition_format") if isinstance(args, dict) else None
            if not isinstance(fmt, str):
                raise self.fail(where, "needs partition_format: '{column}/{other}/{file_name}.csv'")
            if "partition_format" in native:
                raise self.fail(where, "a second partition format: give one")
            try:
                partition_fields(fmt)
            except ValueError as exc:
                raise self.fail(f"{where}.partition_format", str(exc)) from None
            native["partition_format"] = fmt
            return
        if native["type"] != "tabular":
            raise self.fail(where, "works on columns: it needs a read step (read_delimited, read_parquet, "
                                   "read_json_lines) before it")
        if isinstance(args, str):
            args = [args]
        if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
            raise self.fail(where, "must be a column name or a list of them (a pattern is not supported)",
                            hint="list the columns by name")
        if name == "drop_columns":
            native["drop_columns"] = [*native.get("drop_columns", []), *args]
        else:
            kept = native.get("keep_columns")
            native["keep_columns"] = list(args) if kept is None else [c for c in kept if c in args]


def input_from_mltable(folder: str | Path) -> dict[str, Any]:
    """The native ``inputs`` mapping (``InputSpec``'s keys) for the MLTable folder ``folder``.

    Paths come back absolute (or as URLs); raises :class:`SpecError`, one line naming the
    MLTable file and the key, for anything malformed or that cannot be read lazily.
    """
    return _Reader(Path(os.path.realpath(folder))).load()
