"""The job spec: every key validated once, with defaults, variables, overrides and clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchinfer.errors import SpecError
from batchinfer.spec import BatchSize, default_name, load_spec, parse_batch_size


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


MINIMAL = "entry_script: score.py\ninputs:\n  path: data\n"


def test_defaults(tmp_path):
    spec = load_spec(write(tmp_path, MINIMAL, "Nightly_Scoring.yaml"))
    assert spec.name == "nightly-scoring"
    assert spec.source_directory == str(tmp_path)
    assert spec.inputs[0].path == [str(tmp_path / "data")]
    assert spec.inputs[0].type == "file"
    assert spec.mini_batch_size == BatchSize(unit="files", value=10)
    assert spec.error_threshold == -1 and spec.allowed_failed_count == -1
    assert spec.allowed_failed_percent == 100
    assert spec.output_action == "append_row"
    assert spec.append_row_file_name == "parallel_run_step.txt"
    assert spec.append_row_format == "txt"
    assert spec.node_count == 1 and spec.process_count_per_node == os.cpu_count()
    assert spec.run_invocation_timeout == 60 and spec.run_max_try == 3
    assert spec.logging_level == "INFO"
    assert spec.allow_reuse and spec.isolate_failures and not spec.ordered
    assert spec.backend == "local" and spec.output is None


def test_every_key(tmp_path):
    spec = load_spec(write(tmp_path, """
