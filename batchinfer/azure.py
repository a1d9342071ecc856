"""Azure ML compatibility for job specs: v2 parallel job YAML, and ParallelRunStep's driver flags.

``to_native`` maps an Azure ML CLI v2 ``type: parallel`` job to batchinfer's own
spec keys (before validation, so the usual checks and messages apply);
``take_driver_flags`` pulls ParallelRunStep's own flags (``--error_threshold``
...) out of the script's arguments and turns them into spec keys.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from batchinfer.errors import SpecError
from batchinfer.protocol import OUTPUT_DIR_PLACEHOLDER

# ParallelRunStep / parallel job driver flags given among the script's arguments
DRIVER_FLAGS = {
    "--error_threshold": "error_threshold",
    "--allowed_failed_percent": "allowed_failed_percent",
    "--run_invocation_timeout": "run_invocation_timeout",
    "--run_max_try": "run_max_try",
    "--logging_level": "logging_level",
    "--mini_batch_size": "mini_batch_size",
    "--append_row_file_name": "append_row_file_name",
}
# accepted and ignored: they tune Azure's own agents, which batchinfer does not have
IGNORED_DRIVER_FLAGS = {
    "--task_overhead_timeout", "--progress_update_timeout", "--first_task_creation_timeout",
    "--copy_logs_to_parent", "--metrics_name_prefix", "--push_metrics_to_parent",
    "--resource_monitor_interval", "--process_count_per_node", "--node_count",
}
# v2 keys with no meaning on this machine: read and ignored
IGNORED_KEYS = {"$schema", "display_name", "description", "tags", "experiment_name", "compute", "identity",
                "properties", "version", "is_deterministic", "settings", "environment", "mode", "queue_settings",
                "limits", "services", "distribution"}
KNOWN_KEYS = IGNORED_KEYS | {
    "type", "name", "inputs", "outputs", "input_data", "task", "mini_batch_size", "mini_batch_error_threshold",
    "error_threshold", "logging_level", "resources", "max_concurrency_per_instance", "retry_settings",
    "environment_variables", "partition_keys",
}
BINDING = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def is_azure_job(data: dict[str, Any]) -> bool:
    """True for an Azure ML v2 parallel job spec."""
    return data.get("type") == "parallel" and "task" in data


def take_driver_flags(arguments: list[Any], explicit: set[str]) -> tuple[list[Any], dict[str, Any]]:
    """Split ParallelRunStep's flags (``--error_threshold 10`` or ``--error_threshold=10``) from the
    script's own arguments; a flag does not override a key the spec sets itself."""
    remaining: list[Any] = []
    settings: dict[str, Any] = {}
    i = 0
    while i < len(arguments):
        item = str(arguments[i])
        flag, eq, inline = item.partition("=")
        if flag in DRIVER_FLAGS or flag in IGNORED_DRIVER_FLAGS:
            if eq:
                value = inline
            elif i + 1 < len(arguments):
                i += 1
                value = str(arguments[i])
            else:
                raise SpecError(f"arguments: {flag} needs a value")
            key = DRIVER_FLAGS.get(flag)
            if key and key not in explicit:
                settings[key] = _flag_value(value) if key != "mini_batch_size" else value
        else:
            remaining.append(arguments[i])
        i += 1
    return remaining, settings


def _flag_value(text: str) -> Any:
    """A driver flag's value as YAML reads it (``5`` is a number); text that is not YAML stays text."""
    from batchinfer.safeyaml import YamlLimitError, load_yaml_text

    try:
        return load_yaml_text(text)
    except YamlLimitError:
        raise SpecError(f"arguments: the value {text[:40]!r} is not a setting",
                        hint="give a number or a word") from None
    except yaml.YAMLError:
        return text


def as_mapping(value: Any, where: str) -> dict[str, Any]:
    """``value`` when it is a mapping (absent is empty); anything else is a one-line error naming ``where``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{where} must be a mapping of keys to values (got {type(value).__name__})")
    return value


def _text(value: Any, where: str) -> str:
    """A string-valued field (a number is written as text); lists, mappings and null are errors."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SpecError(f"{where} must be text (got {'null' if value is None else type(value).__name__})")
    return str(value)


def _path(value: Any, where: str) -> str:
    path = _text(value, where)
    if "\0" in path:
        raise SpecError(f"{where} contains a NUL byte, which no path can hold")
    return path


def _no_azure_asset(value: Any, where: str) -> None:
    if isinstance(value, str) and value.startswith("azureml:"):
        raise SpecError(
            f"{where}: {value!r} refers to an Azure ML asset, which batchinfer cannot reach",
            hint="download it and give a local path or an fsspec URL (s3://, abfs://, ...)",
        )


def _mltable(folder: Path) -> dict[str, Any]:
    """An MLTable folder as an ``inputs`` mapping, read as Azure reads it (see ``mltable.py``)."""
    from batchinfer.mltable import input_from_mltable

    return input_from_mltable(folder)


