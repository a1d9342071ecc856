"""Azure ML ``type: pipeline`` YAMLs run locally, in the shape of Azure's own examples (their YAML
structure, the APIs their scripts call, their data layouts) with synthetic data and our own scripts:
command steps as subprocesses, parallel steps with batchinfer's engine, each step's outputs in a
data-only port folder, reruns that reuse what finished, and one-line errors for what cannot run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import MARKER, SCRIPTS, assert_one_line_error

PIPES = SCRIPTS / "azure_pipelines"

# the shape of cli/jobs/pipelines/mnist-batch-identification-using-parallel (and 3a): a command step
# makes the data, a parallel step scores it, a command step cats the uri_file the scores went to
MNIST = """\
$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json
type: pipeline
display_name: mnist-batch-identification-using-parallel
description: The hello world pipeline job with inline parallel job
tags:
  tag: tagvalue
  owner: sdkteam
settings:
  default_compute: azureml:cpu-cluster
jobs:
  prepare_data:
    type: command
    compute: azureml:cpu-cluster
    command: >-
      python make_digits.py --output_folder ${{outputs.mnist_png}} --count 12;
    code: DIGITS
    outputs:
      mnist_png:
        type: uri_folder
        mode: rw_mount
    environment:
      name: "prepare_data_environment"
      version: 1
      image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04
      conda_file: ./environment/environment_prepare.yml
  predict_digits_mnist:
    type: parallel
    compute: azureml:cpu-cluster
    inputs:
      job_data_path:
        type: uri_folder
        path: ${{parent.jobs.prepare_data.outputs.mnist_png}}
        mode: ro_mount
      score_model:
        type: uri_folder
        path: ./mnist_models
        mode: download
    outputs:
      job_output_file:
        type: uri_file
        mode: rw_mount
    mini_batch_size: "5"
    resources:
      instance_count: 1
    mini_batch_error_threshold: 5
    logging_level: "DEBUG"
    input_data: ${{inputs.job_data_path}}
    max_concurrency_per_instance: 2
    retry_settings:
      max_retries: 2
      timeout: 60
    task:
      type: run_function
      code: DIGITS
      entry_script: identify.py
      environment:
        name: "batch_environment"
        version: 1
        image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04
      program_arguments: >-
        --model ${{inputs.score_model}}
      append_row_to: ${{outputs.job_output_file}}
  view_prediction_result:
    type: command
    compute: azureml:cpu-cluster
    inputs:
      inference_result: ${{parent.jobs.predict_digits_mnist.outputs.job_output_file}}
    command: >-
      cat ${{inputs.inference_result}}
    environment: azureml://registries/azureml/environments/sklearn-1.5/labels/latest
"""

# the shape of cli/jobs/parallel/2a_iris_batch_prediction: an mltable input, a model folder, the rows
# appended to a uri_file output whose azureml:// path names aggregated_returns.csv
IRIS = """\
$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json
type: pipeline
display_name: iris-batch-prediction-using-parallel
experiment_name: hello-world-parallel-job
settings:
  default_compute: azureml:cpu-cluster
jobs:
  batch_prediction:
    type: parallel
    compute: azureml:cpu-cluster
    inputs:
      input_data:
        type: mltable
        path: ./neural-iris-mltable
        mode: direct
      score_model:
        type: uri_folder
        path: ./iris-model
        mode: download
    outputs:
      job_output_file:
        type: uri_file
        path: azureml://datastores/${{default_datastore}}/paths/${{name}}/aggregated_returns.csv
        mode: rw_mount
    input_data: ${{inputs.input_data}}
    mini_batch_size: "1kb"
    resources:
        instance_count: 1
    max_concurrency_per_instance: 2
    logging_level: "DEBUG"
    error_threshold: 5
    mini_batch_error_threshold: 5
    retry_settings:
      max_retries: 2
      timeout: 60
    environment_variables:
      "AZUREML_PARALLEL_EXAMPLE": "2a_yaml"
    task:
      type: run_function
      code: IRIS
      entry_script: score_iris.py
      environment:
        name: "prs-env"
        version: 1
        image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04
        conda_file: ./environment/environment_parallel.yml
      program_arguments: >-
        --model ${{inputs.score_model}}
        --allowed_failed_percent 30
        --task_overhead_timeout 1200
        --progress_update_timeout 600
        --first_task_creation_timeout 600
        --resource_monitor_interval 20
      append_row_to: ${{outputs.job_output_file}}
"""

# the shape of cli/jobs/parallel/1a_oj_sales_prediction: a command component partitions a CSV into
# per-key folders and writes an MLTable; a parallel step trains per partition and returns nothing
OJ = """\
$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json
type: pipeline
display_name: partition by key parallel job
experiment_name: hello-world-parallel-job
tags:
  tag: tagvalue
settings:
  default_compute: azureml:cpu-cluster
