"""Pipeline runs that must never lose a user's file or hand a step stale outputs: output ports that
move, ports emptied when a step starts afresh (never a user's), and the other review findings on the
pipeline runner (threads, the row file's name, --retry-failed, quoting, quiet runs)."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import SCRIPTS


def errors_of(run) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith("batchinfer: error:")]


def one_error(run, *fragments: str) -> str:
    """Exit 2 and one error line (notes may come before it) holding every fragment."""
    errors = errors_of(run)
    assert run.code == 2 and len(errors) == 1 and "Traceback" not in run.stderr, run.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def numbers(folder: Path, count: int) -> Path:
    folder.mkdir(exist_ok=True)
    for i in range(count):
        (folder / f"n{i}.txt").write_text(f"{i}\n")
    return folder


# one parallel step echoing its files into an output port; PORT is replaced by the port's extra keys
ECHO = f"""\
type: pipeline
jobs:
  score:
    type: parallel
    inputs:
      data: {{type: uri_folder, path: ./data}}
    outputs:
      rows: {{type: uri_folder PORT}}
    input_data: ${{{{inputs.data}}}}
    mini_batch_size: "2"
    max_concurrency_per_instance: 1
    task:
      code: {SCRIPTS}
      entry_script: echo_names.py
      append_row_to: ${{{{outputs.rows}}}}
"""


def echo(tmp_path: Path, port: str = "") -> Path:
    numbers(tmp_path / "data", 3)
    path = tmp_path / "pipeline.yml"
    path.write_text(ECHO.replace("PORT", port))
    return path


# ------------------------------------------------------------ 1. an output port whose path: changed


def test_a_port_that_moved_never_deletes_or_overwrites_the_users_file_there(tmp_path, batchinfer):
    out = tmp_path / "out"
    run = batchinfer("run", str(echo(tmp_path)), "--output", str(out))
    assert run.code == 0, run.stderr
    old_rows = out / "score" / "outputs" / "rows" / "parallel_run_step.txt"
    assert len(old_rows.read_text().splitlines()) == 3
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "parallel_run_step.txt").write_text("the user's own\n")
    path = echo(tmp_path, ", path: ./mine")
    one_error(batchinfer("run", str(path), "--output", str(out)), "holds a different job", "--restart")
    refused = batchinfer("run", str(path), "--output", str(out), "--restart")
    one_error(refused, str(mine / "parallel_run_step.txt"), "did not write")
    assert (mine / "parallel_run_step.txt").read_text() == "the user's own\n"
    assert old_rows.exists()  # a refused run changes nothing
    (mine / "parallel_run_step.txt").unlink()
    again = batchinfer("run", str(path), "--output", str(out), "--restart")
    assert again.code == 0, again.stderr
    assert len((mine / "parallel_run_step.txt").read_text().splitlines()) == 3
    assert not old_rows.exists()  # the old claim, cleared where it was made
    # and back to the default port: the rows in ./mine are batchinfer's, removed there by --restart
    back = batchinfer("run", str(echo(tmp_path)), "--output", str(out), "--restart")
    assert back.code == 0, back.stderr
    assert not (mine / "parallel_run_step.txt").exists() and len(old_rows.read_text().splitlines()) == 3


# ------------------------------------------------------------ 2. fresh outputs for a fresh start

WRITER = """\
type: pipeline
jobs:
  write:
    command: for f in FILES; do echo $f > ${{outputs.out}}/$f; done
    outputs:
      out: {type: uri_folder PORT}
  read:
    command: ls ${{inputs.got}}
    inputs:
      got: ${{parent.jobs.write.outputs.out}}