name: digits-v2
entry_script: score.py
source_directory: src
arguments: [--k, 3, --verbose, true]
inputs:
  type: tabular
  path: [a.csv, s3://bucket/b.parquet]
  storage_options: {anon: true}
  format: csv
side_inputs: {labels: labels.csv}
models: {clf: models/clf.keras}
mini_batch_size: 5000rows
error_threshold: 10
allowed_failed_percent: 2.5
allowed_failed_count: 3
output_action: summary_only
append_row_file_name: out.txt
append_row_format: jsonl
append_row_dataframe_header: true
ordered: true
output: {path: results, storage_options: {}}
node_count: 2
process_count_per_node: 3
run_invocation_timeout: 30
run_max_try: 5
logging_level: debug
environment_variables: {OMP_NUM_THREADS: 1}
allow_reuse: false
isolate_failures: false
"""))
    assert spec.name == "digits-v2"
    assert spec.source_directory == str(tmp_path / "src")
    assert spec.arguments == ["--k", "3", "--verbose", "true"]
    assert spec.inputs[0].path == [str(tmp_path / "a.csv"), "s3://bucket/b.parquet"]
    assert spec.inputs[0].storage_options == {"anon": True}
    assert {n: loc.path for n, loc in spec.side_inputs.items()} == {"labels": str(tmp_path / "labels.csv")}
    assert {n: loc.path for n, loc in spec.models.items()} == {"clf": str(tmp_path / "models/clf.keras")}
    assert spec.mini_batch_size == BatchSize(unit="rows", value=5000)
    assert spec.output.path == str(tmp_path / "results")
    assert spec.worker_count == 6
    assert spec.logging_level == "DEBUG"
    assert spec.environment_variables == {"OMP_NUM_THREADS": "1"}
    assert not spec.allow_reuse and not spec.isolate_failures and spec.ordered


@pytest.mark.parametrize(
    ("raw", "kind", "expected"),
    [
        (5, "file", ("files", 5)),
        ("5", "file", ("files", 5)),
        (1024, "tabular", ("bytes", 1024)),
        ("100KB", "tabular", ("bytes", 100 * 1024)),
        ("10mb", "tabular", ("bytes", 10 * 1024**2)),
        ("1GB", "tabular", ("bytes", 1024**3)),
        ("5000rows", "tabular", ("rows", 5000)),
    ],
)
def test_mini_batch_size(raw, kind, expected):
    assert parse_batch_size(raw, kind) == BatchSize(unit=expected[0], value=expected[1])


@pytest.mark.parametrize(("raw", "kind"), [(0, "file"), ("10MB", "file"), (-1, "file"), ("ten", "tabular"),
                                           ("1TB", "tabular"), (True, "file"), ("0KB", "tabular")])
def test_bad_mini_batch_size(raw, kind):
    with pytest.raises(ValueError):
        parse_batch_size(raw, kind)


def test_tabular_default_batch_is_one_megabyte(tmp_path):
    spec = load_spec(write(tmp_path, "entry_script: s.py\ninputs: {type: tabular, path: t.csv}\n"))
    assert spec.mini_batch_size == BatchSize(unit="bytes", value=1024**2)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (MINIMAL + "mini_batch_sise: 4\n", ["unknown key 'mini_batch_sise'", "did you mean 'mini_batch_size'"]),
        (MINIMAL + "  storage_option: {}\n", ["unknown key 'inputs.storage_option'", "did you mean 'storage_options'"]),
        ("entry_script: s.py\ninputs: {pth: data}\n", ["unknown key 'inputs.pth'", "did you mean 'path'"]),
        ("inputs: {path: d}\n", ["'entry_script' is required"]),
        ("entry_script: s.py\n", ["'inputs' is required"]),
        (MINIMAL + "name: Bad_Name\n", ["not a valid job name"]),
        (MINIMAL + "name: ab\n", ["not a valid job name"]),
        (MINIMAL + "error_threshold: -2\n", ["error_threshold", "greater than or equal to -1"]),
        (MINIMAL + "allowed_failed_percent: 101\n", ["allowed_failed_percent"]),
        (MINIMAL + "output_action: append\n", ["output_action", "'append_row' or 'summary_only'"]),
        (MINIMAL + "mini_batch_size: 1MB\n", ["mini_batch_size", "number of files"]),
        (MINIMAL + "process_count_per_node: 0\n", ["process_count_per_node"]),
        (MINIMAL + "run_max_try: 0\n", ["run_max_try"]),
        (MINIMAL + "partition_keys: [a]\n", ["partition_keys", "partition_format", "none given"]),
        ("entry_script: s.py\ninputs: {type: tabular, path: t.csv}\npartition_keys: [a]\nmini_batch_size: 1MB\n",
         ["cannot be used together"]),
        (MINIMAL + "append_row_file_name: a/b.txt\n", ["plain file name"]),
        (MINIMAL + "inputs: {path: []}\n", ["given twice"]),
        (MINIMAL + "[1]: x\n", ["a key must be text or a number, not a list"]),
        (MINIMAL + "environment_variables: {{a: 1}: x}\n", ["a key must be text or a number, not a dict"]),
        ("entry_script: s.py\ninputs: {path: []}\n", ["at least one path"]),
        ("entry_script: s.py\ninputs: {type: images, path: d}\n", ["inputs.type", "'file' or 'tabular'"]),
        (MINIMAL + "append_row_file_name: summary.json\n", ["append_row_file_name", "batchinfer's own 'summary.json'"]),
        # the reading keys (MLTable's names): values, and which inputs take them
        ("entry_script: s.py\ninputs: {type: tabular, path: d, delimiter: '::'}\n", ["inputs.delimiter", "single-byte"]),
        ("entry_script: s.py\ninputs: {type: tabular, path: d, delimiter: '\"'}\n", ["inputs.delimiter", "single-byte"]),
        ("entry_script: s.py\ninputs: {type: tabular, path: d, encoding: ebcdic}\n", ["inputs.encoding", "'ebcdic' is not one of"]),
        ("entry_script: s.py\ninputs: {type: tabular, path: d, header: maybe}\n", ["inputs.header", "'maybe' is not one of"]),
        ("entry_script: s.py\ninputs: {type: tabular, path: d, invalid_lines: skip}\n", ["inputs.invalid_lines"]),
        ("entry_script: s.py\ninputs: {type: tabular, path: d, column_types: {a: date}}\n",
         ["inputs.column_types.a", "'date' is not one of"]),
        ("entry_script: s.py\ninputs: {type: tabular, path: d, drop_colums: [a]}\n", ["inputs.drop_colums", "drop_columns"]),
        (MINIMAL.replace("path: data", "path: data\n  delimiter: ';'"), ["inputs", "delimiter applies to tabular inputs only"]),
        (MINIMAL.replace("path: data", "path: data\n  header: no_header"), ["inputs", "header applies to tabular inputs only"]),
        ("entry_script: s.py\ninputs: {type: tabular, path: d, partition_format: '{a}{b}.csv'}\n",
         ["inputs.partition_format", "must be separated"]),
        ("entry_script: s.py\ninputs: {type: tabular, path: d, partition_format: 'x.csv'}\n",
         ["inputs.partition_format", "names no {field}"]),
        ("entry_script: s.py\ninputs: {type: tabular, path: d, partition_format: '{}/x.csv'}\n",
         ["inputs.partition_format", "is not a field name"]),
        ("entry_script: s.py\ninputs: {type: tabular, path: d, partition_format: '{d:yyyy-MMM}/x.csv'}\n",
         ["inputs.partition_format", "{d:yyyy-MMM}: the date format 'yyyy-MMM' uses 'M'"]),
        ("entry_script: s.py\ninputs: {type: tabular, path: d, partition_format: '{d:-}/x.csv'}\n",
         ["inputs.partition_format", "names no part of a date"]),
        ("entry_script: s.py\ninputs: {type: tabular, path: d, header: from_first_file}\npartition_keys: [a]\n",
         ["partition_keys", "from_first_file"]),
        (MINIMAL + "append_row_file_name: x.tmp\n", ["append_row_file_name", "must not end in '.tmp'"]),
        (MINIMAL + "environment_variables: {'A=B': x}\n", ["environment_variables", "'A=B' cannot be the name"]),
        (MINIMAL + "environment_variables: {'': x}\n", ["environment_variables", "'' cannot be the name"]),
        (MINIMAL + 'environment_variables: {A: "a\\0b"}\n', ["environment_variables", "A: ", "NUL byte"]),
        ('entry_script: "s\\0.py"\ninputs: d\n', ["entry_script", "NUL byte"]),
        ("entry_script: ' '\ninputs: d\n", ["entry_script", "must name the script's file"]),
        (MINIMAL + "source_directory: ''\n", ["source_directory", "must not be empty"]),
        (MINIMAL + "output: ''\n", ["output.path", "must not be empty"]),
        (MINIMAL + f"models: {{m: {'d/' * 2049}}}\n", ["models: 'm': ", "longer than 4096 bytes"]),
        (MINIMAL + "mini_batch_size: {unit: files, value: 99999999999999999999999}\n", ["mini_batch_size"]),
        (MINIMAL + "mini_batch_size: 1000000001\n", ["mini_batch_size", "at most 1000000000 files"]),
        (MINIMAL + "mini_batch_size: \u0663\n", ["mini_batch_size", "whole number"]),  # an Arabic-Indic 3
        ("entry_script: s.py\ninputs: {type: tabular, path: t.csv}\nmini_batch_size: 1025GB\n", ["at most 1024GB"]),
        ("entry_script: s.py\ninputs: {type: tabular, path: t.csv}\nmini_batch_size: 1000000001rows\n",
         ["at most 1000000000 rows"]),
        (MINIMAL + "process_count_per_node: 1025\n", ["process_count_per_node", "1024"]),
        (MINIMAL + "node_count: 1025\n", ["node_count", "1024"]),
        (MINIMAL + "run_max_try: true\n", ["run_max_try", "must be a number, not true"]),
        (MINIMAL + "run_invocation_timeout: .inf\n", ["run_invocation_timeout", "finite"]),
        (MINIMAL + "run_invocation_timeout: 2592001\n", ["run_invocation_timeout", "2592000"]),
        (MINIMAL + "allowed_failed_percent: .nan\n", ["allowed_failed_percent"]),
    ],
)
def test_spec_errors_say_what_and_where(tmp_path, text, fragments):
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_yaml_syntax_error_names_the_line(tmp_path):
    with pytest.raises(SpecError, match=r"line 4, column \d+: .*flow sequence at line 3"):
        load_spec(write(tmp_path, "entry_script: s.py\ninputs:\n  path: [a, b\nname: x\n"))


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_spec_must_be_a_mapping(tmp_path, text):
    with pytest.raises(SpecError):
        load_spec(write(tmp_path, text))


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nope.yaml")


def test_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA", "/mnt/data")
    monkeypatch.delenv("UNSET_VAR", raising=False)
    spec = load_spec(write(tmp_path, "entry_script: s.py\ninputs:\n  path: ${DATA}/x\n"
                                     "environment_variables:\n  A: ${UNSET_VAR:-fallback}\n  B: $$HOME\n"))
    assert spec.inputs[0].path == ["/mnt/data/x"]
    assert spec.environment_variables == {"A": "fallback", "B": "$HOME"}
    with pytest.raises(SpecError, match="environment variable UNSET_VAR is not set"):
        load_spec(write(tmp_path, "entry_script: s.py\ninputs:\n  path: ${UNSET_VAR}\n"))


def test_overrides(tmp_path):
    path = write(tmp_path, MINIMAL)
    spec = load_spec(path, ["mini_batch_size=20", "inputs.path=[x, y]", "ordered=true", "arguments=[--a, 1]"])
    assert spec.mini_batch_size.value == 20
    assert spec.inputs[0].path == [str(tmp_path / "x"), str(tmp_path / "y")]
    assert spec.ordered and spec.arguments == ["--a", "1"]
    with pytest.raises(SpecError, match="did you mean 'ordered'"):
        load_spec(path, ["orderd=true"])
    short = load_spec(write(tmp_path, "entry_script: s.py\ninputs: data\n", "short.yaml"), ["inputs.type=tabular"])
    assert short.inputs[0].type == "tabular" and short.inputs[0].path == [str(tmp_path / "data")]
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        load_spec(path, ["ordered"])


@pytest.mark.parametrize(("file", "name"), [("job.yaml", "job"), ("My_Scoring_Job.yml", "my-scoring-job"),
                                            ("a.yaml", "a-job"), ("2024 run.yaml", "job-2024-run")])
def test_default_name(file, name):
    assert default_name(Path(file)) == name


@pytest.mark.parametrize("name", ["out.txt", "-", "summary.json.bak", "rapport-été.txt", "x" * 251, "é" * 124 + ".t",
                                  "logs.txt",
                                  ".hidden", "tmp", "a.tmp.csv"])
def test_append_row_file_name_takes_any_plain_name_of_the_users(tmp_path, name):
    spec = load_spec(write(tmp_path, MINIMAL), [f"append_row_file_name={name!r}"])
    assert spec.append_row_file_name == name


def test_a_quoted_value_is_cut_short_in_the_message(tmp_path):
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, MINIMAL + f"name: {'x' * 100_000}\n"))
    assert len(str(caught.value)) < 500


def test_yaml_dates_are_text_where_text_is_expected(tmp_path):
    text = MINIMAL + "arguments: [--day, 2024-01-31]\nenvironment_variables: {DAY: 2024-01-31}\n"
    spec = load_spec(write(tmp_path, text))
    assert spec.arguments == ["--day", "2024-01-31"] and spec.environment_variables == {"DAY": "2024-01-31"}