jobs:
  partition_job:
    type: command
    component: ./src/partition_data/partition_data.yml
    inputs:
      data_source:
        type: uri_file
        path: ./oj_sales_data/oj_sales_data.csv
      partition_keys: Store,Brand
    outputs:
      tabular_output_data:
        type: mltable
        mode: rw_mount
  parallel_train:
    type: parallel
    compute: azureml:cpu-cluster
    inputs:
      data_source:
        path: ${{parent.jobs.partition_job.outputs.tabular_output_data}}
        type: mltable
        mode: direct
      target_col: "Quantity"
    outputs:
      model_folder:
        type: uri_folder
        mode: rw_mount
    partition_keys:
      - Store
      - Brand
    resources:
      instance_count: 1
    error_threshold: -1
    mini_batch_error_threshold: 5
    logging_level: "INFO"
    input_data: ${{inputs.data_source}}
    max_concurrency_per_instance: 2
    retry_settings:
      max_retries: 2
      timeout: 60
    environment_variables:
      "AZUREML_PARALLEL_EXAMPLE": "1a_yaml"
    task:
      type: run_function
      code: OJCODE
      entry_script: train.py
      environment:
        image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04
        conda_file: ./src/parallel_train/conda.yaml
      program_arguments: >-
        --target_col ${{inputs.target_col}}
        --model_folder ${{outputs.model_folder}}
