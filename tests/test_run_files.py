"""File inputs end to end: a spec, a script, a real run, and what the user checks afterwards."""

from __future__ import annotations

import json
import os
import socket

import pandas as pd
import pyarrow.parquet as pq

from conftest import SCRIPTS


def test_every_file_scored_once_and_summary_written(job, text_files):
    data = text_files(23)
    run = job("echo_names.py", inputs={"type": "file", "path": str(data)}, mini_batch_size=4)
    assert run.code == 0, run.stderr
    assert sorted(run.rows()) == [f"f{i:03d}.txt {i}" for i in range(23)]
    summary = run.summary
    assert summary["status"] == "succeeded"
    assert (summary["items_total"], summary["items_succeeded"], summary["items_failed"]) == (23, 23, 0)
    assert (summary["mini_batches_total"], summary["mini_batches_succeeded"]) == (6, 6)
    assert summary["tries"] == 6
    assert "succeeded: 23/23 items" in run.stderr
    assert run.stdout == ""  # data goes to the output file, never to stdout
    # the script's print() went to its worker's log
    logs = run.log("worker-0.log") + run.log("worker-1.log")
    assert "echo_names init" in logs
    tries = pd.read_csv(run.output_dir / "logs" / "processed_mini_batches.csv")
    assert len(tries) == 6 and set(tries["status"]) == {"ok"}


def test_mini_batches_follow_sorted_file_order(job, text_files):
    data = text_files(7)
    run = job("echo_names.py", inputs={"path": str(data)}, mini_batch_size=3, process_count_per_node=1)
    assert run.code == 0, run.stderr
    # one worker: completion order is input order; batches are [0-2], [3-5], [6]
    assert run.rows() == [f"f{i:03d}.txt {i}" for i in range(7)]
    tries = pd.read_csv(run.output_dir / "logs" / "processed_mini_batches.csv")
    assert sorted(tries["items"].tolist()) == [1, 3, 3]


def test_glob_list_and_relative_paths(tmp_path, job, text_files):
    text_files(5, "a")
    text_files(3, "b/deep")
    (tmp_path / "a" / "notes.md").write_text("not an input")
    (tmp_path / "a" / ".hidden.txt").write_text("skipped")
    run = job("echo_names.py", inputs={"path": ["a/*.txt", "b"]}, mini_batch_size=2)
    assert run.code == 0, run.stderr
    assert len(run.rows()) == 8
    assert run.summary["mini_batches_total"] == 4  # the paths of one input are one list of files
    assert not any("notes" in r or "hidden" in r for r in run.rows())


def test_recursive_glob(tmp_path, job, text_files):
    text_files(2, "x/one")
    text_files(2, "x/two/three")
    run = job("echo_names.py", inputs={"path": "x/**/*.txt"}, mini_batch_size=10)
    assert run.code == 0, run.stderr
    assert len(run.rows()) == 4


def test_arguments_environment_models_and_side_inputs(tmp_path, job, text_files):
    data = text_files(3)
    (tmp_path / "model.bin").write_text("weights")
    (tmp_path / "lookup.txt").write_text("table\n")
    run = job(
        "environment.py",
        inputs={"path": str(data)},
        arguments=["--threshold", 5, "--flag"],
        environment_variables={"GREETING": "${WHO:-hello}"},
        models={"clf": "model.bin"},
        side_inputs={"lookup": "lookup.txt"},
        mini_batch_size=3,
        process_count_per_node=1,
    )
    assert run.code == 0, run.stderr
    seen = json.loads(run.rows()[0])
    assert seen["argv"] == ["--threshold", "5", "--flag"]
    assert seen["greeting"] == "hello"
    assert seen["model"] == str(tmp_path / "model.bin")
    assert seen["model_dir"].endswith("/azureml-models/clf/1")  # as Azure lays out one model (file or folder)
    assert seen["model_dir_files"] == ["model.bin"]
    assert seen["lookup"] == "table"
    assert seen["output_dir"] == seen["bi_output"] == str(run.output_dir)
    assert seen["cwd"].startswith(str(run.output_dir / ".batchinfer" / "tmp" / "worker-0-"))  # a private folder
    assert not (run.output_dir / ".batchinfer" / "tmp").exists()  # removed at the end
    assert seen["path0"].endswith("tests/scripts")
    assert "scored 3 files" in run.log("worker-0.log")
    if "OMP_NUM_THREADS" not in os.environ and "TF_NUM_INTRAOP_THREADS" not in os.environ:
        assert seen["omp"] == seen["tf_intra"] == str(os.cpu_count())  # one process per node: all the cores


