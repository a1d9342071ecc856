"""The job spec: load the YAML safely, expand ``${VAR}``, apply ``--set``, validate once.

Everything after :func:`load_spec` trusts the typed :class:`JobSpec` it returns:
paths are absolute (or fsspec URLs), defaults are filled in, and
``mini_batch_size`` is parsed into a :class:`BatchSize`.
"""

from __future__ import annotations

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
    model_validator,
)

from batchinfer.errors import BackendUnavailableError, SpecError

NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
SIZE_PATTERN = re.compile(r"^(\d+)\s*([kKmMgG][bB])?$")
ROWS_PATTERN = re.compile(r"^(\d+)\s*rows?$", re.IGNORECASE)
VAR_PATTERN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
UNITS = {"": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
DEFAULT_FILE_BATCH = 10
DEFAULT_TABULAR_BATCH = "1MB"
TABULAR_FORMATS = ("csv", "parquet", "jsonl")


def is_url(path: str) -> bool:
    """True for fsspec URLs such as ``s3://bucket/key`` (but not ``file://`` or local paths)."""
    return "://" in path and not path.startswith("file://")


def _resolve_path(value: str, info: ValidationInfo) -> str:
    """Make a local path absolute against the YAML's folder; leave URLs alone."""
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
    text = str(raw).strip()
    if input_type == "file":
        if isinstance(raw, bool) or not text.isdigit() or int(text) < 1:
            raise ValueError(f"must be a whole number of files >= 1 for file inputs, not {raw!r}")
        return BatchSize(unit="files", value=int(text))
    if isinstance(raw, bool):
        raise ValueError(f"must be a size such as 1MB, 100KB or 5000rows, not {raw!r}")
    rows = ROWS_PATTERN.match(text)
    if rows:
        if int(rows.group(1)) < 1:
            raise ValueError("must be at least 1row")
        return BatchSize(unit="rows", value=int(rows.group(1)))
    size = SIZE_PATTERN.match(text)
    if not size or int(size.group(1)) < 1:
        raise ValueError(
            f"must be a size in bytes such as 1024, 100KB, 10MB, 1GB, or a row count such as 5000rows, not {raw!r}"
        )
    return BatchSize(unit="bytes", value=int(size.group(1)) * UNITS[(size.group(2) or "").lower()])


class StrictModel(BaseModel):
    """Base for spec models: unknown keys are errors, values are checked strictly enough."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(StrictModel):
    """One input: files or tables found at one or more paths, globs, folders or URLs."""

    type: Literal["file", "tabular"] = "file"
    path: list[str]
    storage_options: dict[str, Any] = Field(default_factory=dict)
    format: Literal["auto", "csv", "parquet", "jsonl"] = "auto"

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
        return value if value == "-" else _resolve_path(value, info)


class JobSpec(StrictModel):
    """A validated job: ParallelRunConfig's names, batchinfer's defaults (see README, 'Job spec')."""

    name: str
    entry_script: str
    source_directory: str = "."
    arguments: list[str] = Field(default_factory=list)
    inputs: list[InputSpec]
    side_inputs: dict[str, str] = Field(default_factory=dict)
    models: dict[str, str] = Field(default_factory=dict)
    mini_batch_size: BatchSize | None = None
    partition_keys: list[str] | None = None
    error_threshold: int = Field(default=-1, ge=-1)
    allowed_failed_percent: float = Field(default=100.0, ge=0, le=100)
    allowed_failed_count: int = Field(default=-1, ge=-1)
    output_action: Literal["append_row", "summary_only"] = "append_row"
    append_row_file_name: str = "parallel_run_step.txt"
    append_row_format: Literal["txt", "csv", "jsonl", "parquet"] = "txt"
    append_row_dataframe_header: bool = False
    ordered: bool = False
    output: OutputSpec | None = None
    node_count: int = Field(default=1, ge=1)
    process_count_per_node: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    backend: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    run_invocation_timeout: float = Field(default=60, gt=0)
    run_max_try: int = Field(default=3, ge=1)
    logging_level: Literal["DEBUG", "INFO", "WARNING"] = "INFO"
    environment_variables: dict[str, str] = Field(default_factory=dict)
    allow_reuse: bool = True
    isolate_failures: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not 3 <= len(value) <= 32 or not NAME_PATTERN.match(value):
            raise ValueError(
                f"{value!r} is not a valid job name: use 3-32 lower-case letters, digits and '-', "
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
            return {str(k): v if isinstance(v, str) else _scalar_text(v) for k, v in value.items()}
        return value

    @field_validator("logging_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("source_directory")
    @classmethod
    def _source_directory(cls, value: str, info: ValidationInfo) -> str:
        return _resolve_path(value, info)

    @field_validator("side_inputs", "models")
    @classmethod
    def _named_paths(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        return {name: _resolve_path(path, info) for name, path in value.items()}

    @field_validator("output", mode="before")
    @classmethod
    def _output(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @field_validator("append_row_file_name")
    @classmethod
    def _file_name(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError(f"must be a plain file name without folders, not {value!r}")
        return value

    @field_validator("mini_batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or isinstance(value, (BatchSize, dict)):
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
            if not tabular:
                raise ValueError("partition_keys: only tabular inputs can be partitioned")
            if not self.partition_keys:
                raise ValueError("partition_keys: give at least one column name")
            if self.mini_batch_size is not None:
                raise ValueError(
                    "partition_keys and mini_batch_size cannot be used together: "
                    "with partition_keys each partition is one mini-batch"
                )
        if self.mini_batch_size is None and self.partition_keys is None:
            default = DEFAULT_TABULAR_BATCH if tabular else DEFAULT_FILE_BATCH
            object.__setattr__(self, "mini_batch_size", parse_batch_size(default, self.input_type))
        return self

    @property
    def input_type(self) -> str:
        """``file`` or ``tabular``."""
        return self.inputs[0].type

    @property
    def worker_count(self) -> int:
        """How many worker processes run the script (``node_count x process_count_per_node``)."""
        return self.node_count * self.process_count_per_node


def _scalar_text(value: Any) -> Any:
    """YAML reads ``--x 5`` as an int; arguments and environment values are strings."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return value


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that rejects a key written twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; every problem becomes a one-line :class:`SpecError`."""
    if not path.exists():
        raise SpecError(f"{path}: no such file", hint="check the path to the job spec")
    if path.is_dir():
        raise SpecError(f"{path} is a folder, not a job spec", hint="give the path to a .yaml file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the file: {exc}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context_mark and exc.problem:
            problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise SpecError(f"{path}{where}: {problem}", hint="fix the YAML syntax") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: invalid YAML: {exc}") from None
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


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set KEY=VALUE`` overrides; VALUE is parsed as YAML, KEY may be dotted (inputs.path)."""
    data = dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE", hint="for example --set mini_batch_size=20")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        target = data
        parts = key.split(".")
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
    name = re.sub(r"[^a-z0-9-]+", "-", spec_path.stem.lower().replace("_", "-")).strip("-")
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
        return f"{key}: {error['input']!r} is not one of {expected}", None
    got = error.get("input")
    shown = "" if isinstance(got, (dict, list)) or kind.startswith("value_error") else f" (got {got!r})"
    return f"{key}: {message}{shown}", None


def load_spec(spec_path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    """Read, expand, override and validate a job spec; raise :class:`SpecError` on any problem."""
    from batchinfer import azure

    path = Path(spec_path)
    data = read_yaml(path)
    if azure.is_azure_job(data):
        try:
            data = azure.to_native(data, path.resolve().parent, default_name(path))
        except SpecError as exc:
            raise SpecError(f"{path}: {exc.message}", hint=exc.hint) from None
    data = apply_overrides(data, overrides or [])
    data = expand_variables(data)
    if isinstance(data.get("arguments"), list):  # ParallelRunStep's own flags are settings, not arguments
        data["arguments"], flags = azure.take_driver_flags(data["arguments"], explicit=set(data))
        data.update(flags)
    data.setdefault("name", default_name(path))
    data.setdefault("source_directory", ".")
    context = {"base_dir": str(path.resolve().parent)}
    try:
        spec = JobSpec.model_validate(data, context=context)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # an unknown key (a typo) explains the other errors it causes (a 'required' key missing)
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        message, hint = _describe(first, JobSpec)
        more = exc.error_count() - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise SpecError(f"{path}: {message}{suffix}", hint=hint) from None
    if spec.backend == "ray":
        raise BackendUnavailableError(
            f"{path}: backend 'ray' is not available yet in this version of batchinfer",
            hint="use backend: local (the default)",
        )
    return spec