"""


def write(tmp_path: Path, text: str, name: str = "pipeline.yml") -> Path:
    path = tmp_path / name
    path.write_text(text.replace("DIGITS", str(PIPES / "digits")).replace("IRIS", str(PIPES / "iris"))
                    .replace("OJCODE", str(PIPES / "oj")))
    return path


def mnist(tmp_path: Path, text: str = MNIST) -> Path:
    (tmp_path / "mnist_models").mkdir()
    (tmp_path / "mnist_models" / "offset.txt").write_text("3")
    return write(tmp_path, text)


def expected_digits(count: int = 12) -> list[list]:
    return sorted([f"{i}.txt", (i % 10 + 3) % 10] for i in range(count))


def read_digits(path: Path) -> list[list]:
    frame = pd.read_csv(path, delimiter=":", header=None)  # as Azure's notebook reads the digits
    return sorted([name, int(digit)] for name, digit in frame.itertuples(index=False))


def state(out: Path) -> dict:
    return json.loads((out / "pipeline.json").read_text())


def test_mnist_shape_runs_its_three_steps_in_order_each_in_its_own_folder(tmp_path, batchinfer):
    out = tmp_path / "out"
    text = MNIST.replace("--count 12;", "--count 12;\n      echo \"$GREETING from $(command -v python)\";").replace(
        "    code: DIGITS\n    outputs:", "    code: DIGITS\n    environment_variables:\n      GREETING: hello\n    outputs:")
    run = batchinfer("run", str(mnist(tmp_path, text)), "--output", str(out))
    assert run.code == 0, run.stderr
    assert run.stdout == ""  # stdout carries data only: the steps' own output goes to stderr and their logs
    rows = out / "predict_digits_mnist" / "outputs" / "job_output_file" / "parallel_run_step.txt"
    assert read_digits(rows) == expected_digits()
    # each step's run folder holds its logs and state; each port holds data only
    assert sorted(os.listdir(rows.parent)) == ["parallel_run_step.txt"]
    assert (out / "predict_digits_mnist" / "summary.json").exists()
    assert (out / "predict_digits_mnist" / "logs" / "worker-0.log").exists()
    assert sorted(os.listdir(out / "prepare_data" / "outputs" / "mnist_png")) == sorted(f"{i}.txt" for i in range(12))
    # the view step cat-ed the uri_file itself; its output is in its std_log.txt and on stderr
    view_log = (out / "view_prediction_result" / "logs" / "std_log.txt").read_text()
    assert sorted(view_log.splitlines()) == sorted(rows.read_text().splitlines())
    assert "0.txt: 3" in run.stderr
    doc = state(out)
    assert doc["status"] == "succeeded" and doc["exit_code"] == 0
    assert [s["status"] for s in doc["steps"].values()] == ["succeeded"] * 3
    # the command ran in a snapshot of its code folder, with its environment_variables and this python first on PATH
    assert (out / "prepare_data" / "code" / "make_digits.py").exists()
    prepare_log = (out / "prepare_data" / "logs" / "std_log.txt").read_text()
    assert f"hello from {Path(sys.executable).parent / 'python'}" in prepare_log
    status = batchinfer("status", str(out))
    assert status.code == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith("pipeline pipeline: succeeded") and len(lines) == 4
    assert "predict-digits-mnist: succeeded: 12/12 items" in lines[2]


def test_a_rerun_reuses_the_finished_steps(tmp_path, batchinfer):
    """A command step that appends to a counter file runs once across two runs; the parallel step is reused."""
    counter = tmp_path / "counter.txt"
    text = MNIST.replace("--count 12;", f"--count 12; echo ran >> {counter}")
    out = tmp_path / "out"
    first = batchinfer("run", str(mnist(tmp_path, text)), "--output", str(out))
    assert first.code == 0, first.stderr
    second = batchinfer("run", str(tmp_path / "pipeline.yml"), "--output", str(out))
    assert second.code == 0, second.stderr
    assert counter.read_text() == "ran\n"
    assert "step prepare_data: reused" in second.stderr
    assert "reused the finished job predict-digits-mnist" in second.stderr
    assert [s["status"] for s in state(out)["steps"].values()] == ["reused"] * 3
    # a changed command runs again, and the steps that read its output start over
    (tmp_path / "pipeline.yml").write_text((tmp_path / "pipeline.yml").read_text().replace("echo ran", "echo ran again"))
    third = batchinfer("run", str(tmp_path / "pipeline.yml"), "--output", str(out))
    assert third.code == 0, third.stderr
    assert counter.read_text() == "ran\nran again\n"
    assert [s["status"] for s in state(out)["steps"].values()] == ["succeeded"] * 3
    rows = out / "predict_digits_mnist" / "outputs" / "job_output_file" / "parallel_run_step.txt"
    assert read_digits(rows) == expected_digits()


def test_input_binds_a_step_input_and_skips_the_step_that_made_it(tmp_path, batchinfer):
    data = tmp_path / "digits"
    data.mkdir()
    for i in range(7):
        (data / f"{i}.txt").write_text(str(i))
    out = tmp_path / "out"
    run = batchinfer("run", str(mnist(tmp_path)), "--output", str(out),
                     "--input", "predict_digits_mnist.job_data_path=./digits")
    assert run.code == 0, run.stderr
    assert "step prepare_data skipped: every output it makes is bound with --input instead" in run.stderr
    assert not (out / "prepare_data").exists()
    rows = out / "predict_digits_mnist" / "outputs" / "job_output_file" / "parallel_run_step.txt"
    assert read_digits(rows) == expected_digits(7)
    assert state(out)["steps"]["prepare_data"]["status"] == "skipped"
    assert state(out)["steps"]["view_prediction_result"]["status"] == "succeeded"  # never upstream: still runs


def test_step_runs_one_step_alone(tmp_path, batchinfer):
    out = tmp_path / "out"
    path = mnist(tmp_path)
    alone = batchinfer("run", str(path), "--output", str(out), "--step", "predict_digits_mnist")
    assert_one_line_error(alone, "jobs.predict_digits_mnist.inputs.job_data_path", "prepare_data",
                          "--input predict_digits_mnist.job_data_path=PATH")
    full = batchinfer("run", str(path), "--output", str(out))
    assert full.code == 0, full.stderr
    view = batchinfer("run", str(path), "--output", str(out), "--step", "view_prediction_result")
    assert view.code == 0, view.stderr
    doc = state(out)
    assert doc["steps"]["view_prediction_result"]["status"] == "reused"
    assert doc["steps"]["prepare_data"]["status"] == "skipped"


def iris_data(tmp_path: Path, rows: int = 150) -> None:
    table = tmp_path / "neural-iris-mltable"
    table.mkdir()
    frame = pd.DataFrame({"flower": [f"f{i:03d}" for i in range(rows)], "petal_length": [i % 7 for i in range(rows)]})
    frame.to_csv(table / "iris.csv", index=False)
    (table / "MLTable").write_text(textwrap.dedent("""\
        type: mltable
        paths:
          - file: ./iris.csv
        transformations:
          - read_delimited:
              delimiter: ','
              encoding: 'utf8'
              header: all_files_same_headers
        """))
    (tmp_path / "iris-model").mkdir()
    (tmp_path / "iris-model" / "threshold.txt").write_text("3")


def test_iris_shape_rows_go_to_aggregated_returns_csv_and_read_as_azure_reads_them(tmp_path, batchinfer):
    iris_data(tmp_path)
    out = tmp_path / "out"
    run = batchinfer("run", str(write(tmp_path, IRIS)), "--output", str(out))
    assert run.code == 0, run.stderr
    port = out / "batch_prediction" / "outputs" / "job_output_file"
    assert os.listdir(port) == ["aggregated_returns.csv"]
    note = [line for line in run.stderr.splitlines() if "azureml://" in line]
    assert len(note) == 1 and str(port / "aggregated_returns.csv") in note[0]
    assert "azureml://datastores/workspaceblobstore/paths/pipeline/aggregated_returns.csv" in note[0]
    frame = pd.read_csv(port / "aggregated_returns.csv", delimiter=" ", header=None)
    assert frame.shape == (150, 3)
    assert sorted(frame[0]) == [f"f{i:03d}" for i in range(150)]
    assert all((p > 3) == (label == "big") for p, label in zip(frame[1], frame[2]))
    summary = json.loads((out / "batch_prediction" / "summary.json").read_text())
    assert summary["job"] == "batch-prediction"  # an Azure name with '_', normalised
    assert summary["mini_batches_total"] > 1 and summary["workers"] == 2


def test_a_local_output_path_is_honoured(tmp_path, batchinfer):
    iris_data(tmp_path, rows=20)
    text = IRIS.replace("azureml://datastores/${{default_datastore}}/paths/${{name}}/aggregated_returns.csv",
                        "./results/${{name}}/scores.txt")
    out = tmp_path / "out"
    run = batchinfer("run", str(write(tmp_path, text)), "--output", str(out))
    assert run.code == 0, run.stderr
    assert len((tmp_path / "results" / "pipeline" / "scores.txt").read_text().splitlines()) == 20
    assert not (out / "batch_prediction" / "outputs").exists()
    assert "azureml://" not in run.stderr


def test_standalone_parallel_job_with_an_azure_name_is_normalised(tmp_path, batchinfer):
    iris_data(tmp_path, rows=10)
    job = yaml.safe_load(write(tmp_path, IRIS).read_text())["jobs"]["batch_prediction"]
    job.update({"$schema": "https://azuremlschemas.azureedge.net/latest/parallelJob.schema.json",
                "name": "batch_score_with_tabular_input"})
    path = tmp_path / "parallel.yml"
    path.write_text(yaml.safe_dump(job))
    out = tmp_path / "out"
    run = batchinfer("run", str(path), "--output", str(out))
    assert run.code == 0, run.stderr
    assert json.loads((out / "summary.json").read_text())["job"] == "batch-score-with-tabular-input"
    assert len((out / "outputs" / "job_output_file" / "aggregated_returns.csv").read_text().splitlines()) == 10


def oj_data(tmp_path: Path) -> None:
    component = tmp_path / "src" / "partition_data"
    component.mkdir(parents=True)
    for name in ("partition_data.yml", "partition_data.py"):
        (component / name).write_text((PIPES / "oj" / name).read_text())
    (tmp_path / "oj_sales_data").mkdir()
    rows = [{"WeekStarting": f"2024-01-{d:02d}", "Store": store, "Brand": brand, "Quantity": q * 10 + d}
            for store in (1, 2) for brand in ("dominicks", "tropicana") for q, d in enumerate(range(1, 6))]
    pd.DataFrame(rows).to_csv(tmp_path / "oj_sales_data" / "oj_sales_data.csv", index=False)


def test_oj_shape_component_partitions_then_one_model_per_partition(tmp_path, batchinfer):
    oj_data(tmp_path)
    out = tmp_path / "out"
    run = batchinfer("run", str(write(tmp_path, OJ)), "--output", str(out))
    # the command component ran from its own folder, with its optional $[[...]] part dropped
    table = out / "partition_job" / "outputs" / "tabular_output_data"
    assert (table / "MLTable").exists() and (table / "1" / "tropicana" / "partitioned_data.csv").exists()
    assert "partitioned 20 rows by ['Store', 'Brand']" in (out / "partition_job" / "logs" / "std_log.txt").read_text()
    # one model per partition, in the parallel step's own port folder
    models = out / "parallel_train" / "outputs" / "model_folder"
    assert sorted(os.listdir(models)) == ["1_dominicks.model", "1_tropicana.model", "2_dominicks.model",
                                          "2_tropicana.model"]
    assert sorted(os.listdir(out / "parallel_train")) == [".batchinfer", "logs", "outputs", "summary.json"]
    summary = json.loads((out / "parallel_train" / "summary.json").read_text())
    assert summary["mini_batches_total"] == 4 and summary["items_succeeded"] == 0
    assert run.code == 0, run.stderr  # run() returns [] by design: judged by the thresholds alone


@pytest.mark.parametrize("failure, said", [
    ("exit 3", "its command exited with code 3"),
    ("kill -KILL $$", "its command was killed by signal 9 (SIGKILL)"),
    ("python -c 'import sys; sys.exit(\"no data\")'", "its command exited with code 1"),
])
def test_a_failing_command_step_stops_the_pipeline_with_one_line(tmp_path, batchinfer, failure, said):
    text = MNIST.replace("--count 12;", f"--count 12; echo preparing; {failure}")  # the command's last word fails
    out = tmp_path / "out"
    run = batchinfer("run", str(mnist(tmp_path, text)), "--output", str(out))
    assert run.code == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("batchinfer: error:")]
    assert errors == [f"batchinfer: error: step prepare_data: {said} "
                      f"(see {out / 'prepare_data' / 'logs' / 'std_log.txt'})"]
    assert "Traceback" not in run.stderr
    assert "preparing\n" in (out / "prepare_data" / "logs" / "std_log.txt").read_text()
    doc = state(out)
    assert doc["status"] == "failed" and doc["exit_code"] == 1
    assert [s["status"] for s in doc["steps"].values()] == ["failed", "waiting", "waiting"]
    assert not (out / "predict_digits_mnist").exists()


def test_a_killed_parallel_step_resumes_and_the_finished_command_step_is_reused(tmp_path, run_marker, batchinfer):
    counter = tmp_path / "counter.txt"
    gate = tmp_path / "gate"
    text = textwrap.dedent(f"""\
        type: pipeline
        jobs:
          prep:
            type: command
            command: python make_digits.py --output_folder ${{{{outputs.files}}}} --count 20; echo ran >> {counter}
            code: {PIPES / 'digits'}
            outputs:
              files: {{type: uri_folder}}
          echo:
            type: parallel
            inputs:
              files: {{type: uri_folder, path: '${{{{parent.jobs.prep.outputs.files}}}}'}}
            outputs:
              rows: {{type: uri_file}}
            input_data: ${{{{inputs.files}}}}
            mini_batch_size: "1"
            max_concurrency_per_instance: 2
            task:
              code: {SCRIPTS}
              entry_script: gated_echo.py
              program_arguments: --gate {gate} --held 9
              append_row_to: ${{{{outputs.rows}}}}
        """)
    path = tmp_path / "resume.yml"
    path.write_text(text)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "batchinfer", "run", str(path), "--output", str(out)],
                            env={**os.environ, MARKER: run_marker}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    journal = out / "echo" / ".batchinfer" / "journal.jsonl"
    # 9.txt and 19.txt wait for the gate, the 18 others are echoed at once: 5 commits, then a kill
    try:
        deadline = time.monotonic() + 120
        while not journal.exists() or journal.read_bytes().count(b"\n") < 5:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the coordinator and its workers: a kill -9 of the whole run
        proc.communicate()
    gate.write_text("open")
    run = batchinfer("run", str(path), "--output", str(out))
    assert run.code == 0, run.stderr
    assert counter.read_text() == "ran\n"
    rows = (out / "echo" / "outputs" / "rows" / "parallel_run_step.txt").read_text().splitlines()
    assert sorted(rows) == sorted(f"{i}.txt {i % 10}" for i in range(20))
    summary = json.loads((out / "echo" / "summary.json").read_text())
    assert summary["mini_batches_resumed"] >= 5


# ------------------------------------------------------------------ one-line errors, from a table

STEP = """\
type: pipeline
jobs:
  first:
    type: command
    command: echo hi > ${{outputs.out}}/x
    outputs:
      out: {type: uri_folder}