def test_environment_variable_expansion_from_the_shell(tmp_path, job, text_files, batchinfer):
    data = text_files(2)
    (tmp_path / "model.bin").write_text("w")
    (tmp_path / "lookup.txt").write_text("t")
    spec = tmp_path / "env.yaml"
    spec.write_text(
        f"entry_script: environment.py\nsource_directory: {SCRIPTS}\n"
        "inputs:\n  path: ${DATA_DIR}\nenvironment_variables:\n  GREETING: ${WHO:-nobody}\n"
        "models: {clf: model.bin}\nside_inputs: {lookup: lookup.txt}\nprocess_count_per_node: 1\n"
    )
    run = batchinfer("run", str(spec), "--output", str(tmp_path / "o"), env={"DATA_DIR": str(data), "WHO": "ada"},
                     output=tmp_path / "o")
    assert run.code == 0, run.stderr
    assert json.loads(run.rows()[0])["greeting"] == "ada"


def test_summary_only_counts_and_lets_the_script_write(job, text_files):
    data = text_files(6)
    run = job("summary_only.py", inputs={"path": str(data)}, mini_batch_size=3, output_action="summary_only")
    assert run.code == 0, run.stderr
    assert not (run.output_dir / "parallel_run_step.txt").exists()
    assert sorted(p.name for p in run.output_dir.glob("*.out")) == ["f000.txt.out", "f003.txt.out"]
    assert run.summary["items_succeeded"] == 6


def test_ordered_rows_follow_input_order(job, text_files):
    data = text_files(40)
    run = job("echo_names.py", inputs={"path": str(data)}, mini_batch_size=1, ordered=True)
    assert run.code == 0, run.stderr
    assert run.rows() == [f"f{i:03d}.txt {i}" for i in range(40)]


def test_custom_file_name_and_formats(job, text_files):
    data = text_files(4)
    run = job("returns.py", inputs={"path": str(data)}, arguments=["--mode", "frame"], mini_batch_size=2,
              append_row_file_name="scores.csv", append_row_format="csv")
    assert run.code == 0, run.stderr
    frame = pd.read_csv(run.output_dir / "scores.csv")
    assert list(frame.columns) == ["name", "length"]  # one header, then the rows
    assert sorted(frame["name"]) == [f"f{i:03d}.txt" for i in range(4)]


def test_jsonl_format(job, text_files):
    data = text_files(3)
    run = job("returns.py", inputs={"path": str(data)}, arguments=["--mode", "frame"], append_row_format="jsonl",
              append_row_file_name="rows.jsonl")
    assert run.code == 0, run.stderr
    records = [json.loads(line) for line in run.rows("rows.jsonl")]
    assert sorted(r["name"] for r in records) == ["f000.txt", "f001.txt", "f002.txt"]
    assert all(r["length"] == 8 for r in records)


def test_parquet_format_is_one_readable_file(job, text_files):
    data = text_files(9)
    run = job("returns.py", inputs={"path": str(data)}, arguments=["--mode", "frame"], mini_batch_size=2,
              append_row_format="parquet", append_row_file_name="rows.parquet")
    assert run.code == 0, run.stderr
    table = pq.read_table(run.output_dir / "rows.parquet").to_pandas()
    assert sorted(table["name"]) == [f"f{i:03d}.txt" for i in range(9)]


def test_dataframe_rows_as_text_with_and_without_header(job, text_files):
    data = text_files(2)
    run = job("returns.py", inputs={"path": str(data)}, arguments=["--mode", "frame"], mini_batch_size=2)
    assert run.code == 0, run.stderr
    assert run.rows() == ["f000.txt 8", "f001.txt 8"]  # ParallelRunStep: values joined by spaces, no header
    run = job("returns.py", "--restart", inputs={"path": str(data)}, arguments=["--mode", "frame"],
              mini_batch_size=2, append_row_dataframe_header=True)
    assert run.code == 0, run.stderr
    assert run.rows() == ["name length", "f000.txt 8", "f001.txt 8"]


def test_numpy_and_tuple_results_count(job, text_files):
    data = text_files(5)
    for mode in ("numpy", "tuple"):
        run = job("returns.py", "--restart", inputs={"path": str(data)}, arguments=["--mode", mode])
        assert run.code == 0, run.stderr
        assert run.summary["items_succeeded"] == 5
        assert len(run.rows()) == 5


