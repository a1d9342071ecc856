"""Every spec key, fed wrong types and extreme values: one line and exit 2, or a normal plan; never a traceback.

The keys come from the models (``JobSpec.model_fields`` and the ``inputs`` and
``output`` models), so a key added later is fuzzed without touching this file;
``EXTREMES`` must name it (the test says so), which asks its author to decide
its legitimate extremes. Each value goes through the YAML file and through
``--set``, to ``validate`` and to ``plan`` (plan cuts the mini-batches: that is
where ``mini_batch_size: 99999999999999999999999`` crashed). These run in this
process with typer's CliRunner: thousands of cases in seconds. A few values
that pass validation at the extremes then run for real, in subprocesses.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from batchinfer.cli import app
from batchinfer.spec import (
    MAX_BATCH_COUNT,
    MAX_INT,
    MAX_PROCESSES,
    MAX_TIMEOUT,
    MAX_TRIES,
    InputSpec,
    JobSpec,
    OutputSpec,
)
from conftest import SCRIPTS

NESTED = {"inputs": InputSpec, "output": OutputSpec}
KEYS = [*JobSpec.model_fields, *(f"{name}.{key}" for name, model in NESTED.items() for key in model.model_fields)]

HOSTILE: dict[str, Any] = {
    "null": None,
    "true": True,
    "false": False,
    "minus one": -1,
    "zero": 0,
    "int64 max": MAX_INT,
    "huge int": 10**30,
    "minus huge int": -(10**30),
    "nan": math.nan,
    "inf": math.inf,
    "minus inf": -math.inf,
    "minus zero": -0.0,
    "1e308": 1e308,
    "tiny float": 5e-324,
    "date": datetime.date(2024, 1, 31),
    "empty string": "",
    "blank string": " ",
    "huge string": "x" * 100_000,
    "string of 30 digits": "9" * 30,
    "NUL in a string": "a\x00b",
    "newline in a string": "a\nb",
    "non-ASCII string": "dàtä-✓-名前",
    "empty list": [],
    "list of mixed": ["a", 1, None],
    "nested lists": [[[["deep"]]]],
    "empty mapping": {},
    "nested mapping": {"a": {"b": [1, {"c": None}]}},
    "mapping of odd names": {"": "", "a=b": "a\x00b", "x\ny": None},
}

# Legitimate extremes of each key: each must pass validate and plan. A new key must be added here.
EXTREMES: dict[str, list[Any]] = {
    "name": ["abc", "a" + "b" * 31],
    "entry_script": ["echo_names.py", str(SCRIPTS / "echo_names.py")],
    "source_directory": [str(SCRIPTS)],
    "arguments": [[], ["--k", 5, True, 1.5, "dàtä", "a\nb", datetime.date(2024, 1, 31)]],
    "inputs": ["data", ["data"], {"path": "data"}],
    "side_inputs": [{}, {"labels": "data", "ü": "data/f000.txt"}],
    "models": [{}, {"clf": "data/f000.txt"}],
    "mini_batch_size": [1, "1", MAX_BATCH_COUNT],
    "partition_keys": [None],
    "error_threshold": [-1, 0, MAX_INT],
    "allowed_failed_percent": [0, 100, -0.0, 5e-324, 99.999],
    "allowed_failed_count": [-1, 0, MAX_INT],
    "output_action": ["append_row", "summary_only"],
    "append_row_file_name": ["r", "x" * 251, "dàtä.txt", "summary.json.bak", "-", "results.tmp.txt"],
    "append_row_format": ["txt", "csv", "jsonl", "parquet"],
    "append_row_dataframe_header": [True, False],
    "ordered": [True, False],
    "output": ["-", "out", {"path": "out/deeper", "storage_options": {}}],
    "node_count": [1, MAX_PROCESSES],
    "process_count_per_node": [1, MAX_PROCESSES],
    "backend": ["local"],
    "ray_address": [None, "auto", "head.example:6379"],
    "num_cpus_per_process": [0.01, 1, MAX_PROCESSES],
    "num_gpus_per_process": [0, 0.5, MAX_PROCESSES],
    "shared_filesystem": [True, False],
    "run_invocation_timeout": [5e-324, 0.001, MAX_TIMEOUT],
    "run_max_try": [1, MAX_TRIES],
    "logging_level": ["debug", "WARNING"],
    "environment_variables": [{}, {"A": "", "B": 1, "C": True, "D": "a\nb", "Ü": "✓"}],
    "allow_reuse": [True, False],
    "isolate_failures": [True, False],
    "inputs.type": ["file"],
    "inputs.path": ["data", ["data/f000.txt", "data/f001.txt"], "data/*.txt", f"file://{'{tmp}'}/data"],
    "inputs.storage_options": [{}, {"anon": True, "nested": {"x": [1e308, None]}}],
    "inputs.format": ["auto"],
    # the reading keys apply to tabular inputs (tests/test_azure_mltable.py): a file input takes their defaults
    "inputs.delimiter": [None],
    "inputs.header": ["all_files_different_headers"],
    "inputs.encoding": ["utf8", "UTF-8"],
    "inputs.empty_as_string": [None],
    "inputs.infer_column_types": [True],
    "inputs.include_path_column": [False],
    "inputs.drop_columns": [[]],
    "inputs.keep_columns": [None],
    "inputs.invalid_lines": ["error"],
    "inputs.column_types": [{}],
    "inputs.partition_format": [None, "{name}.txt", "data/{name}.{extension}", "/data/{a}0{b}.txt"],
    "output.path": ["-", "out/deeper"],
    "output.storage_options": [{}, {"key": "value"}],
}


def yaml_text(value: Any) -> str:
    """``value`` as one line of YAML, as a user would type it after ``--set KEY=``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def set_key(spec: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of ``spec`` with a (dotted) key set, as the YAML file would give it."""
    spec = {**spec}
    if "." in key:
        outer, inner = key.split(".")
        current = spec.get(outer)
        spec[outer] = {**(current if isinstance(current, dict) else {"path": current}), inner: value}
    else:
        spec[key] = value
    return spec


@pytest.fixture
def fuzz(tmp_path, text_files):
    """``fuzz(key, value) -> problems``: validate and plan with the value in the file and through --set."""
    text_files(3)
    base = {"entry_script": "echo_names.py", "source_directory": str(SCRIPTS), "inputs": {"path": "data"},
            "output": "out", "process_count_per_node": 2}
    base_path = tmp_path / "base.yaml"
    base_path.write_text(yaml.safe_dump(base))
    runner = CliRunner()

    def check(key: str, value: Any) -> list[str]:
        if isinstance(value, str):
            value = value.replace("{tmp}", str(tmp_path))
        spec_path = tmp_path / "job.yaml"
        spec_path.write_text(yaml.safe_dump(set_key(base, key, value), allow_unicode=True))
        problems = []
        ways = (("in the file", [str(spec_path)]), ("with --set", [str(base_path), "--set", f"{key}={yaml_text(value)}"]))
        for how, args in ways:
            for command in ("validate", "plan"):
                result = runner.invoke(app, [command, *args])
                problem = _judge(result, command, key)
                if problem:
                    problems.append(f"{command} {how}: {problem}")
        return problems

    return check


def _judge(result: Any, command: str, key: str) -> str | None:
    """None when the command behaved: a normal answer, or exit 2 with one line naming the key."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"{type(result.exception).__name__}: {result.exception}"
    lines = result.stderr.strip().splitlines()
    if result.exit_code == 0:
        normal = "is valid" in result.stderr if command == "validate" else result.stdout.startswith("job ")
        return None if normal else f"exit 0 without a normal answer: {result.stderr!r} {result.stdout[:200]!r}"
    if result.exit_code != 2:
        return f"exit {result.exit_code}: {result.stderr!r}"
    if len(lines) != 1 or not lines[0].startswith("batchinfer: error: "):
        return f"not one error line: {result.stderr!r}"
    named = key.split(".")[0].removesuffix("s")  # 'inputs.path' is named 'inputs.path' or 'input ...'
    if named not in lines[0]:
        return f"the error does not name {key!r}: {lines[0]}"
    return None


def test_every_key_has_its_extremes_decided():
    assert set(EXTREMES) == set(KEYS), "add the new key's legitimate extreme values to EXTREMES"


@pytest.mark.parametrize("key", KEYS)
def test_hostile_values_are_one_line_or_a_normal_plan(fuzz, key):
    problems = {label: found for label, value in HOSTILE.items() if (found := fuzz(key, value))}
    assert not problems, "\n".join(f"{key} = {label}: {p}" for label, found in problems.items() for p in found)


@pytest.mark.parametrize("key", KEYS)
def test_legitimate_extremes_validate_and_plan(fuzz, key):
    problems = []
    for value in EXTREMES[key]:
        found = fuzz(key, value)
        problems += [f"{key} = {yaml_text(value)[:60]}: {p}" for p in found]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("mini_batch_size", MAX_BATCH_COUNT + 1, f"at most {MAX_BATCH_COUNT} files"),
        ("mini_batch_size", "99999999999999999999999", f"at most {MAX_BATCH_COUNT} files"),
        ("process_count_per_node", MAX_PROCESSES + 1, str(MAX_PROCESSES)),
        ("node_count", MAX_PROCESSES + 1, str(MAX_PROCESSES)),
        ("run_max_try", MAX_TRIES + 1, str(MAX_TRIES)),
        ("run_invocation_timeout", MAX_TIMEOUT + 1, str(MAX_TIMEOUT)),
        ("run_invocation_timeout", math.inf, "finite"),
        ("error_threshold", MAX_INT + 1, str(MAX_INT)),
        ("allowed_failed_count", True, "must be a number"),
    ],
)
def test_values_past_a_limit_say_the_limit(tmp_path, text_files, key, value, fragment):
    text_files(3)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"entry_script": "echo_names.py", "source_directory": str(SCRIPTS),
                                    "inputs": {"path": "data"}, key: value}))
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert key in result.stderr and fragment in result.stderr, result.stderr


