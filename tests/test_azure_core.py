"""Azure's script helpers run locally: ``azureml.core`` (Model, Run, Dataset), ``azureml_user``'s
EntryScript, ``mini_batch_context.dataset`` and ``AZUREML_MODEL_DIR``, as Azure's public parallel
examples use them. Scripts under tests/scripts/azure_style make the same calls with our own code."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import SCRIPTS

from batchinfer._compat import command_step_environment


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run.output_dir / "logs" / "metrics.jsonl").read_text().splitlines()]


def uploads(run) -> dict[str, bytes]:
    root = run.output_dir / "logs" / "uploads"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- calls that work: (call, the records in logs/metrics.jsonl as (run, kind, name, value), uploads, tags)
WORKER, JOB = "batchinfer_worker-0", "batchinfer_job"
WORKING_CALLS = [
    ("log", [(WORKER, "metric", "accuracy", 0.93)], {}, {}),
    ("log_step", [(WORKER, "metric", "loss", 0.25)], {}, {}),
    ("log_numpy", [(WORKER, "metric", "mean", 1.5)], {}, {}),
    ("log_list", [(WORKER, "list", "losses", [0.5, 0.25])], {}, {}),
    ("log_row", [(WORKER, "row", "per_digit", {"digit": 7, "count": 12})], {}, {}),
    ("log_table", [(WORKER, "table", "counts", {"digit": [0, 1], "n": [3, 4]})], {}, {}),
    ("log_secret_url", [(WORKER, "metric", "source", "https://acct.blob.core.windows.net/c/x.csv?sv=1&sig=***")],
     {}, {}),
    ("log_secret_name", [(WORKER, "metric", "storage_account_key", "***")], {}, {}),
    ("parent_log", [(JOB, "metric", "rows_scored", 4)], {}, {}),
    ("tag", [(WORKER, "tag", "stage", "scoring")], {}, {"stage": "scoring"}),
    ("set_tags", [(WORKER, "tag", "stage", "scoring"), (WORKER, "tag", "owner", "ada")], {},
     {"owner": "ada", "stage": "scoring"}),
    ("upload_file", [(WORKER, "upload", "outputs/result.txt", "uploads/outputs/result.txt")],
     {"outputs/result.txt": b"scored\n"}, {}),
    ("upload_stream", [(WORKER, "upload", "outputs/stream.bin", "uploads/outputs/stream.bin")],
     {"outputs/stream.bin": b"bytes"}, {}),
    ("upload_folder", [(WORKER, "upload", "outputs/report/a.txt", "uploads/outputs/report/a.txt"),
                       (WORKER, "upload", "outputs/report/sub/b.txt", "uploads/outputs/report/sub/b.txt")],
     {"outputs/report/a.txt": b"a", "outputs/report/sub/b.txt": b"b"}, {}),
    ("log_image", [(WORKER, "image", "confusion", "uploads/images/plot.png")],
     {"images/plot.png": b"\x89PNG not really"}, {}),
    ("input_datasets", [(WORKER, "metric", "inputs", {"labels": ["/labels.csv"]})], {}, {}),
    ("dataset_rows", [(WORKER, "metric", "rows", 2)], {}, {}),
    ("model_download", [(WORKER, "metric", "downloaded", "weights")], {}, {}),
]


@pytest.mark.parametrize("call, records, uploaded, tags", WORKING_CALLS, ids=[c[0] for c in WORKING_CALLS])
def test_run_api_calls_are_kept_in_the_logs(tmp_path, job, text_files, call, records, uploaded, tags):
    data = text_files(2)
    (tmp_path / "labels.csv").write_text("label\ncat\ndog\n")
    (tmp_path / "clf.txt").write_text("weights")
    run = job("azure_style/run_calls.py", inputs={"path": str(data)}, arguments=["--call", call],
              side_inputs={"labels": "labels.csv"}, models={"clf": "clf.txt"}, process_count_per_node=1)
    assert run.code == 0, run.stderr
    seen = metrics(run)
    assert [(r["run"], r["kind"], r["name"], r["value"]) for r in seen] == records
    assert all(r["worker"] == "worker-0" and r["time"] > 0 for r in seen)
    assert "SECRET" not in (run.output_dir / "logs" / "metrics.jsonl").read_text()
    if call == "log":
        assert seen[0]["description"] == "held out"
    if call == "log_step":
        assert seen[0]["step"] == 3
    assert (uploads(run) if uploaded else {}) == uploaded
    assert sorted(run.rows()) == [f"f00{i}.txt {json.dumps(tags, sort_keys=True)}" for i in range(2)]


# --- calls that have no local meaning: (call, what the one-line reason must name)
CLOUD_CALLS = [
    ("Workspace.from_config", "azureml.core.Workspace.from_config() has no local meaning"),
    ("Workspace()", "azureml.core.Workspace() has no local meaning"),
    ("Experiment()", "azureml.core.Experiment() has no local meaning"),
    ("Dataset.File.from_files", "azureml.core.Dataset.File.from_files() has no local meaning"),
    ("Dataset.Tabular.from_delimited_files", "azureml.core.Dataset.Tabular.from_delimited_files() has no local"),
    ("Model.register", "azureml.core.Model.register() has no local meaning"),
    ("Run(experiment, run_id)", "azureml.core.Run(experiment, run_id) has no local meaning"),
    ("Run.get_metrics", "azureml.core.Run.get_metrics() has no local meaning"),
    ("Workspace.datastores", "azureml.core.Workspace.datastores has no local meaning"),
    ("Datastore.get", "azureml.core.Datastore.get() has no local meaning"),
    ("NoSuchThing", "azureml.core.NoSuchThing is not provided by batchinfer's local stand-in for azureml.core"),
    ("azureml.core.compute", "No module named 'azureml.core.compute' (batchinfer stands in for azureml.core's"),
    ("azureml.pipeline", "No module named 'azureml.pipeline"),
    ("EntryScript.config", "azureml_user.parallel_run.EntryScript.config has no local meaning"),
]


@pytest.mark.parametrize("call, named", CLOUD_CALLS, ids=[c[0] for c in CLOUD_CALLS])
def test_cloud_only_api_in_init_is_the_jobs_one_line_reason(job, text_files, call, named):
    data = text_files(2)
    run = job("azure_style/cloud_calls.py", inputs={"path": str(data)}, arguments=["--call", call],
              process_count_per_node=1)
    assert run.code == 1
    assert "Traceback" not in run.stderr
    reason = [line for line in run.stderr.splitlines() if line.startswith("batchinfer: workers failed to start")]
    assert len(reason) == 1 and named in reason[0], run.stderr
    assert run.summary["status"] == "failed"
    assert named in run.summary["reason"]


def test_cloud_only_api_in_run_fails_the_items_with_the_api_named(job, text_files):
    data = text_files(2)
    run = job("azure_style/cloud_calls.py", inputs={"path": str(data)},
              arguments=["--call", "Workspace.from_config", "--where", "run"], process_count_per_node=1,
              run_max_try=1, mini_batch_size=1)
    assert run.code == 1  # every try raised: no item succeeded
    assert "Traceback" not in run.stderr
    assert all("run() raised NoLocalMeaning: azureml.core.Workspace.from_config() has no local meaning"
               in error["message"] for error in run.errors())


# --- AZUREML_MODEL_DIR, as Azure documents it: (models, files in them, arguments, what the script opens)
def _models(tmp_path: Path, layout: str) -> dict[str, str]:
    (tmp_path / "model.pkl").write_text("file-model")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.txt").write_text("folder-model")
    (tmp_path / "scaler.txt").write_text("second-model")
    return {
        "file": {"iris": "model.pkl"},
        "folder": {"mnist": "model"},
        "two": {"iris": "model.pkl", "scaler": "scaler.txt"},
    }[layout]


MODEL_DIRS = [
    ("file", ["--open", "model.pkl", "--glob", "/*.pkl", "--name", "iris"], ["model.pkl"],
     {"model.pkl": "file-model", "/*.pkl": "file-model"}),
    ("folder", ["--open", "model", "--glob", "/*/", "--glob", "/*/*.txt", "--name", "mnist"], ["model"],
     {"model": "folder-model", "/*/": "folder-model", "/*/*.txt": "folder-model"}),
    ("two", ["--open", "iris/1/model.pkl", "--open", "scaler/1/scaler.txt", "--name", "iris", "--name", "scaler"],
     ["iris", "scaler"], {"iris/1/model.pkl": "file-model", "scaler/1/scaler.txt": "second-model"}),
]


@pytest.mark.parametrize("layout, arguments, listing, opened", MODEL_DIRS, ids=[m[0] for m in MODEL_DIRS])
def test_azureml_model_dir_is_laid_out_as_azure_documents(tmp_path, job, text_files, layout, arguments, listing,
                                                           opened):
    data = text_files(1)
    models = _models(tmp_path, layout)
    run = job("azure_style/model_dir.py", inputs={"path": str(data)}, models=models, arguments=arguments)
    assert run.code == 0, run.stderr
    seen = json.loads(run.rows()[0])
    assert seen["listing"] == listing
    assert seen["opened"] == opened
    # Model.get_model_path keeps giving the model's own path, file or folder
    assert seen["model_path"] == {name: str(tmp_path / path) for name, path in models.items()}


def test_model_dir_links_go_with_the_worker_and_leave_the_models(tmp_path, job, text_files):
    data = text_files(1)
    models = _models(tmp_path, "folder")
    run = job("azure_style/model_dir.py", inputs={"path": str(data)}, models=models, arguments=["--open", "model"])
    assert run.code == 0, run.stderr
    assert not (run.output_dir / ".batchinfer" / "tmp").exists()
    assert (tmp_path / "model" / "weights.txt").read_text() == "folder-model"


# --- Azure's own scripts' shapes, run as real jobs
def test_v1_notebook_iris_script_runs_unchanged(tmp_path, job, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from azure_style.iris_model import PetalRule

    (tmp_path / "iris_model.pkl").write_bytes(pickle.dumps(PetalRule()))
    frame = pd.DataFrame({
        "sepal_length": [5.1, 6.2, 7.7, 4.9], "sepal_width": [3.5, 2.9, 3.0, 3.1],
        "petal_length": [1.4, 4.3, 6.1, 1.5], "petal_width": [0.2, 1.3, 2.3, 0.1], "id": [0, 1, 2, 3],
    })
    frame.to_csv(tmp_path / "iris.csv", index=False)
    run = job("azure_style/iris_score_v1.py", inputs={"type": "tabular", "path": "iris.csv"},
              models={"iris": "iris_model.pkl"}, arguments=["--model_name", "iris"], process_count_per_node=1)
    assert run.code == 0, run.stderr
    rows = pd.read_csv(run.output_dir / "parallel_run_step.txt", delimiter=" ", header=None)
    assert rows.shape == (4, 5)
    assert sorted(rows[4]) == ["Setosa", "Setosa", "Versicolor", "Virginica"]
    assert "init() called" in run.log("worker-0.log")


def test_batch_scoring_tutorial_shaped_script_runs(tmp_path, job):
    images = tmp_path / "images"
    images.mkdir()
    for i, byte in enumerate((0, 1, 2, 5)):
        (images / f"img{i}.jpg").write_bytes(bytes([byte]) + b"...")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "labels.txt").write_text("tench\ngoldfish\nshark\n")
    (tmp_path / "inception.txt").write_text("2 0 1")
    run = job("azure_style/batch_scoring_tutorial.py", inputs={"path": str(images)},
              models={"inception": "inception.txt"}, side_inputs={"label_ds": "labels"},
              arguments=["--model_name", "inception", "--labels_name", "label_ds"], process_count_per_node=1)
    assert run.code == 0, run.stderr
    assert sorted(run.rows()) == ["img0.jpg: shark", "img1.jpg: tench", "img2.jpg: goldfish", "img3.jpg: goldfish"]
    assert [(r["kind"], r["name"], r["value"]) for r in metrics(run)] == [("metric", "classes", 3)]


def test_dataset_named_in_get_by_name_must_be_a_side_input(tmp_path, job, text_files):
    data = text_files(1)
    (tmp_path / "inception.txt").write_text("0")
    run = job("azure_style/batch_scoring_tutorial.py", inputs={"path": str(data)},
              models={"inception": "inception.txt"}, arguments=["--model_name", "inception", "--labels_name", "nope"],
              process_count_per_node=1)
    assert run.code == 1
    assert "no side input named 'nope' in the job spec" in run.stderr
    assert "Traceback" not in run.stderr


# --- mini_batch_context.dataset: (inputs, expected rows)
def test_mini_batch_context_dataset_of_files(tmp_path, job, text_files):
    data = text_files(3)
    run = job("azure_style/dataset_context.py", inputs={"path": str(data)}, mini_batch_size=3, process_count_per_node=1)
    assert run.code == 0, run.stderr
    assert sorted(run.rows()) == [f"f00{i}.txt /f00{i}.txt 3" for i in range(3)]
    assert f"dataset = LocalDataset(3 files under {data} of mini-batch 0)" in run.log("worker-0.log")


def test_mini_batch_context_dataset_of_rows(tmp_path, job):
    pd.DataFrame({"id": [f"r{i}" for i in range(5)], "x": range(5)}).to_csv(tmp_path / "t.csv", index=False)
    run = job("azure_style/dataset_context.py", inputs={"type": "tabular", "path": "t.csv"}, process_count_per_node=1)
    assert run.code == 0, run.stderr
    assert sorted(run.rows()) == [f"r{i} {i} 5" for i in range(5)]
    assert "dataset = LocalDataset(5 rows of " in run.log("worker-0.log")


# --- outside a worker (a pipeline's command step)
def _command_step(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` as a pipeline's command step runs its script (see batchinfer._compat)."""
    environment = command_step_environment(os.environ, env.get("BATCHINFER_LOG_DIR"))
    return subprocess.run([sys.executable, "-c", code], check=False, env=environment, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


STEP_CODE = ("from azureml.core import Run\nrun = Run.get_context()\nrun.log('accuracy', 0.9)\n"
             "run.tag('stage', 'train')\nopen('m.txt', 'w').write('m')\nrun.upload_file('outputs/m.txt', 'm.txt')\n")


def test_run_get_context_outside_a_worker_prints_one_line_per_record(tmp_path):
    done = _command_step(STEP_CODE, {}, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 3
    assert json.loads(lines[0].removeprefix("azureml run: "))["name"] == "accuracy"
    assert json.loads(lines[1].removeprefix("azureml run: "))["kind"] == "tag"
    assert "upload_file('outputs/m.txt'): offline run, the file is not copied" in lines[2]


def test_run_get_context_outside_a_worker_with_a_log_folder(tmp_path):
    done = _command_step(STEP_CODE, {"BATCHINFER_LOG_DIR": str(tmp_path / "logs")}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    records = [json.loads(line) for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["name"], r["value"]) for r in records] == [
        ("metric", "accuracy", 0.9), ("tag", "stage", "train"), ("upload", "outputs/m.txt", "uploads/outputs/m.txt")]
    assert (tmp_path / "logs" / "uploads" / "outputs" / "m.txt").read_text() == "m"


# --- uploads never leave their folder, never write through a link
UPLOAD_NAMES = [
    ("../escape.txt", "must stay inside the run's uploads"),
    ("/etc/escape.txt", "must be a relative path"),
    ("linked/x.txt", "is a link or a file, not a folder"),
]


@pytest.mark.parametrize("name, message", UPLOAD_NAMES, ids=[n[0] for n in UPLOAD_NAMES])
def test_upload_names_stay_inside_the_uploads_folder(tmp_path, name, message):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "logs" / "uploads").mkdir(parents=True)
    os.symlink(outside, tmp_path / "logs" / "uploads" / "linked")
    code = f"from azureml.core import Run\nopen('f', 'w').write('x')\nRun.get_context().upload_file({name!r}, 'f')\n"
    done = _command_step(code, {"BATCHINFER_LOG_DIR": str(tmp_path / "logs")}, tmp_path)
    assert done.returncode == 1
    assert message in done.stderr.splitlines()[-1]
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "logs" / "escape.txt").exists()