"""
ERRORS = {
    "unknown key": (STEP.replace("type: pipeline", "type: pipeline\njobz: {}"), ["unknown key 'jobz'", "did you mean 'jobs'"]),
    "unknown step key": (STEP.replace("    type: command", "    type: command\n    comand: x"),
                         ["unknown key 'comand' in jobs.first", "did you mean 'command'"]),
    "cycle": (STEP + "    inputs:\n      back: ${{parent.jobs.second.outputs.out}}\n"
              "  second:\n    type: command\n    command: echo\n    inputs:\n      a: ${{parent.jobs.first.outputs.out}}\n"
              "    outputs:\n      out: {type: uri_folder}\n", ["first -> second -> first", "cycle"]),
    "unknown step": (STEP + "  second:\n    command: cat ${{inputs.a}}\n    inputs:\n      a: ${{parent.jobs.nope.outputs.out}}\n",
                     ["jobs.second.inputs.a", "names no step"]),
    "unknown port": (STEP + "  second:\n    command: cat ${{inputs.a}}\n    inputs:\n      a: ${{parent.jobs.first.outputs.nope}}\n",
                     ["step 'first' has no output 'nope'"]),
    "registry component": (STEP + "  second:\n    component: azureml:my_component:1\n",
                           ["jobs.second.component", "registered in Azure ML"]),
    "sweep step": (STEP + "  tune:\n    type: sweep\n", ["jobs.tune", "type 'sweep' cannot run"]),
    "automl step": (STEP + "  auto:\n    type: automl\n", ["jobs.auto", "type 'automl' cannot run"]),
    "spark step": (STEP + "  spark:\n    type: spark\n", ["jobs.spark", "type 'spark' cannot run"]),
    "sub-pipeline": (STEP + "  inner:\n    type: pipeline\n    component: ./inner.yml\n", ["jobs.inner", "a pipeline step"]),
    "unknown pipeline key": (STEP.replace("type: pipeline", "type: pipeline\nsetings: {}"),
                             ["unknown key 'setings' in an Azure ML pipeline", "did you mean 'settings'"]),
    "azureml input asset": (STEP + "  second:\n    command: cat ${{inputs.a}}\n    inputs:\n"
                            "      a: {type: uri_folder, path: 'azureml:mnist:1'}\n",
                            ["jobs.second.inputs.a.path", "azureml:mnist:1", "--input second.a=PATH"]),
    "unsafe step name": (STEP.replace("  first:", "  'a/b':"), ["jobs.a/b", "plain file name"]),
    "reserved step name": (STEP.replace("  first:", "  logs:"), ["jobs.logs", "batchinfer's own"]),
    "missing component file": (STEP + "  second:\n    component: ./nope.yml\n", ["jobs.second.component", "./nope.yml", "no such file"]),
    "unbound command input": (STEP + "  second:\n    command: cat ${{inputs.a}}\n", ["${{inputs.a}} is not bound", "--input second.a=PATH"]),
    # fields of the wrong type: one line naming the field
    "code is a list": (STEP + "    code: [1]\n", ["jobs.first.code: [1] is not a folder path"]),
    "task code is a list": (STEP + "  second:\n    type: parallel\n    task: {code: [1], entry_script: x.py}\n",
                            ["jobs.second.task.code: [1] is not a folder path"]),
    "output path is a list": (STEP.replace("out: {type: uri_folder}", "out: {type: uri_folder, path: [1]}"),
                              ["jobs.first.outputs.out.path: [1] is not a path"]),
    "output is text": (STEP.replace("out: {type: uri_folder}", "out: hello"),
                       ["jobs.first.outputs.out: hello is not an output"]),
    "input path is a mapping": (STEP + "    inputs:\n      a: {type: uri_folder, path: {x: 1}}\n",
                                ["jobs.first.inputs.a.path", "is not a path"]),
    "input value is a list": (STEP + "    inputs:\n      a: [1, 2]\n", ["jobs.first.inputs.a: [1, 2] is not a value"]),
    "pipeline input is a list": (STEP.replace("type: pipeline", "type: pipeline\ninputs:\n  a: [1]"),
                                 ["inputs.a: [1] is not a value"]),
    "name is a list": (STEP.replace("type: pipeline", "type: pipeline\nname: [a]"), ["name: ['a'] is not a name"]),
    "environment variable is a mapping": (STEP + "    environment_variables: {X: {a: 1}}\n",
                                          ["jobs.first.environment_variables.X", "is not a value an environment"]),
    "environment variables are a list": (STEP + "    environment_variables: [X]\n",
                                         ["jobs.first.environment_variables", "is not a mapping"]),
    "component is a folder": (STEP + "  second:\n    component: ./\n", ["jobs.second.component", "is a folder"]),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_what_cannot_run_is_one_line(tmp_path, batchinfer, case):
    text, fragments = ERRORS[case]
    path = tmp_path / "pipeline.yml"
    path.write_text(text)
    run = batchinfer("run", str(path), "--output", str(tmp_path / "out"))
    assert_one_line_error(run, *fragments)


@pytest.mark.parametrize("args, fragments", [
    (["--input", "nope=./x"], ["the pipeline has no input 'nope'"]),
    (["--input", "ghost.a=./x"], ["the pipeline has no step 'ghost'"]),
    (["--input", "first.ghost=./x"], ["step 'first' has no input 'ghost'"]),
    (["--input", "first"], ["expected [STEP.]NAME=PATH_OR_URL"]),
    (["--step", "ghost"], ["--step ghost", "no step 'ghost'"]),
])
def test_command_line_bindings_that_name_nothing_are_one_line(tmp_path, batchinfer, args, fragments):
    path = tmp_path / "pipeline.yml"
    path.write_text(STEP)
    assert_one_line_error(batchinfer("run", str(path), "--output", str(tmp_path / "out"), *args), *fragments)


def test_convert_prints_each_parallel_step_as_a_native_spec(tmp_path, batchinfer):
    iris_data(tmp_path, rows=10)
    converted = batchinfer("convert", str(write(tmp_path, IRIS)))
    assert converted.code == 0, converted.stderr
    documents = [d for d in yaml.safe_load_all(converted.stdout) if d]
    assert len(documents) == 1
    native = documents[0]
    assert native["name"] == "batch-prediction" and native["append_row_file_name"] == "aggregated_returns.csv"
    assert native["inputs"]["type"] == "tabular" and native["arguments"][:2] == ["--model", str(tmp_path / "iris-model")]


# ------------------------------------------------------------------ bindings, overrides, the port folder

PARENT = """\
type: pipeline
name: Score_Digits
inputs:
  digits:
    type: uri_folder
    path: ./digits
  model:
    type: uri_folder
    path: ./mnist_models