"""


def test_a_command_step_that_runs_again_starts_with_an_empty_output_port(tmp_path, batchinfer):
    path, out = tmp_path / "pipeline.yml", tmp_path / "out"
    path.write_text(WRITER.replace("FILES", "a b c").replace("PORT", ""))
    assert batchinfer("run", str(path), "--output", str(out)).code == 0
    path.write_text(WRITER.replace("FILES", "x").replace("PORT", ""))
    run = batchinfer("run", str(path), "--output", str(out))
    assert run.code == 0, run.stderr
    assert os.listdir(out / "write" / "outputs" / "out") == ["x"]
    assert (out / "read" / "logs" / "std_log.txt").read_text() == "x\n"


@pytest.mark.parametrize("how", ["restart", "no-reuse", "upstream-ran"])
def test_a_parallel_step_that_starts_afresh_starts_with_empty_output_ports(tmp_path, batchinfer, how):
    numbers(tmp_path / "data", 3)
    path, out = tmp_path / "pipeline.yml", tmp_path / "out"
    text = textwrap.dedent(f"""\
        type: pipeline
        jobs:
          copy:
            command: cp ${{{{inputs.src}}}}/* ${{{{outputs.files}}}}/ && echo COPY
            inputs:
              src: {{type: uri_folder, path: ./data}}
            outputs:
              files: {{type: uri_folder}}
          score:
            type: parallel
            inputs:
              data: ${{{{parent.jobs.copy.outputs.files}}}}
            outputs:
              rows: {{type: uri_folder}}
            input_data: ${{{{inputs.data}}}}
            mini_batch_size: "2"
            max_concurrency_per_instance: 1
            task:
              code: {SCRIPTS}
              entry_script: echo_names.py
              append_row_to: ${{{{outputs.rows}}}}
        """)
    path.write_text(text)
    reuse = ["--set", "score.allow_reuse=false"] if how == "no-reuse" else []
    assert batchinfer("run", str(path), "--output", str(out), *reuse).code == 0
    stale = out / "score" / "outputs" / "rows" / "stale.txt"
    stale.write_text("from an earlier run\n")
    if how == "upstream-ran":
        path.write_text(text.replace("echo COPY", "echo COPIED"))
    run = batchinfer("run", str(path), "--output", str(out), *reuse, *(["--restart"] if how == "restart" else []))
    assert run.code == 0, run.stderr
    assert os.listdir(out / "score" / "outputs" / "rows") == ["parallel_run_step.txt"]
    assert len((out / "score" / "outputs" / "rows" / "parallel_run_step.txt").read_text().splitlines()) == 3


def test_a_users_port_is_never_emptied_and_a_fresh_start_there_is_refused(tmp_path, batchinfer):
    path, out = tmp_path / "pipeline.yml", tmp_path / "out"
    path.write_text(WRITER.replace("FILES", "a b").replace("PORT", ", path: ./kept"))
    (tmp_path / "kept").mkdir()  # an empty folder of the user's is fine
    assert batchinfer("run", str(path), "--output", str(out)).code == 0
    path.write_text(WRITER.replace("FILES", "x").replace("PORT", ", path: ./kept"))
    one_error(batchinfer("run", str(path), "--output", str(out)), str(tmp_path / "kept"), "is not empty", "holds a (and 1 more)")
    assert sorted(os.listdir(tmp_path / "kept")) == ["a", "b"]


# ------------------------------------------------------------ 3. batchinfer.run() from another thread


def test_a_pipeline_with_a_command_step_runs_from_a_thread_other_than_the_main_one(tmp_path, run_marker):
    import subprocess
    import sys

    from conftest import MARKER

    (tmp_path / "pipeline.yml").write_text(textwrap.dedent("""\
        type: pipeline
        jobs:
          make:
            command: echo made > ${{outputs.files}}/made.txt
            outputs:
              files: {type: uri_folder}
        """))
    code = textwrap.dedent("""
        import json, signal, threading, batchinfer
        before = signal.getsignal(signal.SIGINT)
        box = {}
        def target():
            try:
                box["status"] = batchinfer.run("pipeline.yml", output="out").status
            except BaseException as exc:
                box["error"] = repr(exc)
        worker = threading.Thread(target=target)
        worker.start(); worker.join()
        print(json.dumps({**box, "handler_kept": signal.getsignal(signal.SIGINT) is before}))
    """)
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, MARKER: run_marker, "PYTHONPATH": str(repo)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"status": "succeeded", "handler_kept": True}
    assert (tmp_path / "out" / "make" / "outputs" / "files" / "made.txt").read_text() == "made\n"
    doc = json.loads((tmp_path / "out" / "pipeline.json").read_text())
    assert doc["status"] == "succeeded" and doc["steps"]["make"]["status"] == "succeeded"


# ------------------------------------------------------------ 4. the row file's name, from the step's spec

ROWS_READ = f"""\
type: pipeline
jobs:
  score:
    type: parallel
    inputs:
      data: {{type: uri_folder, path: ./data}}
    outputs:
      rows: {{type: uri_file}}
    input_data: ${{{{inputs.data}}}}
    mini_batch_size: "2"
    max_concurrency_per_instance: 1
    task:
      code: {SCRIPTS}
      entry_script: echo_names.py
      ARGS
      append_row_to: ${{{{outputs.rows}}}}
  show:
    command: cat ${{{{inputs.rows}}}}
    inputs:
      rows: ${{{{parent.jobs.score.outputs.rows}}}}
"""


@pytest.mark.parametrize("args, options, name", [
    ("", [], "parallel_run_step.txt"),
    ("", ["--set", "score.append_row_file_name=rows.txt"], "rows.txt"),
    ("", ["--set", "append_row_file_name=all.txt"], "all.txt"),
    ("program_arguments: --append_row_file_name \"my rows.txt\"", [], "my rows.txt"),
    ("program_arguments: --append_row_file_name=eq.txt", [], "eq.txt"),
], ids=["default", "set-step", "set-all", "quoted-argument", "argument-with-equals"])
def test_the_next_step_reads_the_row_file_under_the_name_the_step_wrote_it(tmp_path, batchinfer, args, options, name):
    numbers(tmp_path / "data", 3)
    path, out = tmp_path / "pipeline.yml", tmp_path / "out"
    path.write_text(ROWS_READ.replace("ARGS", args))
    run = batchinfer("run", str(path), "--output", str(out), *options)
    assert run.code == 0, run.stderr
    assert os.listdir(out / "score" / "outputs" / "rows") == [name]
    shown = (out / "show" / "logs" / "std_log.txt").read_text().splitlines()
    assert sorted(shown) == [f"n{i}.txt {i}" for i in range(3)]


# ------------------------------------------------------------ 5. --retry-failed on a pipeline

TWO_STEPS = f"""\
type: pipeline
jobs:
  first:
    type: parallel
    inputs:
      data: {{type: uri_folder, path: ./data}}
    outputs:
      rows: {{type: uri_folder}}
    input_data: ${{{{inputs.data}}}}
    mini_batch_size: "1"
    max_concurrency_per_instance: 1
    error_threshold: -1
    retry_settings: {{max_retries: 0}}
    task:
      code: {SCRIPTS}
      entry_script: fail_on_bad_content.py
      append_row_to: ${{{{outputs.rows}}}}
  second:
    type: parallel
    inputs:
      data: {{type: uri_folder, path: ./more}}
    outputs:
      rows: {{type: uri_folder}}
    input_data: ${{{{inputs.data}}}}
    mini_batch_size: "1"
    max_concurrency_per_instance: 1
    task:
      code: {SCRIPTS}
      entry_script: echo_names.py
      append_row_to: ${{{{outputs.rows}}}}
"""


def test_retry_failed_retries_the_steps_that_finished_and_runs_the_others(tmp_path, batchinfer):
    numbers(tmp_path / "data", 3)
    for i in range(3):  # no item succeeds: the step fails (exit 1)
        (tmp_path / "data" / f"n{i}.txt").write_text("bad\n")
    numbers(tmp_path / "more", 2)
    path, out = tmp_path / "pipeline.yml", tmp_path / "out"
    path.write_text(TWO_STEPS)
    failed = batchinfer("run", str(path), "--output", str(out))
    assert failed.code == 1, failed.stderr
    assert not (out / "second").exists()  # the pipeline stopped at the first step
    numbers(tmp_path / "data", 3)  # fixed
    run = batchinfer("run", str(path), "--output", str(out), "--retry-failed")
    assert run.code == 0, run.stderr
    first = json.loads((out / "first" / "summary.json").read_text())
    assert first["status"] == "succeeded" and first["items_succeeded"] == 3
    assert sorted((out / "first" / "outputs" / "rows" / "parallel_run_step.txt").read_text().splitlines()) == \
        [f"n{i}.txt {i}" for i in range(3)]
    assert sorted((out / "second" / "outputs" / "rows" / "parallel_run_step.txt").read_text().splitlines()) == \
        [f"n{i}.txt {i}" for i in range(2)]


# ------------------------------------------------------------ 6, 7. what a command step's shell reads

def quoted(form: str) -> str:
    command = "printf '%s\\n' " + form
    return yaml.safe_dump({"type": "pipeline", "jobs": {"show": {
        "command": command, "inputs": {"d": {"type": "uri_folder", "path": "./plain"}}}}})


@pytest.mark.parametrize("form", ["${{inputs.d}}", '"${{inputs.d}}"', "'${{inputs.d}}'", '"in: ${{inputs.d}} :end"'],
                         ids=["unquoted", "double-quoted", "single-quoted", "inside-a-double-quoted-text"])
@pytest.mark.parametrize("name", ["a b", "it's", 'say "hi"', "$HOME and `id`", "back\\slash"],
                         ids=["space", "single-quote", "double-quote", "dollar-backquote", "backslash"])
def test_a_path_reaches_the_command_as_one_exact_word_whatever_quotes_it_is_in(tmp_path, batchinfer, form, name):
    folder = tmp_path / name
    folder.mkdir()
    path = tmp_path / "pipeline.yml"
    path.write_text(quoted(form))
    run = batchinfer("run", str(path), "--output", str(tmp_path / "out"), "--input", f"show.d={folder}")
    assert run.code == 0, run.stderr
    expected = form.strip("'\"").replace("${{inputs.d}}", str(folder))
    assert (tmp_path / "out" / "show" / "logs" / "std_log.txt").read_text() == expected + "\n"


LITERAL = """\
type: pipeline
inputs:
  greeting: hello
jobs:
  say:
    command: echo ${{inputs.greeting}} && echo "${{inputs.greeting}}" && echo '${{inputs.greeting}}'
    inputs:
      greeting: ${{parent.inputs.greeting}}
"""


def test_a_literal_from_the_yaml_is_shell_text_one_from_the_command_line_is_one_word(tmp_path, batchinfer):
    path, out = tmp_path / "pipeline.yml", tmp_path / "out"
    path.write_text(LITERAL.replace("greeting: hello", "greeting: hi; echo there"))
    run = batchinfer("run", str(path), "--output", str(out))
    assert run.code == 0, run.stderr  # written in the YAML: the shell reads it as the author wrote it
    assert (out / "say" / "logs" / "std_log.txt").read_text() == "hi\nthere\nhi; echo there\nhi; echo there\n"
    run = batchinfer("run", str(path), "--output", str(out), "--input", "greeting=x; touch PWNED")
    assert run.code == 0, run.stderr  # from a caller (Airflow, a script): the exact text, never a command
    assert (out / "say" / "logs" / "std_log.txt").read_text() == "x; touch PWNED\n" * 3
    assert not list(tmp_path.rglob("PWNED"))


# ------------------------------------------------------------ 9, 10. secrets and quiet runs


def test_a_command_steps_state_keeps_no_secret_of_its_command(tmp_path, batchinfer):
    path, out = tmp_path / "pipeline.yml", tmp_path / "out"
    path.write_text("type: pipeline\njobs:\n  fetch:\n"
                    "    command: echo https://me:hunter2@example.invalid/data?sig=s3cr3t > /dev/null\n")
    run = batchinfer("run", str(path), "--output", str(out))
    assert run.code == 0, run.stderr
    state = (out / "fetch" / ".batchinfer" / "command.json").read_text()
    assert "example.invalid" in state and "hunter2" not in state and "s3cr3t" not in state
    assert "hunter2" not in run.stderr and "s3cr3t" not in run.stderr
    again = batchinfer("run", str(path), "--output", str(out))  # the fingerprint still recognises the command
    assert again.code == 0 and "reused" in again.stderr, again.stderr


@pytest.mark.parametrize("failing", ["command", "parallel"])
def test_the_python_api_writes_nothing_on_stderr_unless_asked(tmp_path, run_marker, failing):
    import subprocess
    import sys

    from conftest import MARKER

    numbers(tmp_path / "data", 2)
    (tmp_path / "pipeline.yml").write_text(textwrap.dedent(f"""\
        type: pipeline
        jobs:
          make:
            command: echo hello from the command; {"exit 3" if failing == "command" else "true"}
            outputs:
              files: {{type: uri_folder}}
          score:
            type: parallel
            inputs:
              data: {{type: uri_folder, path: ./data}}
              after: ${{{{parent.jobs.make.outputs.files}}}}
            input_data: ${{{{inputs.data}}}}
            mini_batch_size: "1"
            max_concurrency_per_instance: 1
            task:
              code: {SCRIPTS}
              entry_script: {"init_fails.py" if failing == "parallel" else "echo_names.py"}
        """))
    code = textwrap.dedent("""
        import json, batchinfer
        from batchinfer.errors import BatchInferError
        try:
            batchinfer.run("pipeline.yml", output="out")
            print(json.dumps({"raised": None}))
        except BatchInferError as exc:
            print(json.dumps({"raised": type(exc).__name__}))
    """)
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, MARKER: run_marker, "PYTHONPATH": str(repo)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["raised"] == "JobFailedError"
    assert proc.stderr == ""
    assert json.loads((tmp_path / "out" / "pipeline.json").read_text())["status"] == "failed"


# ------------------------------------------------------------ 12. the --restart hint names the step


def test_the_restart_hint_of_a_step_names_that_step(tmp_path, batchinfer):
    path, out = echo(tmp_path), tmp_path / "out"
    assert batchinfer("run", str(path), "--output", str(out)).code == 0
    (tmp_path / "data" / "n9.txt").write_text("9\n")
    one_error(batchinfer("run", str(path), "--output", str(out)), "inputs changed", "--step score --restart")
    run = batchinfer("run", str(path), "--output", str(out), "--step", "score", "--restart")
    assert run.code == 0, run.stderr
    assert len((out / "score" / "outputs" / "rows" / "parallel_run_step.txt").read_text().splitlines()) == 4


def test_a_users_uri_file_port_is_its_file_and_the_folder_around_it_is_left_alone(tmp_path, batchinfer):
    path, out = tmp_path / "pipeline.yml", tmp_path / "out"
    text = ("type: pipeline\njobs:\n  count:\n    command: echo N > ${{outputs.total}}\n"
            "    outputs:\n      total: {type: uri_file, path: ./total.txt}\n")
    path.write_text(text.replace("N", "1"))  # the port's folder is the one that holds pipeline.yml
    assert batchinfer("run", str(path), "--output", str(out)).code == 0
    path.write_text(text.replace("N", "2"))
    run = batchinfer("run", str(path), "--output", str(out))
    assert run.code == 0, run.stderr
    assert (tmp_path / "total.txt").read_text() == "2\n" and path.exists()
