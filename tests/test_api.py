"""The public Python API: ``batchinfer.run()``, ``plan()`` and ``load_spec()``, as notebooks and Airflow call them.

The calls run in a fresh Python process each (as a user's script would), with real worker processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import MARKER, REPO, SCRIPTS


@pytest.fixture
def python(run_marker, tmp_path):
    """Run a Python snippet in a fresh interpreter (cwd tmp_path); it prints one JSON line: return it."""

    def invoke(code: str, timeout: float = 300) -> dict:
        env = {**os.environ, MARKER: run_marker, "PYTHONPATH": str(REPO)}
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    return invoke


def _job_yaml(tmp_path: Path, mode: str = "short", **keys) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for i in range(6):
        (data / f"f{i:03d}.txt").write_text(f"{i}\n")
    lines = ["entry_script: returns.py", f"source_directory: {SCRIPTS}", "inputs: {path: data}",
             f"arguments: [--mode, {mode}]", "mini_batch_size: 3", "process_count_per_node: 2",
             *(f"{k}: {json.dumps(v)}" for k, v in keys.items())]
    path = tmp_path / "api_job.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.tensorflow
def test_run_scores_the_mnist_sample_from_python_and_matches_the_cli(python, batchinfer, tmp_path):
    pytest.importorskip("keras", reason="the sample needs the 'tensorflow' extra")
    spec = REPO / "sample_data" / "mnist_job.yaml"
    result = python(f"""
        import json, signal
        import batchinfer
        before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        summary = batchinfer.run({str(spec)!r}, output="api-out")
        after = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        print(json.dumps({{"type": type(summary).__name__, "status": summary.status, "code": summary.exit_code,
                          "raw": summary.raw, "output_dir": str(summary.output_dir),
                          "handlers_restored": before == after}}))
    """, timeout=600)
    cli_out = tmp_path / "cli-out"
    cli = batchinfer("run", str(spec), "--output", str(cli_out), output=cli_out, timeout=600)
    assert cli.code == 0, cli.stderr
    assert result["type"] == "RunSummary" and result["status"] == "succeeded" and result["code"] == 0
    assert result["handlers_restored"]
    assert Path(result["output_dir"]) == tmp_path / "api-out"
    keys = ["status", "exit_code", "items_total", "items_succeeded", "items_failed", "mini_batches_total",
            "mini_batches_succeeded", "mini_batches_failed", "items_not_returned", "job"]
    assert {k: result["raw"][k] for k in keys} == {k: cli.summary[k] for k in keys}
    assert result["raw"]["items_succeeded"] == 1000
    api_rows = sorted((tmp_path / "api-out" / "parallel_run_step.txt").read_text().splitlines())
    assert api_rows == sorted(cli.rows())


def test_run_returns_a_typed_summary_and_takes_overrides_as_python_values(python, tmp_path):
    _job_yaml(tmp_path)
    result = python("""
        import json, batchinfer
        s = batchinfer.run("api_job.yaml", output="out", overrides={"mini_batch_size": 2, "error_threshold": 3})
        print(json.dumps({"status": s.status, "succeeded": s.items_succeeded, "failed": s.items_failed,
                          "not_returned": s.items_not_returned, "batches": s.mini_batches_total,
                          "note": s.note, "file": s.output_file, "raw_batches": s.raw["mini_batches_total"]}))
    """)
    # mini_batch_size 2 (the override): 3 mini-batches of 2, each one row short
    assert result["batches"] == result["raw_batches"] == 3
    assert (result["status"], result["succeeded"], result["failed"], result["not_returned"]) == ("succeeded", 3, 3, 3)
    assert result["note"].startswith("run() returned fewer rows than items")
    assert result["file"] == str(tmp_path / "out" / "parallel_run_step.txt")


def test_run_takes_a_dict_with_paths_from_the_current_folder(python, tmp_path):
    _job_yaml(tmp_path)  # for the data folder
    result = python(f"""
        import json, batchinfer
        spec = {{"entry_script": "returns.py", "source_directory": {str(SCRIPTS)!r}, "inputs": "data",
                "arguments": ["--mode", "long"], "mini_batch_size": 3, "process_count_per_node": 1}}
        s = batchinfer.run(spec, output="dict-out")
        print(json.dumps({{"status": s.status, "succeeded": s.items_succeeded, "dir": str(s.output_dir)}}))
    """)
    assert result == {"status": "succeeded", "succeeded": 6, "dir": str(tmp_path / "dict-out")}


@pytest.mark.parametrize(
    "call, error, code, fragment",
    [
        ('batchinfer.run("api_job.yaml", output="out", overrides={"mini_batch_sise": 2})',
         "SpecError", 2, "mini_batch_sise"),
        ('batchinfer.run("missing.yaml")', "SpecError", 2, "missing.yaml: no such file"),
        ('batchinfer.load_spec({"entry_script": "x.py"})', "SpecError", 2, "inputs"),
        ('batchinfer.run("api_job.yaml", output="out", overrides={"arguments": ["--mode", "raise"]})',
         "JobFailedError", 1, "no item succeeded"),
        ('batchinfer.run("api_job.yaml", output="out", overrides={"error_threshold": 0, "process_count_per_node": 1})',
         "JobFailedError", 1, "more than error_threshold (0)"),
        ('batchinfer.run("api_job.yaml", restart=True, retry_failed=True)', "UsageError", 2, "--restart"),
    ],
    ids=["unknown-key-override", "missing-file", "dict-missing-inputs", "every-try-raised", "over-threshold",
         "restart-and-retry"],
)
def test_mistakes_and_failed_jobs_raise_the_classes_the_cli_turns_into_exit_codes(python, tmp_path, call, error,
                                                                                  code, fragment):
    _job_yaml(tmp_path)
    result = python(f"""
        import json, batchinfer
        from batchinfer.errors import BatchInferError
        try:
            {call}
        except BatchInferError as exc:
            summary = getattr(exc, "summary", None)
            print(json.dumps({{"error": type(exc).__name__, "code": int(exc.exit_code), "message": str(exc),
                              "summary_status": summary.status if summary else None,
                              "summary_code": summary.exit_code if summary else None}}))
        else:
            print(json.dumps({{"error": None}}))
    """)
    assert result["error"] == error and result["code"] == code, result
    assert fragment in result["message"], result["message"]
    if error == "JobFailedError":  # it carries the summary, as summary.json has it
        assert result["summary_status"] == "failed" and result["summary_code"] == 1
        assert json.loads((tmp_path / "out" / "summary.json").read_text())["exit_code"] == 1


def test_plan_and_load_spec_are_typed(python, tmp_path):
    _job_yaml(tmp_path)
    result = python("""
        import json, batchinfer
        spec = batchinfer.load_spec("api_job.yaml", overrides={"process_count_per_node": 3})
        p = batchinfer.plan("api_job.yaml", overrides={"mini_batch_size": 4})
        print(json.dumps({"spec": type(spec).__name__, "workers": spec.worker_count, "plan": type(p).__name__,
                          "batches": p.mini_batches, "items": p.items, "files": p.files,
                          "first": [b["items"] for b in p.first_mini_batches]}))
    """)
    assert result == {"spec": "JobSpec", "workers": 3, "plan": "Plan", "batches": 2, "items": 6, "files": 6,
                      "first": [4, 2]}


def test_import_batchinfer_stays_light(python):
    result = python("""
        import json, sys
        import batchinfer
        light = not any(m in sys.modules for m in ("pandas", "pyarrow", "batchinfer.api", "batchinfer.job"))
        run = batchinfer.run  # the API is imported on first use
        print(json.dumps({"light": light, "api": "batchinfer.api" in sys.modules, "callable": callable(run),
                          "dir": "run" in dir(batchinfer)}))
    """)
    assert result == {"light": True, "api": True, "callable": True, "dir": True}


def test_run_works_from_a_thread_other_than_the_main_one(python, tmp_path):
    """An Airflow task or a notebook's background thread: no signal handlers can be set there, none are."""
    _job_yaml(tmp_path, mode="long")
    result = python("""
        import json, signal, threading, batchinfer
        before = signal.getsignal(signal.SIGINT)
        box = {}
        worker = threading.Thread(target=lambda: box.update(s=batchinfer.run("api_job.yaml", output="out")))
        worker.start(); worker.join()
        print(json.dumps({"status": box["s"].status, "succeeded": box["s"].items_succeeded,
                          "handler_kept": signal.getsignal(signal.SIGINT) is before}))
    """)
    assert result == {"status": "succeeded", "succeeded": 6, "handler_kept": True}