TABLE = "id,value\n" + "".join(f"r{i:03d},{i}\n" for i in range(50))


@pytest.mark.parametrize(
    ("keys", "rows"),
    [
        ({"mini_batch_size": MAX_BATCH_COUNT}, 3),
        ({"run_invocation_timeout": MAX_TIMEOUT, "run_max_try": MAX_TRIES}, 3),
        ({"error_threshold": MAX_INT, "allowed_failed_count": MAX_INT, "allowed_failed_percent": 5e-324}, 3),
        ({"inputs": {"type": "tabular", "path": "t.csv"}, "mini_batch_size": "1024GB"}, 50),
        ({"inputs": {"type": "tabular", "path": "t.csv"}, "mini_batch_size": f"{MAX_BATCH_COUNT}rows"}, 50),
        ({"inputs": {"type": "tabular", "path": "t.csv"}, "mini_batch_size": 1}, 50),  # one byte: a row per slice
        ({"inputs": {"type": "tabular", "path": "t.csv"}, "mini_batch_size": "1rows"}, 50),
        ({"append_row_file_name": "é" * 124 + ".t"}, 3),
        ({"append_row_file_name": "x" * 251, "append_row_format": "parquet"}, 3),  # and its .tmp fit
        ({"append_row_file_name": "-"}, 3),
        ({"environment_variables": {"EMPTY": "", "Ü": "✓", "NL": "a\nb", "N": 1},
          "arguments": ["a\nb", "", "✓"]}, 3),
    ],
    ids=["most files", "longest timeout, most tries", "largest thresholds", "most bytes", "most rows",
         "one byte", "one row", "longest non-ASCII name", "longest name, parquet", "name '-'",
         "odd environment and arguments"],
)
def test_extreme_values_run(job, text_files, tmp_path, keys, rows):
    text_files(3)
    (tmp_path / "t.csv").write_text(TABLE)
    script = "tabular_ids.py" if "inputs" in keys else "echo_names.py"
    run = job(script, **{"inputs": {"path": "data"}, **keys})
    assert run.code == 0, run.stderr
    name = keys.get("append_row_file_name", "parallel_run_step.txt")
    if keys.get("append_row_format") == "parquet":
        import pandas as pd

        assert len(pd.read_parquet(run.output_dir / name)) == rows
    else:
        assert len(run.rows(name)) == rows
    assert run.summary["items_succeeded"] == rows


