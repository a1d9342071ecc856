"""Azure scripts and job specs run unchanged: EntryScript, Model.get_model_path, v2 parallel
job YAML (with MLTable inputs), and ParallelRunStep's driver flags among the arguments."""

from __future__ import annotations

import textwrap

import pandas as pd
import yaml

from conftest import SCRIPTS, assert_one_line_error

AZURE_JOB = """\
$schema: https://azuremlschemas.azureedge.net/latest/parallelJob.schema.json
type: parallel
name: score-numbers
display_name: score numbers with a ParallelRunStep script
compute: azureml:cpu-cluster
inputs:
  job_data_path:
    type: uri_folder
    path: ./numbers
    mode: ro_mount
  score_model:
    type: uri_folder
    path: ./model
    mode: download
outputs:
  job_output_file:
    type: uri_file
    mode: rw_mount
input_data: ${{inputs.job_data_path}}
mini_batch_size: "3"
mini_batch_error_threshold: 5
logging_level: "DEBUG"
resources:
  instance_count: 1
max_concurrency_per_instance: 2
retry_settings:
  max_retries: 2
  timeout: 60
environment_variables:
  MY_SETTING: "on"
task:
  type: run_function
  code: SCRIPTS
  entry_script: score_prs.py
  environment: azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest
  program_arguments: >-
    --model ${{inputs.score_model}}
    --scale 2
    --error_threshold 5
    --allowed_failed_percent 30
    --task_overhead_timeout 1200
    --progress_update_timeout 600
    --copy_logs_to_parent True
  append_row_to: ${{outputs.job_output_file}}
"""


PORT = "outputs/job_output_file/parallel_run_step.txt"


def azure_job(tmp_path, text=AZURE_JOB):
    (tmp_path / "numbers").mkdir()
    for i in range(10):
        (tmp_path / "numbers" / f"n{i}.txt").write_text(str(i))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "multiplier.txt").write_text("1.5")
    path = tmp_path / "parallel.yml"
    path.write_text(text.replace("SCRIPTS", str(SCRIPTS / "azure_style")))
    return path


def test_azure_v2_parallel_job_with_an_entry_script_style_script_runs_unchanged(tmp_path, batchinfer):
    spec = azure_job(tmp_path)
    out = tmp_path / "out"
    run = batchinfer("run", str(spec), "--output", str(out), output=out)
    assert run.code == 0, run.stderr
    # a one-step pipeline: the output folder is the step's run folder, the rows are in its output port
    assert sorted(run.rows(PORT)) == sorted(f"n{i}.txt,{i * 3:g}" for i in range(10))
    assert not (out / "parallel_run_step.txt").exists() and (out / "summary.json").exists()
    summary = run.summary
    assert summary["job"] == "score-numbers" and summary["mini_batches_total"] == 4 and summary["workers"] == 2
    logs = run.log("worker-0.log") + run.log("worker-1.log")
    # the driver's flags were taken out; the script's own arguments reached it
    assert f"argv: ['--model', '{tmp_path / 'model'}', '--scale', '2']" in logs
    assert "init: agent worker-" in logs and f"log_dir {out / 'logs'}" in logs


def test_convert_prints_the_native_spec(tmp_path, batchinfer):
    converted = batchinfer("convert", str(azure_job(tmp_path)))
    assert converted.code == 0, converted.stderr
    native = yaml.safe_load(converted.stdout)
    assert native["entry_script"] == "score_prs.py"
    assert native["inputs"] == {"type": "file", "path": "./numbers"}
    assert native["mini_batch_size"] == "3" and native["allowed_failed_count"] == 5
    assert native["process_count_per_node"] == 2 and native["node_count"] == 1
    assert native["run_max_try"] == 3 and native["run_invocation_timeout"] == 60
    assert native["output_action"] == "append_row" and native["logging_level"] == "DEBUG"
    assert native["environment_variables"] == {"MY_SETTING": "on"}
    assert "--error_threshold" in native["arguments"]  # taken out (and honoured) when the spec is loaded
    # the converted spec runs as a native one
    (tmp_path / "native.yaml").write_text(converted.stdout)
    run = batchinfer("run", str(tmp_path / "native.yaml"), "--output", str(tmp_path / "o2"), output=tmp_path / "o2")
    assert run.code == 0, run.stderr
    assert len(run.rows()) == 10


def test_azure_asset_reference_is_a_clear_error(tmp_path, batchinfer):
    text = AZURE_JOB.replace("path: ./numbers", "path: azureml:mnist-images:3")
    run = batchinfer("run", str(azure_job(tmp_path, text)), "--output", str(tmp_path / "out"))
    assert_one_line_error(run, "inputs.job_data_path.path", "azureml:mnist-images:3", "Azure ML asset")


def test_mltable_input_becomes_a_tabular_input(tmp_path, batchinfer):
    spec = azure_job(tmp_path, AZURE_JOB.replace("type: uri_folder\n    path: ./numbers", "type: mltable\n    path: ./table")
                     .replace("score_prs.py", "tabular_ids.py").replace("mini_batch_size: \"3\"", "mini_batch_size: \"300\"")
                     .replace(str("SCRIPTS/azure_style"), str(SCRIPTS)).replace("code: SCRIPTS", f"code: {SCRIPTS}"))
    (tmp_path / "table").mkdir()
    pd.DataFrame({"id": [f"r{i:03d}" for i in range(200)]}).to_csv(tmp_path / "table" / "rows.csv", index=False)
    (tmp_path / "table" / "MLTable").write_text(textwrap.dedent("""\
        paths:
          - file: ./rows.csv
        transformations:
          - read_delimited:
              delimiter: ','
              header: all_files_same_headers
        """))
    out = tmp_path / "out"
    run = batchinfer("run", str(spec), "--output", str(out), output=out)
    assert run.code == 0, run.stderr
    assert sorted(r.split()[0] for r in run.rows(PORT)) == [f"r{i:03d}" for i in range(200)]
    assert run.summary["mini_batches_total"] > 1


def test_v1_script_with_model_get_model_path_runs_unchanged(job, tmp_path, text_files):
    data = text_files(4)
    (tmp_path / "scaler.txt").write_text("10")
    run = job("azure_style/score_v1_model.py", inputs={"path": str(data)}, models={"scaler": "scaler.txt"})
    assert run.code == 0, run.stderr
    assert sorted(run.rows()) == [f"f{i:03d}.txt: {i * 10}" for i in range(4)]


def test_driver_flags_in_native_arguments_are_honoured_not_forwarded(job, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a.txt", "b-bad.txt", "c.txt"):
        (data / name).write_text("1")
    run = job("fail_on_bad.py", inputs={"path": str(data)}, mini_batch_size=1, run_max_try=1,
              arguments=["--error_threshold", "0", "--run_invocation_timeout=30", "--progress_update_timeout", "9"])
    assert run.code == 1  # error_threshold 0: one failed item fails the job
    assert "more than error_threshold (0)" in run.summary["reason"]