def test_upload_over_a_planted_link_replaces_the_link_not_its_target(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    (tmp_path / "logs" / "uploads").mkdir(parents=True)
    os.symlink(target, tmp_path / "logs" / "uploads" / "x.txt")
    code = "from azureml.core import Run\nopen('f', 'w').write('new')\nRun.get_context().upload_file('x.txt', 'f')\n"
    done = _command_step(code, {"BATCHINFER_LOG_DIR": str(tmp_path / "logs")}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert target.read_text() == "keep"
    uploaded = tmp_path / "logs" / "uploads" / "x.txt"
    assert not uploaded.is_symlink() and uploaded.read_text() == "new"


def test_metrics_of_several_workers_are_whole_lines(tmp_path, job, text_files):
    data = text_files(40)
    run = job("azure_style/log_per_item.py", inputs={"path": str(data)}, mini_batch_size=1)
    assert run.code == 0, run.stderr
    records = metrics(run)  # every line parses: no two workers' records interleaved
    assert sorted(r["value"] for r in records) == [f"f{i:03d}.txt" + "x" * 3000 for i in range(40)]
    assert {r["worker"] for r in records} <= {"worker-0", "worker-1"}


def test_mini_batch_context_dataset_of_a_partition(tmp_path, job):
    (tmp_path / "t").mkdir()
    pd.DataFrame({"id": [f"r{i}" for i in range(6)], "group": ["a", "b", "a", "a", "b", "a"]}).to_csv(
        tmp_path / "t" / "x.csv", index=False)
    run = job("azure_style/dataset_context.py", inputs={"type": "tabular", "path": "t"}, partition_keys=["group"],
              process_count_per_node=1)
    assert run.code == 0, run.stderr
    assert sorted(run.rows()) == ["r0 a 4", "r1 b 2", "r2 a 4", "r3 a 4", "r4 b 2", "r5 a 4"]
    log = run.log("worker-0.log")
    assert "dataset = LocalDataset(4 rows of group=a)" in log and "dataset = LocalDataset(2 rows of group=b)" in log


def test_restart_starts_the_metrics_over_and_a_reused_job_adds_none(job, text_files):
    data = text_files(2)
    keys = {"inputs": {"path": str(data)}, "arguments": ["--call", "log"], "process_count_per_node": 1}
    assert job("azure_style/run_calls.py", **keys).code == 0
    reused = job("azure_style/run_calls.py", **keys)
    assert reused.code == 0, reused.stderr
    assert len(metrics(reused)) == 1  # the finished job was reused: its script did not run again
    restarted = job("azure_style/run_calls.py", "--restart", **keys)
    assert restarted.code == 0, restarted.stderr
    assert [r["name"] for r in metrics(restarted)] == ["accuracy"]  # the old run's records went with --restart


def test_a_side_input_that_is_an_mltable_folder_is_read_as_mltable_reads_it(tmp_path, job, text_files):
    data = text_files(1)
    table = tmp_path / "lookup"
    table.mkdir()
    (table / "d.csv").write_text("1;a\n2;b\n3;c\n")
    (table / "MLTable").write_text("paths:\n  - file: ./d.csv\ntransformations:\n  - read_delimited:\n"
                                   "      delimiter: ';'\n      header: no_header\n")
    run = job("azure_style/side_table.py", inputs={"path": str(data)}, side_inputs={"lookup": "lookup"},
              process_count_per_node=1)
    assert run.code == 0, run.stderr
    # three rows of two columns, as mltable.load(...).to_pandas_dataframe() gives them (not the MLTable file's text)
    assert run.rows() == ["['/d.csv'] ['Column1', 'Column2'] [[1, 'a'], [2, 'b'], [3, 'c']]"]
