"""The job spec: load the YAML safely, expand ``${VAR}``, apply ``--set``, validate once.

Everything after :func:`load_spec` trusts the typed :class:`JobSpec` it returns:
paths are absolute (or fsspec URLs), defaults are filled in, and
``mini_batch_size`` is parsed into a :class:`BatchSize`.
"""

from __future__ import annotations

import datetime
import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from batchinfer.errors import SpecError
from batchinfer.layout import file_name_problem
from batchinfer.partitions import partition_fields
from batchinfer.protocol import ReadOptions
from batchinfer.redact import register_secrets, secret_values
from batchinfer.safeyaml import (
    MAX_DEPTH,
    MAX_SPEC_BYTES,
    FileTooLargeError,
    NotRegularFileError,
    YamlLimitError,
    load_yaml_text,
    read_capped,
    shown,
    yaml_error_text,
)

NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
RAY_ADDRESS = re.compile(r"^(ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][-A-Za-z0-9_.]*):[0-9]{1,5}$")  # host:port, ray://host:port
SIZE_PATTERN = re.compile(r"^([0-9]+)\s*([kKmMgG][bB])?$")
ROWS_PATTERN = re.compile(r"^([0-9]+)\s*rows?$", re.IGNORECASE)
COUNT_PATTERN = re.compile(r"^[0-9]+$")
VAR_PATTERN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
UNITS = {"": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
DEFAULT_FILE_BATCH = 10
DEFAULT_TABULAR_BATCH = "1MB"
TABULAR_FORMATS = ("csv", "parquet", "jsonl")

# Limits: a real job spec is a few kilobytes with a few hundred values, nested a few levels.
# They make a hostile or broken spec fail at once, in one line, instead of after minutes
# (an alias bomb), with a RecursionError (deep nesting) or deep inside a run (a huge count).
MAX_INT = 2**63 - 1  # thresholds: what int64 and C code accept
MAX_PATH_BYTES = 4096  # PATH_MAX of Linux
MAX_BATCH_COUNT = 10**9  # files or rows per mini-batch
MAX_BATCH_BYTES = 1024 * 1024**3  # 1024GB: more than any one file
MAX_PROCESSES = 1024  # per node, and nodes
MAX_TRIES = 100
MAX_TIMEOUT = 30 * 24 * 3600  # seconds: 30 days


def is_url(path: str) -> bool:
    """True for fsspec URLs such as ``s3://bucket/key`` (but not ``file://`` or local paths)."""
    return "://" in path and not path.startswith("file://")


def _check_path_text(value: str) -> None:
    """A path no file system can hold is a mistake in the spec, not an error deep in a run."""
    if "\0" in value:
        raise ValueError(f"{shown(value)} contains a NUL byte, which no path can hold")
    if len(value.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise ValueError(f"{shown(value)} is longer than {MAX_PATH_BYTES} bytes, too long for a path")


def _resolve_path(value: str, info: ValidationInfo) -> str:
    """Make a local path absolute against the YAML's folder; leave URLs alone."""
    if not value:
        raise ValueError("must not be empty (use '.' for the job spec's folder)")
    _check_path_text(value)
    if value.startswith("file://"):
        value = value[len("file://") :]
    if is_url(value):
        return value
    base = Path((info.context or {}).get("base_dir", "."))
    return os.path.normpath(base / os.path.expanduser(value))


class BatchSize(BaseModel):
    """A parsed ``mini_batch_size``: a number of files, a number of bytes, or a number of rows."""

    model_config = ConfigDict(frozen=True)
    unit: Literal["files", "bytes", "rows"]
    value: int = Field(ge=1)

    def __str__(self) -> str:
        return f"{self.value} {self.unit}"


def parse_batch_size(raw: Any, input_type: str) -> BatchSize:
    """Parse ``mini_batch_size`` for an input type; raise ``ValueError`` with a fix-it message."""
    if isinstance(raw, str):
        text = raw.strip()
    else:  # a number as YAML reads it; true, 1.5, lists: matched by no pattern below
        text = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else ""
    if input_type == "file":
        if not COUNT_PATTERN.match(text) or _bounded(text, "files") < 1:
            raise ValueError(f"must be a whole number of files >= 1 for file inputs, not {shown(raw)}")
        return BatchSize(unit="files", value=int(text))
    rows = ROWS_PATTERN.match(text)
    if rows:
        if _bounded(rows.group(1), "rows") < 1:
            raise ValueError("must be at least 1row")
        return BatchSize(unit="rows", value=int(rows.group(1)))
    size = SIZE_PATTERN.match(text)
    if not size or _bounded(size.group(1), "bytes") < 1:
        raise ValueError(
            "must be a size in bytes such as 1024, 100KB, 10MB, 1GB, or a row count such as 5000rows, "
            f"not {shown(raw)}"
        )
    value = int(size.group(1)) * UNITS[(size.group(2) or "").lower()]
    if value > MAX_BATCH_BYTES:
        raise ValueError(f"{shown(raw)} is too large: at most 1024GB per mini-batch")
    return BatchSize(unit="bytes", value=value)


def _bounded(digits: str, unit: str) -> int:
    """The number ``digits``; past what counting and slicing accept (islice stops at sys.maxsize) it is an error."""
    limit = MAX_BATCH_BYTES if unit == "bytes" else MAX_BATCH_COUNT
    if len(digits.lstrip("0")) > len(str(limit)) or int(digits) > limit:
        shown_limit = "1024GB" if unit == "bytes" else f"{limit} {unit}"
        raise ValueError(f"{shown(digits, 30)} is too large: at most {shown_limit} per mini-batch")
    return int(digits)


class StrictModel(BaseModel):
    """Base for spec models: unknown keys are errors, values are checked strictly enough."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads true as 1 for an int or float field; in a job spec it is a mistake
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool) and annotation in (int, float):
            raise ValueError(f"must be a number, not {str(value).lower()}")
        return value


HEADERS = ("all_files_different_headers", "all_files_same_headers", "from_first_file", "no_header")
# MLTable's encoding names -> Python's codecs. UTF-8 drops a leading BOM, as MLTable does; MLTable
# reads 'ascii' as UTF-8 (a byte above 127 is not an error there), so it is UTF-8 here too.
ENCODINGS = {
    "utf8": "utf-8-sig", "utf-8": "utf-8-sig", "utf8bom": "utf-8-sig", "utf8 bom": "utf-8-sig",
    "utf-8 bom": "utf-8-sig", "ascii": "utf-8-sig", "latin1": "latin-1", "latin-1": "latin-1",
    "iso88591": "latin-1", "iso-8859-1": "latin-1", "windows1252": "cp1252", "windows-1252": "cp1252",
    "utf16": "utf-16", "utf-16": "utf-16",
}
# a file in these cannot be cut by bytes (a newline is two bytes): it is read whole, one mini-batch
WHOLE_FILE_ENCODINGS = ("utf-16",)


# keys that say how a table is read (MLTable's names): a file input takes none of them
TABLE_READING_KEYS = ("delimiter", "header", "encoding", "empty_as_string", "infer_column_types",
                      "include_path_column", "drop_columns", "keep_columns", "invalid_lines", "column_types")
COLUMN_TYPES = ("int", "float", "string", "boolean")


def _not_default(spec: InputSpec, key: str) -> bool:
    """Whether ``spec`` sets the reading key ``key`` to something other than its default."""
    value = type(spec).model_fields[key].get_default(call_default_factory=True) if key != "encoding" else "utf8"
    if key == "encoding":
        return ENCODINGS[spec.encoding] != ENCODINGS[value]
    return getattr(spec, key) != value


class InputSpec(StrictModel):
    """One input: files or tables found at one or more paths, globs, folders or URLs.

    The reading keys (``delimiter`` ... ``invalid_lines``) use MLTable's names and meanings; their
    defaults read tables as batchinfer always has.
    """

    type: Literal["file", "tabular"] = "file"
    path: list[str]
    storage_options: dict[str, Any] = Field(default_factory=dict)
    format: Literal["auto", "csv", "parquet", "jsonl"] = "auto"
    delimiter: str | None = None
    header: Literal[HEADERS] = "all_files_different_headers"  # type: ignore[valid-type]
    encoding: str = "utf8"
    empty_as_string: bool | None = None
    infer_column_types: bool = True
    include_path_column: bool = False
    partition_format: str | None = None
    drop_columns: list[str] = Field(default_factory=list)
    keep_columns: list[str] | None = None
    invalid_lines: Literal["error", "drop"] = "error"
    column_types: dict[str, Literal[COLUMN_TYPES]] = Field(default_factory=dict)  # type: ignore[valid-type]

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 1 or value in "\r\n\"" or len(value.encode("utf-8")) != 1):
            raise ValueError(f"{shown(value)} must be one single-byte character such as ',', ';', '|' or a tab")
        return value

    @field_validator("encoding", mode="before")
    @classmethod
    def _encoding(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() not in ENCODINGS:
            raise ValueError(f"{shown(value)} is not one of {', '.join(ENCODINGS)}")
        return value.lower() if isinstance(value, str) else value

    @field_validator("partition_format")
    @classmethod
    def _partition_format(cls, value: str | None) -> str | None:
        if value is not None:
            partition_fields(value)
        return value

    @field_validator("drop_columns", "keep_columns", mode="before")
    @classmethod
    def _columns(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _reading_keys(self) -> InputSpec:
        if self.type == "file":
            for key in TABLE_READING_KEYS:
                if _not_default(self, key):
                    raise ValueError(f"{key} applies to tabular inputs only (a file input is read by the script)")
        return self

    @model_serializer(mode="wrap")
    def _without_default_reading_keys(self, handler: Any) -> dict[str, Any]:
        # reading keys at their defaults are left out: a job's fingerprint (its identity for
        # allow_reuse and resume) stays what it was before these keys existed
        data = handler(self)
        for key in (*TABLE_READING_KEYS, "partition_format"):
            if key in data and not _not_default(self, key):
                del data[key]
        return data

    def read_options(self) -> ReadOptions:
        """What a worker needs to read this input's tables (see ``protocol.ReadOptions``)."""
        return ReadOptions(
            delimiter=self.delimiter, header=self.header, encoding=ENCODINGS[self.encoding],
            empty_as_string=self.empty_as_string, infer_column_types=self.infer_column_types,
            include_path_column=self.include_path_column, partition_format=self.partition_format,
            drop_columns=tuple(self.drop_columns),
            keep_columns=None if self.keep_columns is None else tuple(self.keep_columns),
            invalid_lines=self.invalid_lines, column_types=tuple(self.column_types.items()),
        )

    @field_validator("path", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and not value:
            raise ValueError("needs at least one path, glob, folder or URL")
        return value

    @field_validator("path")
    @classmethod
    def _resolve(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return [_resolve_path(p, info) for p in value]


class OutputSpec(StrictModel):
    """Where the output folder goes: a local path, an fsspec URL, or ``-`` for stdout."""

    path: str
    storage_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("path")
    @classmethod
    def _resolve(cls, value: str, info: ValidationInfo) -> str:
        # file:// is a remote folder (another machine's mount, seen through fsspec): kept as a URL
        return value if value == "-" or value.startswith("file://") else _resolve_path(value, info)


class LocationSpec(StrictModel):
    """A model or side input: a local path (a file or a folder) or a URL, with the store's
    ``storage_options`` (as ``output`` has); a URL is fetched into the machine's cache before the
    workers start (see :mod:`batchinfer.modelcache`)."""

    path: str
    storage_options: dict[str, Any] = Field(default_factory=dict)

    @model_serializer(mode="plain")
    def _as_path(self) -> str:
        # the path alone: a job's fingerprint stays what it was when models were plain strings, and
        # storage_options (credentials) never enter it, so rotating them does not block a resume
        return self.path

    def __str__(self) -> str:
        return self.path


class JobSpec(StrictModel):
    """A validated job: ParallelRunConfig's names, batchinfer's defaults (see README, 'Job spec')."""

    name: str
    entry_script: str
    source_directory: str = "."
    arguments: list[str] = Field(default_factory=list)
    inputs: list[InputSpec]
    side_inputs: dict[str, LocationSpec] = Field(default_factory=dict)
    models: dict[str, LocationSpec] = Field(default_factory=dict)
    mini_batch_size: BatchSize | None = None
    partition_keys: list[str] | None = None
    error_threshold: int = Field(default=-1, ge=-1, le=MAX_INT)
    allowed_failed_percent: float = Field(default=100.0, ge=0, le=100)
    allowed_failed_count: int = Field(default=-1, ge=-1, le=MAX_INT)
    output_action: Literal["append_row", "summary_only"] = "append_row"
    append_row_file_name: str = "parallel_run_step.txt"
    append_row_format: Literal["txt", "csv", "jsonl", "parquet"] = "txt"
    append_row_dataframe_header: bool = False
    ordered: bool = False
    output: OutputSpec | None = None
    node_count: int = Field(default=1, ge=1, le=MAX_PROCESSES)
    process_count_per_node: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=MAX_PROCESSES)
    backend: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # auto or host:port (ray:// refused for now); none: a Ray of batchinfer's own
    num_cpus_per_process: float = Field(default=1, gt=0, le=MAX_PROCESSES)  # backend ray: CPUs each actor reserves
    num_gpus_per_process: float = Field(default=0, ge=0, le=MAX_PROCESSES)  # backend ray: GPUs each actor reserves
    shared_filesystem: bool = False  # backend ray: every node sees the job's local paths (an NFS mount, ...)
    run_invocation_timeout: float = Field(default=60, gt=0, le=MAX_TIMEOUT)
    run_max_try: int = Field(default=3, ge=1, le=MAX_TRIES)
    logging_level: Literal["DEBUG", "INFO", "WARNING"] = "INFO"
    environment_variables: dict[str, str] = Field(default_factory=dict)
    allow_reuse: bool = True
    isolate_failures: bool = True

    @field_validator("ray_address")
    @classmethod
    def _ray_address(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("ray://"):
            # Ray Client cannot iterate the streaming calls the executor makes (a ClientObjectRef)
            raise ValueError("Ray Client addresses are not supported yet: run batchinfer on a machine of the "
                             "cluster with ray_address: auto or host:6379")
        if value is None or value == "auto" or RAY_ADDRESS.match(value):
            return value
        raise ValueError(f"{shown(value)} is not a Ray cluster address: use auto or host:port (the head's GCS "
                         "port, 6379 by default)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not 3 <= len(value) <= 32 or not NAME_PATTERN.match(value):
            raise ValueError(
                f"{shown(value)} is not a valid job name: use 3-32 lower-case letters, digits and '-', "
                "starting with a letter and not ending with '-'"
            )
        return value

    @field_validator("inputs", mode="before")
    @classmethod
    def _inputs(cls, value: Any) -> Any:
        if isinstance(value, (str, dict)):
            value = [value]
        if isinstance(value, list):
            if not value:
                raise ValueError("needs at least one input")
            return [{"path": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("arguments", mode="before")
    @classmethod
    def _arguments(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [v if isinstance(v, str) else _scalar_text(v) for v in value]
        return value

    @field_validator("environment_variables", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {_scalar_text(k): v if isinstance(v, str) else _scalar_text(v) for k, v in value.items()}
        return value

    @field_validator("environment_variables")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not name or "=" in name or "\0" in name:
                raise ValueError(f"{shown(name)} cannot be the name of an environment variable (empty, '=' or NUL)")
            if "\0" in text:
                raise ValueError(f"{name}: a value of an environment variable cannot hold a NUL byte")
        return value

    @field_validator("logging_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("entry_script")
    @classmethod
    def _entry_script(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name the script's file, e.g. score.py")
        _check_path_text(value)
        return value

    @field_validator("source_directory")
    @classmethod
    def _source_directory(cls, value: str, info: ValidationInfo) -> str:
        return _resolve_path(value, info)

    @field_validator("side_inputs", "models", mode="before")
    @classmethod
    def _named_paths(cls, value: Any, info: ValidationInfo) -> Any:
        # each value is a path or URL, or {path, storage_options}: both become a LocationSpec
        if not isinstance(value, dict):
            return value
        resolved: dict[Any, Any] = {}
        for name, item in value.items():
            location = dict(item) if isinstance(item, dict) else {"path": item}
            path = location.get("path")
            if not isinstance(path, str):
                raise ValueError(f"{shown(name)}: must be a path, a URL, "
                                 "or a mapping {path: ..., storage_options: ...}")
            try:
                location["path"] = _resolve_path(path, info)
            except ValueError as exc:
                raise ValueError(f"{shown(name)}: {exc}") from None
            resolved[name] = location
        return resolved

    @field_validator("output", mode="before")
    @classmethod
    def _output(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @field_validator("append_row_file_name")
    @classmethod
    def _file_name(cls, value: str) -> str:
        problem = file_name_problem(value)
        if problem:
            raise ValueError(f"{shown(value)} {problem}; use a name such as parallel_run_step.txt")
        return value

    @field_validator("mini_batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or isinstance(value, BatchSize):
            return value
        inputs = info.data.get("inputs") or []
        input_type = inputs[0].type if inputs else "file"
        return parse_batch_size(value, input_type)

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        types = {i.type for i in self.inputs}
        if len(types) > 1:
            raise ValueError("inputs: all inputs of a job must have the same type (file or tabular)")
        tabular = self.input_type == "tabular"
        if self.partition_keys is not None:
            if not self.partition_keys:
                raise ValueError("partition_keys: give at least one column name")
            if not tabular:
                for spec_input in self.inputs:
                    fields = partition_fields(spec_input.partition_format) if spec_input.partition_format else []
                    missing = [k for k in self.partition_keys if k not in fields]
                    if missing:
                        raise ValueError(
                            f"partition_keys: {shown(missing[0])} is not a {{field}} of the input's partition_format "
                            f"({shown(spec_input.partition_format) if fields else 'none given'}); file inputs are "
                            "partitioned by their paths, e.g. partition_format: '{user}/{season}/{genre}.wav'"
                        )
            if self.mini_batch_size is not None:
                raise ValueError(
                    "partition_keys and mini_batch_size cannot be used together: "
                    "with partition_keys each partition is one mini-batch"
                )
        if self.partition_keys and any(i.header == "from_first_file" for i in self.inputs):
            raise ValueError(
                "partition_keys cannot be used with header: from_first_file (each file of a partition is read "
                "whole, with its own header line): use all_files_same_headers"
            )
        if self.mini_batch_size is None and self.partition_keys is None:
            default = DEFAULT_TABULAR_BATCH if tabular else DEFAULT_FILE_BATCH
            object.__setattr__(self, "mini_batch_size", parse_batch_size(default, self.input_type))
        return self

    @property
    def input_type(self) -> str:
        """``file`` or ``tabular``."""
        return self.inputs[0].type

    def storage_options_for(self, url: str) -> dict[str, Any]:
        """The storage_options for a URL the spec names outside ``inputs`` (a model, a side input): those
        of the first input in the same bucket, else of the first input on the same kind of store, else
        none (the SDK's environment variables: AWS_*, AZURE_STORAGE_CONNECTION_STRING...)."""
        scheme, _, rest = url.partition("://")
        same_kind = [(p.partition("://")[2].split("/")[0], i.storage_options)
                     for i in self.inputs for p in i.path if p.partition("://")[0] == scheme]
        bucket = rest.split("/")[0]
        chosen = next((o for b, o in same_kind if b == bucket), same_kind[0][1] if same_kind else {})
        return dict(chosen)

    def location_options(self, location: LocationSpec | str) -> dict[str, Any]:
        """The storage_options a model or side input is reached with: its own when it has some, else
        :meth:`storage_options_for` its URL (an input's on the same store). The ONE choice the preflight
        (``inputs.check_stores``), the metadata and download (``modelcache``) and the secrets all use."""
        own = getattr(location, "storage_options", None)
        return dict(own) if own else self.storage_options_for(str(getattr(location, "path", location)))

    def secret_values(self) -> tuple[str, ...]:
        """The values never to show (see :mod:`batchinfer.redact`): those of credential keys of every
        ``storage_options``, and of environment variables named like credentials, in
        ``environment_variables`` and in this process's environment (which the workers inherit)."""
        options = [i.storage_options for i in self.inputs] + ([self.output.storage_options] if self.output else [])
        for named in (self.models, self.side_inputs):  # a location may have storage_options of its own
            options += [o for o in (getattr(v, "storage_options", None) for v in named.values()) if o]
        return secret_values(options, [self.environment_variables, os.environ])

    @property
    def worker_count(self) -> int:
        """How many worker processes run the script (``node_count x process_count_per_node``)."""
        return self.node_count * self.process_count_per_node


def _scalar_text(value: Any) -> Any:
    """YAML reads ``--x 5`` as an int (and 2024-01-31 as a date); arguments and environment values are strings."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, datetime.date)):
        return str(value)
    return value


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; every problem becomes a one-line :class:`SpecError`."""
    try:
        raw = read_capped(path, MAX_SPEC_BYTES, "a job spec")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file", hint="check the path to the job spec") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    except NotRegularFileError as exc:
        raise SpecError(f"{path} {exc}", hint="give the path to a .yaml file") from None
    except FileTooLargeError as exc:
        raise SpecError(f"{path} {exc}", hint="give many inputs as a folder or glob") from None
    try:
        text = raw.decode("utf-8-sig")  # a BOM (as Notepad writes) is not part of the text
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(
            f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line})", hint="save it as UTF-8"
        ) from None
    try:
        data = load_yaml_text(text)
    except yaml.YAMLError as exc:
        where, hint = yaml_error_text(exc, text)
        raise SpecError(f"{path}{where}", hint=hint) from None
    if data is None:
        raise SpecError(f"{path} is empty", hint="a job spec needs at least entry_script and inputs")
    if not isinstance(data, dict):
        raise SpecError(
            f"{path}: a job spec must be a mapping of keys to values, not a {type(data).__name__}",
            hint="see 'batchinfer init' for an example",
        )
    return data


def expand_variables(value: Any, where: str = "") -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string; ``$$`` is a literal ``$``."""
    if isinstance(value, dict):
        return {k: expand_variables(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_variables(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise SpecError(
            f"{where}: environment variable {name} is not set",
            hint=f"set it, or give a default as ${{{name}:-value}}",
        )

    return VAR_PATTERN.sub(substitute, value)


def _raw_secrets(data: dict[str, Any]) -> tuple[str, ...]:
    """:meth:`JobSpec.secret_values` of a spec not validated yet (whatever shapes its keys have)."""
    inputs = data.get("inputs")
    inputs = inputs if isinstance(inputs, list) else [inputs]
    options = [i.get("storage_options") for i in inputs if isinstance(i, dict)]
    output = data.get("output")
    options.append(output.get("storage_options") if isinstance(output, dict) else None)
    for key in ("models", "side_inputs"):
        named = data.get(key)
        if isinstance(named, dict):
            options += [v.get("storage_options") for v in named.values() if isinstance(v, dict)]
    environment = data.get("environment_variables")
    environment = {str(k): v for k, v in environment.items() if isinstance(v, str)} if isinstance(environment, dict) else {}
    return secret_values([o for o in options if isinstance(o, dict)], [environment, os.environ])


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set KEY=VALUE`` overrides; VALUE is parsed as YAML, KEY may be dotted (inputs.path)."""
    values: list[tuple[str, Any]] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"--set {shown(item)}: expected KEY=VALUE", hint="for example --set mini_batch_size=20")
        try:
            value = load_yaml_text(raw) if raw.strip() else ""
        except YamlLimitError as exc:
            where, hint = yaml_error_text(exc, raw)
            raise SpecError(f"--set {shown(key)}: value {where.lstrip(': ')}", hint=hint) from None
        except yaml.YAMLError:
            value = raw  # not YAML (an unclosed bracket, a tag): the text itself
        values.append((key, value))
    return apply_values(data, values)


def apply_values(data: dict[str, Any], values: Any) -> dict[str, Any]:
    """Set ``{dotted.key: value}`` (or ``[(key, value)]``) in a copy of ``data``.

    ``--set`` (after parsing its text as YAML) and the Python API's ``overrides`` both come here.
    """
    data = dict(data)
    for key, value in (values.items() if isinstance(values, dict) else values):
        parts = str(key).split(".")
        if not key or not all(parts):
            raise SpecError(f"override {shown(str(key))}: expected a key such as mini_batch_size or inputs.path")
        if len(parts) > MAX_DEPTH:
            raise SpecError(f"--set {shown(key)}: the key has more than {MAX_DEPTH} parts")
        target = data
        for part in parts[:-1]:
            child = target.get(part)
            if isinstance(child, list) and len(child) == 1 and isinstance(child[0], dict):
                child = child[0]  # inputs.path on a one-input list
            if part == "inputs" and (isinstance(child, str) or (isinstance(child, list) and all(isinstance(c, str) for c in child))):
                child = {"path": child}  # the short form 'inputs: data/'
            child = dict(child) if isinstance(child, dict) else {}
            target[part] = child
            target = child
        target[parts[-1]] = value
    return data


def default_name(spec_path: Path) -> str:
    """The job name when the spec gives none: the YAML's file name, lower-cased, ``_`` -> ``-``."""
    return normalise_name(spec_path.stem)


def normalise_name(text: str) -> str:
    """``text`` (an Azure name such as ``batch_score_with_tabular_input``) made a valid job name:
    lower-cased, ``_`` and other characters -> ``-``, starting with a letter, 3-32 characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower().replace("_", "-")).strip("-")
    if not name or not name[0].isalpha():
        name = f"job-{name}".strip("-")
    name = name[:32].rstrip("-")
    return name if len(name) >= 3 else f"{name}-job"


def _describe(error: dict[str, Any], model: type[BaseModel]) -> tuple[str, str | None]:
    """Turn one pydantic error into (message, hint) in the spec's own words."""
    loc = [str(p) for p in error["loc"] if not isinstance(p, int) or len(error["loc"]) == 1]
    key = ".".join(loc) or "spec"
    kind = error["type"]
    if kind == "extra_forbidden":
        owner: type[BaseModel] = model
        for part in error["loc"][:-1]:
            if isinstance(part, str) and part in owner.model_fields:
                annotation = owner.model_fields[part].annotation
                if part in ("models", "side_inputs"):  # models.NAME.key: the NAME is the user's
                    owner = LocationSpec
                    break
                owner = InputSpec if part == "inputs" else OutputSpec if part == "output" else annotation
        bad = str(error["loc"][-1])
        known = list(owner.model_fields)
        close = difflib.get_close_matches(bad, known, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(known)}"
        return f"unknown key '{key}'", hint
    if kind == "missing":
        return f"'{key}' is required", None
    message = error["msg"].removeprefix("Value error, ")
    if kind in ("literal_error",):
        expected = error.get("ctx", {}).get("expected", "")
        return f"{key}: {shown(error['input'])} is not one of {expected}", None
    got = error.get("input")
    quoted = "" if isinstance(got, (dict, list)) or kind.startswith("value_error") else f" (got {shown(got)})"
    return f"{key}: {message}{quoted}", None


def load_spec(
    spec_path: str | Path, overrides: list[str] | None = None, values: dict[str, Any] | None = None
) -> JobSpec:
    """Read, expand, override and validate a job spec; raise :class:`SpecError` on any problem.

    ``overrides`` are ``--set KEY=VALUE`` texts, ``values`` the Python API's ``{dotted.key: value}``.
    """
    path = Path(spec_path)
    data = read_yaml(path)
    if data.get("type") == "pipeline":
        raise SpecError(f"{path} is an Azure ML pipeline, not one job",
                        hint="run it with 'batchinfer run'; each parallel step is a job (see 'batchinfer convert')")
    return spec_from_data(data, path.resolve().parent, default_name(path), str(path), overrides, values)


def spec_from_data(
    data: dict[str, Any], base_dir: Path, name: str, where: str,
    overrides: list[str] | None = None, values: dict[str, Any] | None = None,
) -> JobSpec:
    """Validate a job spec's content (as read from YAML): relative paths from ``base_dir``, ``name`` by
    default, ``where`` naming it in messages; raise :class:`SpecError` on any problem."""
    from batchinfer import azure

    if azure.is_azure_job(data):
        try:
            data = azure.to_native(data, base_dir, name)
        except SpecError as exc:
            raise SpecError(f"{where}: {exc.message}", hint=exc.hint) from None
    data = apply_overrides(data, overrides or [])
    data = apply_values(data, values or {})
    data = expand_variables(data)
    if isinstance(data.get("arguments"), list):  # ParallelRunStep's own flags are settings, not arguments
        data["arguments"], flags = azure.take_driver_flags(data["arguments"], explicit=set(data))
        data.update(flags)
    data.setdefault("name", name)
    data.setdefault("source_directory", ".")
    context = {"base_dir": str(base_dir)}
    register_secrets(_raw_secrets(data))  # before validation: its messages quote values
    try:
        spec = JobSpec.model_validate(data, context=context)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # an unknown key (a typo) explains the other errors it causes (a 'required' key missing)
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        message, hint = _describe(first, JobSpec)
        more = exc.error_count() - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise SpecError(f"{where}: {message}{suffix}", hint=hint) from None
    from batchinfer.executors.base import check_backend

    check_backend(spec)  # backend ray without Ray: one line, exit 2, for run, validate and plan alike
    return spec