def test_node_count_multiplies_workers(job, text_files):
    data = text_files(8)
    run = job("node_ids.py", inputs={"path": str(data)}, node_count=2, process_count_per_node=1, mini_batch_size=1)
    assert run.code == 0, run.stderr
    assert run.summary["workers"] == 2
    assert (run.output_dir / "logs" / "worker-1.log").exists()
    host = socket.gethostname()
    assert {row.split()[1] for row in run.rows()} == {f"{host}-0", f"{host}-1"}  # one id per node


def test_rerun_from_the_jobs_own_folder_is_reused(tmp_path, batchinfer, text_files):
    """The default output (./outputs/<name>) and a stderr log inside source_directory do not change the job."""
    text_files(5)
    (tmp_path / "score.py").write_text((SCRIPTS / "echo_names.py").read_text())
    (tmp_path / "job.yaml").write_text("entry_script: score.py\ninputs: {path: data}\n")
    first = batchinfer("run", "job.yaml", cwd=tmp_path)
    assert first.code == 0, first.stderr
    (tmp_path / "run.log").write_text(first.stderr)
    again = batchinfer("run", "job.yaml", cwd=tmp_path)
    assert again.code == 0, again.stderr
    assert "reused the finished job" in again.stderr


def test_a_failed_job_continues_once_the_cause_is_fixed(tmp_path, batchinfer, text_files):
    data = text_files(6)
    (tmp_path / "score.py").write_text(
        "import os\n\ndef init():\n    open(os.environ['NEEDED'])\n\n"
        "def run(mini_batch):\n    return [os.path.basename(p) for p in mini_batch]\n"
    )
    spec = tmp_path / "job.yaml"
    spec.write_text(f"entry_script: score.py\ninputs: {{path: {data}}}\nprocess_count_per_node: 1\n"
                    f"environment_variables: {{NEEDED: {tmp_path / 'needed.txt'}}}\n")
    out = tmp_path / "out"
    failed = batchinfer("run", str(spec), "--output", str(out))
    assert failed.code == 1 and "No such file or directory" in failed.stderr
    (tmp_path / "needed.txt").write_text("now it exists")
    fixed = batchinfer("run", str(spec), "--output", str(out), output=out)
    assert fixed.code == 0, fixed.stderr
    assert "reused" not in fixed.stderr and len(fixed.rows()) == 6


def test_default_output_folder_is_outputs_slash_name(tmp_path, batchinfer, text_files):
    data = text_files(2)
    spec = tmp_path / "My_Job.yaml"
    spec.write_text(f"entry_script: echo_names.py\nsource_directory: {SCRIPTS}\ninputs: {{path: {data}}}\n")
    run = batchinfer("run", str(spec), cwd=tmp_path, output=tmp_path / "outputs" / "my-job")
    assert run.code == 0, run.stderr
    assert run.summary["job"] == "my-job"
    assert len(run.rows()) == 2


def test_output_from_spec_is_relative_to_the_spec(tmp_path, batchinfer, text_files):
    text_files(2)
    (tmp_path / "jobs").mkdir()
    spec = tmp_path / "jobs" / "job.yaml"
    spec.write_text(
        f"entry_script: echo_names.py\nsource_directory: {SCRIPTS}\ninputs: {{path: ../data}}\noutput: ../scores\n"
    )
    run = batchinfer("run", str(spec), cwd=tmp_path, output=tmp_path / "scores")
    assert run.code == 0, run.stderr
    assert len(run.rows()) == 2


def test_rerun_of_a_finished_job_is_reused(job, text_files):
    data = text_files(4)
    first = job("echo_names.py", inputs={"path": str(data)})
    before = (first.output_dir / "parallel_run_step.txt").read_bytes()
    again = job("echo_names.py", inputs={"path": str(data)})
    assert again.code == 0
    assert "reused" in again.stderr
    assert (again.output_dir / "parallel_run_step.txt").read_bytes() == before


def test_allow_reuse_false_runs_again(job, text_files):
    data = text_files(4)
    job("echo_names.py", inputs={"path": str(data)}, allow_reuse=False)
    again = job("echo_names.py", inputs={"path": str(data)}, allow_reuse=False)
    assert again.code == 0
    assert "reused" not in again.stderr
    assert len(again.rows()) == 4