def to_native(data: dict[str, Any], base_dir: Path, name: str) -> dict[str, Any]:
    """Map an Azure ML v2 parallel job to batchinfer's spec keys (paths stay relative to ``base_dir``)."""
    for key in data:
        if key not in KNOWN_KEYS:
            raise SpecError(f"unknown key '{key}' in an Azure ML parallel job", hint=f"known: {', '.join(sorted(KNOWN_KEYS))}")
    task = as_mapping(data.get("task"), "task")
    if task.get("type", "run_function") != "run_function":
        raise SpecError(f"task.type: only run_function tasks can run here, not {str(task.get('type'))[:40]!r}")
    inputs = as_mapping(data.get("inputs"), "inputs")
    outputs = as_mapping(data.get("outputs"), "outputs")
    from batchinfer.spec import normalise_name

    # Azure allows names that batchinfer's do not (batch_score_with_tabular_input): normalised, never refused
    native: dict[str, Any] = {"name": normalise_name(_text(data.get("name") or name, "name"))}
    if "code" in task:
        _no_azure_asset(task["code"], "task.code")
        native["source_directory"] = task["code"]
    if "entry_script" not in task:
        raise SpecError("'task.entry_script' is required")
    native["entry_script"] = task["entry_script"]

    def resolve(kind: str, key: str, where: str) -> str:
        if kind == "outputs":
            return OUTPUT_DIR_PLACEHOLDER
        if key not in inputs:
            raise SpecError(f"{where}: ${{{{inputs.{key}}}}} names no input", hint=f"inputs: {', '.join(inputs) or 'none'}")
        value = inputs[key]
        if isinstance(value, dict):
            _no_azure_asset(value.get("path"), f"inputs.{key}.path")
            path = _path(value.get("path", ""), f"inputs.{key}.path")
            return path if "://" in path else os.path.realpath(base_dir / path)
        return _text(value, f"inputs.{key}")

    main = data.get("input_data")
    match = BINDING.fullmatch(str(main).strip()) if main else None
    if not match or match.group(1) != "inputs":
        raise SpecError("input_data must name one of the inputs, as ${{inputs.<name>}}")
    source = inputs.get(match.group(2))
    if not isinstance(source, dict) or "path" not in source:
        raise SpecError(f"inputs.{match.group(2)} needs a path")
    _no_azure_asset(source["path"], f"inputs.{match.group(2)}.path")
    if source.get("type") == "mltable":
        table_dir = _path(source["path"], f"inputs.{match.group(2)}.path")
        native["inputs"] = _mltable(Path(os.path.realpath(base_dir / table_dir)))
    else:
        native["inputs"] = {"type": "file", "path": source["path"]}

    raw = task.get("program_arguments")
    text = "" if raw is None else _text(raw, "task.program_arguments")
    text = BINDING.sub(lambda m: shlex.quote(resolve(m.group(1), m.group(2), "task.program_arguments")), text)
    try:
        native["arguments"] = shlex.split(text)
    except ValueError as exc:  # an unclosed quote
        raise SpecError(f"task.program_arguments: {exc}", hint="close the quote, or escape it") from None
    append_to = task.get("append_row_to")
    if append_to:
        found = BINDING.fullmatch(str(append_to).strip())
        if not found or found.group(1) != "outputs" or found.group(2) not in outputs:
            raise SpecError("task.append_row_to must name one of the outputs, as ${{outputs.<name>}}")
        native["output_action"] = "append_row"
        target = as_mapping(outputs[found.group(2)], f"outputs.{found.group(2)}") if outputs[found.group(2)] else {}
        if target.get("type") == "uri_file" and target.get("path"):  # Azure's name for the file: .../aggregated_returns.csv
            if file_name := os.path.basename(_path(target["path"], f"outputs.{found.group(2)}.path").rstrip("/")):
                native["append_row_file_name"] = file_name
    else:
        native["output_action"] = "summary_only"
    for key in ("mini_batch_size", "logging_level", "environment_variables", "partition_keys", "error_threshold"):
        if key in data:
            native[key] = str(data[key]) if key == "mini_batch_size" else data[key]
    if "mini_batch_error_threshold" in data:
        native["allowed_failed_count"] = data["mini_batch_error_threshold"]
    if "max_concurrency_per_instance" in data:
        native["process_count_per_node"] = data["max_concurrency_per_instance"]
    resources = as_mapping(data.get("resources"), "resources")
    if "instance_count" in resources:
        native["node_count"] = resources["instance_count"]
    retry = as_mapping(data.get("retry_settings"), "retry_settings")
    retries = retry.get("max_retries", 2)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise SpecError(f"retry_settings.max_retries must be a whole number >= 0, not {str(retries)[:40]!r}")
    native["run_max_try"] = retries + 1  # Azure counts retries after the first try
    if "timeout" in retry:
        native["run_invocation_timeout"] = retry["timeout"]
    return native


def convert_file(path: Path) -> str:
    """``batchinfer convert``: the native spec equivalent to an Azure ML parallel job, as YAML
    (an Azure ML pipeline: one document per parallel step, see ``steps.convert_pipeline``)."""
    from batchinfer.spec import default_name, read_yaml

    data = read_yaml(path)
    if data.get("type") == "pipeline":
        from batchinfer.pipeline import load_pipeline
        from batchinfer.steps import convert_pipeline

        return convert_pipeline(load_pipeline(path))
    if not is_azure_job(data):
        raise SpecError(f"{path} is not an Azure ML parallel job (type: parallel with a task)")
    native = to_native(data, path.resolve().parent, default_name(path))
    return yaml.safe_dump(native, sort_keys=False)