outputs:
  scores:
    type: uri_folder
    path: ./published
jobs:
  score:
    type: parallel
    inputs:
      data: ${{parent.inputs.digits}}
      model: {type: uri_folder, path: '${{parent.inputs.model}}'}
    outputs:
      rows: ${{parent.outputs.scores}}
    input_data: ${{inputs.data}}
    mini_batch_size: "4"
    max_concurrency_per_instance: 2
    task:
      code: DIGITS
      entry_script: identify_and_keep.py
      program_arguments: --model ${{inputs.model}} --append_row_file_name digits.txt
      append_row_to: ${{outputs.rows}}
"""


def digits(folder: Path, count: int) -> Path:
    folder.mkdir()
    for i in range(count):
        (folder / f"{i}.txt").write_text(str(i % 10))
    return folder


def test_parent_inputs_and_outputs_bind_and_input_rebinds_a_pipeline_input(tmp_path, batchinfer):
    digits(tmp_path / "digits", 9)
    digits(tmp_path / "other", 3)
    path = mnist(tmp_path, PARENT)
    run = batchinfer("run", str(path), "--json")
    assert run.code == 0, run.stderr
    out = tmp_path / "outputs" / "score-digits"  # the default output folder, under the normalised name
    assert json.loads(run.stdout)["steps"]["score"]["status"] == "succeeded"
    published = tmp_path / "published"
    assert read_digits(published / "digits.txt") == expected_digits(9)  # --append_row_file_name, honoured
    # the script's own files share the port with the rows; logs and summary stay in the run folder
    assert sorted(os.listdir(published)) == ["0.txt.seen", "4.txt.seen", "8.txt.seen", "digits.txt"]
    assert (out / "score" / "summary.json").exists() and not (out / "score" / "outputs").exists()
    # a fresh start needs an empty output: a user's port that holds the script's files is refused, never emptied
    args = ("run", str(path), "--restart", "--input", "digits=./other", "--set", "score.mini_batch_size=1")
    refused = batchinfer(*args)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("batchinfer: error:")]
    assert refused.code == 2 and len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert str(published) in errors[0] and "is not empty" in errors[0] and "0.txt.seen" in errors[0]
    assert sorted(os.listdir(published)) == ["0.txt.seen", "4.txt.seen", "8.txt.seen", "digits.txt"]
    for name in ("0.txt.seen", "4.txt.seen", "8.txt.seen"):
        (published / name).unlink()
    again = batchinfer(*args)  # --restart removes the row file batchinfer wrote
    assert again.code == 0, again.stderr
    assert read_digits(published / "digits.txt") == expected_digits(3)
    assert sorted(os.listdir(published)) == ["0.txt.seen", "1.txt.seen", "2.txt.seen", "digits.txt"]
    assert json.loads((out / "score" / "summary.json").read_text())["mini_batches_total"] == 3


def test_set_applies_to_every_parallel_step_or_to_one(tmp_path, batchinfer):
    digits(tmp_path / "digits", 6)
    path = mnist(tmp_path, PARENT)
    out = tmp_path / "out"
    run = batchinfer("run", str(path), "--output", str(out), "--set", "mini_batch_size=2", "--set", "score.run_max_try=1")
    assert run.code == 0, run.stderr
    assert json.loads((out / "score" / "summary.json").read_text())["mini_batches_total"] == 3


def test_validate_and_plan_take_a_pipeline(tmp_path, batchinfer):
    path = mnist(tmp_path)
    valid = batchinfer("validate", str(path))
    assert valid.code == 0, valid.stderr
    assert "step predict_digits_mnist: waits on step prepare_data" in valid.stderr
    assert "is valid: pipeline 'pipeline', 3 steps" in valid.stderr
    plan = batchinfer("plan", str(path), "--json", "--input", f"predict_digits_mnist.job_data_path={digits(tmp_path / 'd', 11)}")
    assert plan.code == 0, plan.stderr
    steps = json.loads(plan.stdout)["steps"]
    assert steps["prepare_data"]["planned"] is False and "skipped" in steps["prepare_data"]["why"]
    assert steps["predict_digits_mnist"]["mini_batches"] == 3 and steps["predict_digits_mnist"]["items"] == 11


def test_mnist_pipeline_shape_with_a_file_list_mltable_made_by_a_command_step(tmp_path, batchinfer):
    """cli/jobs/pipelines/mnist-batch-identification-using-parallel: prepare_data writes the images and an
    MLTable that lists their folder; the parallel step reads it as type: mltable."""
    text = (MNIST.replace("--count 12;", "--count 12 --subfolder digits;\n      python dump_mltable.py "
                          "--output_folder ${{outputs.mnist_png}};")
            .replace("        type: uri_folder\n        mode: rw_mount", "        type: mltable\n        mode: rw_mount")
            .replace("        type: uri_folder\n        path: ${{parent", "        type: mltable\n        path: ${{parent"))
    out = tmp_path / "out"
    run = batchinfer("run", str(mnist(tmp_path, text)), "--output", str(out))
    assert run.code == 0, run.stderr
    rows = out / "predict_digits_mnist" / "outputs" / "job_output_file" / "parallel_run_step.txt"
    assert read_digits(rows) == expected_digits()


def test_input_binds_a_literal_input_as_text(tmp_path, batchinfer):
    """--input STEP.NAME=VALUE on a string input (OJ's partition_keys) is the text itself, not a path."""
    oj_data(tmp_path)
    out = tmp_path / "out"
    run = batchinfer("run", str(write(tmp_path, OJ)), "--output", str(out), "--input", "partition_job.partition_keys=Store",
                     "--step", "partition_job")
    assert run.code == 0, run.stderr
    table = out / "partition_job" / "outputs" / "tabular_output_data"
    assert sorted(p.name for p in table.iterdir()) == ["1", "2", "MLTable"]
    assert state(out)["steps"]["parallel_train"]["status"] == "skipped"


def test_a_parallel_component_file_with_input_defaults(tmp_path, batchinfer):
    """component: ./file.yml for a parallel step: its code relative to the component's own folder, its
    input defaults used, the job node's inputs and settings over the component's."""
    iris_data(tmp_path, rows=30)
    text = textwrap.dedent(f"""\
        type: pipeline
        jobs:
          score:
            type: parallel
            component: {PIPES / 'iris_component' / 'score_component.yml'}
            inputs:
              input_data: {{type: mltable, path: ./neural-iris-mltable}}
              score_model: {{type: uri_folder, path: ./iris-model}}
            mini_batch_size: "100kb"
        """)
    out = tmp_path / "out"
    run = batchinfer("run", str(write(tmp_path, text)), "--output", str(out))
    assert run.code == 0, run.stderr
    rows = out / "score" / "outputs" / "job_output_file" / "scores.txt"
    assert len(pd.read_csv(rows, delimiter=" ", header=None)) == 30
    assert json.loads((out / "score" / "summary.json").read_text())["mini_batches_total"] == 1  # the node's size


def test_convert_of_a_standalone_parallel_job_keeps_azures_file_name(tmp_path, batchinfer):
    iris_data(tmp_path, rows=5)
    job = yaml.safe_load(write(tmp_path, IRIS).read_text())["jobs"]["batch_prediction"]
    (tmp_path / "parallel.yml").write_text(yaml.safe_dump({**job, "name": "Batch_Score"}))
    converted = batchinfer("convert", str(tmp_path / "parallel.yml"))
    assert converted.code == 0, converted.stderr
    native = yaml.safe_load(converted.stdout)
    assert native["append_row_file_name"] == "aggregated_returns.csv" and native["name"] == "batch-score"


def test_a_file_of_the_users_at_the_row_files_name_in_the_port_is_never_overwritten(tmp_path, batchinfer):
    iris_data(tmp_path, rows=5)
    port = tmp_path / "published"  # a local path bound to the port, where the user keeps a file of that name
    port.mkdir()
    (port / "aggregated_returns.csv").write_text("mine\n")
    text = IRIS.replace("azureml://datastores/${{default_datastore}}/paths/${{name}}/", "./published/")
    run = batchinfer("run", str(write(tmp_path, text)), "--output", str(tmp_path / "out"))
    assert run.code == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("batchinfer: error:")]
    assert len(errors) == 1 and str(port / "aggregated_returns.csv") in errors[0] and "did not write" in errors[0]
    assert (port / "aggregated_returns.csv").read_text() == "mine\n"