def test_tiny_timeout_runs_and_fails_or_succeeds_cleanly(job, text_files):
    """5e-324 s passes validation; whether run() beats it depends on the machine, so both ends are fine."""
    text_files(3)
    run = job("echo_names.py", inputs={"path": "data"}, run_invocation_timeout=5e-324, run_max_try=1,
              isolate_failures=False)
    assert run.code in (0, 1), run.stderr
    assert "Traceback" not in run.stderr
    summary = run.summary
    if summary["items_succeeded"] + summary["items_failed"] < 3:  # the workers' start (init) outlived it too
        assert run.code == 1 and "failed to start" in summary["reason"], summary



AZURE_BASE = {
    "type": "parallel",
    "inputs": {"data": {"type": "uri_folder", "path": "data"}},
    "outputs": {"rows": {"type": "uri_file"}},
    "input_data": "${{inputs.data}}",
    "task": {"type": "run_function", "code": str(SCRIPTS), "entry_script": "echo_names.py",
             "program_arguments": "--k 1", "append_row_to": "${{outputs.rows}}"},
}
AZURE_NESTED = {"task": ["type", "code", "entry_script", "program_arguments", "append_row_to"],
                "inputs.data": ["type", "path"], "retry_settings": ["max_retries", "timeout"],
                "resources": ["instance_count"]}