PIPELINE = """\
type: pipeline
jobs:
  make:
    type: command
    command: mkdir -p ${{outputs.files}} && for i in 0 1 2 3 4; do echo $i > ${{outputs.files}}/n$i.txt; done; FAIL
    outputs:
      files: {type: uri_folder}
  score_files:
    type: parallel
    inputs:
      data: {type: uri_folder, path: "${{parent.jobs.make.outputs.files}}"}
    outputs:
      scores: {type: uri_file, path: "azureml://datastores/${{default_datastore}}/paths/${{name}}/scores.txt"}
    input_data: ${{inputs.data}}
    mini_batch_size: "2"
    max_concurrency_per_instance: 2
    task:
      type: run_function
      code: SCRIPTS
      entry_script: echo_names.py
      append_row_to: ${{outputs.scores}}
"""


@pytest.mark.parametrize("fail", [False, True], ids=["succeeds", "command-step-fails"])
def test_run_on_an_azure_pipeline_returns_its_steps_or_raises_with_them(python, tmp_path, fail):
    (tmp_path / "pipeline.yml").write_text(
        PIPELINE.replace("SCRIPTS", str(SCRIPTS)).replace("FAIL", "exit 3" if fail else "true"))
    result = python("""
        import json, batchinfer
        from batchinfer.errors import JobFailedError
        before = batchinfer.plan("pipeline.yml")  # the step's input is made when the pipeline runs
        try:
            summary, error = batchinfer.run("pipeline.yml", overrides={"score_files.run_max_try": 1}), None
        except JobFailedError as exc:
            summary, error = exc.summary, str(exc)
        after = batchinfer.plan("pipeline.yml") if not error else {}
        specs = batchinfer.load_spec("pipeline.yml") if not error else {}
        print(json.dumps({"type": type(summary).__name__, "status": summary.status, "code": summary.exit_code,
                          "steps": summary.steps, "error": error, "before": before,
                          "after": {k: [type(p).__name__, p.files, p.mini_batches] for k, p in after.items()},
                          "specs": {k: [type(s).__name__, s.run_max_try] for k, s in specs.items()},
                          "scored": {k: s.items_succeeded for k, s in summary.summaries.items()}}))
    """)
    assert result["type"] == "PipelineSummary"
    assert list(result["before"]) == ["score_files"] and "waits on step make" in result["before"]["score_files"]
    if fail:
        assert result["code"] == 1 and result["status"] == "failed" and "step make" in result["error"]
        assert result["steps"] == {"make": "failed", "score_files": "waiting"} and result["scored"] == {}
        return
    assert result["code"] == 0 and result["status"] == "succeeded" and result["error"] is None
    assert result["steps"] == {"make": "succeeded", "score_files": "succeeded"}
    assert result["scored"] == {"score_files": 5}
    assert result["after"] == {"score_files": ["Plan", 5, 3]}  # now that its input is there
    assert result["specs"] == {"score_files": ["JobSpec", 3]}
    out = tmp_path / "outputs" / "pipeline"  # the default output folder, where plan() looks too
    rows = (out / "score_files" / "outputs" / "scores" / "scores.txt").read_text().splitlines()
    assert sorted(rows) == [f"n{i}.txt {i}" for i in range(5)]


def test_run_inside_another_program_leaves_that_programs_children_alone(python, tmp_path):
    """batchinfer.run() in a notebook or a scheduler must neither kill the caller's own child processes
    nor take their exit status (only the batchinfer command adopts and kills its workers' orphans)."""
    _job_yaml(tmp_path)
    result = python("""
        import json, subprocess, batchinfer
        sleeper = subprocess.Popen(["sleep", "300"])
        failing = subprocess.Popen(["sh", "-c", "exit 7"])
        s = batchinfer.run("api_job.yaml", output="out")
        alive = sleeper.poll() is None
        sleeper.kill()
        print(json.dumps({"status": s.status, "sleeper_alive": alive, "failing_code": failing.wait()}))
    """)
    assert result == {"status": "succeeded", "sleeper_alive": True, "failing_code": 7}