def test_a_failing_parallel_step_stops_the_pipeline_with_its_exit_code(tmp_path, batchinfer):
    out = tmp_path / "out"
    path = mnist(tmp_path)
    (tmp_path / "mnist_models" / "offset.txt").unlink()  # init() cannot load the model
    run = batchinfer("run", str(path), "--output", str(out))
    assert run.code == 1, run.stderr
    assert "step predict_digits_mnist failed (exit 1): the pipeline stops here" in run.stderr
    doc = state(out)
    assert [s["status"] for s in doc["steps"].values()] == ["succeeded", "failed", "waiting"]
    assert doc["status"] == "failed" and doc["exit_code"] == 1
    assert not (out / "view_prediction_result").exists()
    lines = batchinfer("status", str(out)).stdout.splitlines()
    assert lines[0] == "pipeline pipeline: failed (exit 1)" and "waiting" in lines[3]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_stopping_batchinfer_stops_a_running_command_step_and_everything_it_started(tmp_path, run_marker, signum):
    # SIGTERM: batchinfer stops the command's group itself. SIGKILL: nothing of batchinfer's runs, the
    # kernel tells the command's guard (_command_guard.py), which kills the group; the leak guard checks
    path = tmp_path / "pipeline.yml"
    path.write_text("type: pipeline\njobs:\n  wait:\n    command: echo start; sleep 600 | cat; echo never\n")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "batchinfer", "run", str(path), "--output", str(out)],
                            env={**os.environ, MARKER: run_marker}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    log = out / "wait" / "logs" / "std_log.txt"
    try:
        deadline = time.monotonic() + 60
        while not (log.exists() and "start" in log.read_text()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the command did not start"
            time.sleep(0.02)
        proc.send_signal(signum)  # to batchinfer alone
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if signum == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL and log.read_text() == "start\n"
        return
    assert proc.returncode == 143, stderr
    assert "step wait was interrupted: run the pipeline again to continue" in stderr
    assert state(out)["steps"]["wait"]["status"] == "interrupted" and log.read_text() == "start\n"


def test_a_command_steps_uri_file_output_is_a_file_that_the_next_step_reads(tmp_path, batchinfer):
    path = tmp_path / "pipeline.yml"
    path.write_text(textwrap.dedent("""\
        type: pipeline
        jobs:
          count:
            command: echo 42 > ${{outputs.total}}; echo yes > ${{outputs.named}}
            outputs:
              total: {type: uri_file}
              named: {type: uri_file, path: ./kept/answer.txt}
          show:
            command: cat ${{inputs.total}} ${{inputs.named}}
            inputs:
              total: ${{parent.jobs.count.outputs.total}}
              named: ${{parent.jobs.count.outputs.named}}
        """))
    out = tmp_path / "out"
    run = batchinfer("run", str(path), "--output", str(out))
    assert run.code == 0, run.stderr
    assert (out / "count" / "outputs" / "total" / "total").read_text() == "42\n"
    assert (tmp_path / "kept" / "answer.txt").read_text() == "yes\n"  # a local path: the file itself
    assert (out / "show" / "logs" / "std_log.txt").read_text() == "42\nyes\n"