def _azure_keys() -> list[str]:
    from batchinfer.azure import KNOWN_KEYS

    nested = [f"{outer}.{inner}" for outer, inners in AZURE_NESTED.items() for inner in inners]
    return sorted(KNOWN_KEYS - {"type", "task"}) + nested  # without type: parallel and a task it is not Azure's


def _set_path(spec: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    spec = yaml.safe_load(yaml.safe_dump(spec))  # a deep copy
    *outer, last = dotted.split(".")
    target = spec
    for part in outer:
        target = target.setdefault(part, {})
    target[last] = value
    return spec


@pytest.mark.parametrize("key", _azure_keys())
def test_azure_job_keys_with_hostile_values_are_one_line_or_valid(tmp_path, text_files, key):
    """An Azure ML parallel job is mapped to native keys before validation: the mapping must not crash."""
    text_files(3)
    runner = CliRunner()
    problems = []
    for label, value in HOSTILE.items():
        path = tmp_path / "azure.yml"
        path.write_text(yaml.safe_dump(_set_path(AZURE_BASE, key, value), allow_unicode=True))
        for command in ("validate", "convert"):
            problem = _judge_any(runner.invoke(app, [command, str(path)]))
            if problem:
                problems.append(f"{key} = {label}: {command}: {problem}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("key", ["paths", "transformations", "paths.0", "paths.0.file", "transformations.0"])
def test_mltable_with_hostile_values_is_one_line_or_valid(tmp_path, text_files, key):
    text_files(3)
    (tmp_path / "tbl").mkdir()
    spec = _set_path(AZURE_BASE, "inputs.data", {"type": "mltable", "path": "tbl"})
    (tmp_path / "azure.yml").write_text(yaml.safe_dump(spec))
    base = {"paths": [{"file": "../data/f000.txt"}], "transformations": [{"read_delimited": {}}]}
    problems = []
    for label, value in HOSTILE.items():
        table = yaml.safe_load(yaml.safe_dump(base))
        if "." in key:
            outer, index, *rest = key.split(".")
            if rest:
                table[outer][int(index)][rest[0]] = value
            else:
                table[outer][int(index)] = value
        else:
            table[key] = value
        (tmp_path / "tbl" / "MLTable").write_text(yaml.safe_dump(table, allow_unicode=True))
        problem = _judge_any(CliRunner().invoke(app, ["validate", str(tmp_path / "azure.yml")]))
        if problem:
            problems.append(f"{key} = {label}: {problem}")
    assert not problems, "\n".join(problems)


def _judge_any(result: Any) -> str | None:
    """None for exit 0, or exit 2 with one error line; otherwise what went wrong."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"{type(result.exception).__name__}: {result.exception}"
    if result.exit_code == 0:
        return None
    lines = result.stderr.strip().splitlines()
    if result.exit_code != 2 or len(lines) != 1 or not lines[0].startswith("batchinfer: error: "):
        return f"exit {result.exit_code}: {result.stderr!r}"
    return None
