"""The tool in people's hands: progress on a terminal and in a pipe, stdout for data only,
validate / plan / status / init, and the options around run."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import threading

import yaml

from background import wait_until
from conftest import MARKER, SCRIPTS, assert_one_line_error


def write_spec(tmp_path, script="echo_names.py", data="data", **keys):
    spec = {"entry_script": script, "source_directory": str(SCRIPTS), "inputs": {"path": str(data)},
            "process_count_per_node": 2, **keys}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# ------------------------------------------------------------------ progress


def test_progress_bar_on_a_terminal_reaches_100_percent(tmp_path, text_files, run_marker):
    data = text_files(30)
    spec = write_spec(tmp_path, "slow_echo.py", data, mini_batch_size=2)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchinfer", "run", str(spec), "--output", str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=slave, env={**os.environ, MARKER: run_marker, "TERM": "xterm", "COLUMNS": "160"},
    )
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(master)
    text = seen.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "\x1b[" in text  # drawn with terminal escapes
    assert "100%" in text and "15/15" in text
    assert "succeeded: 30/30 items" in text
    assert proc.stdout.read() == b""  # the bar never touches stdout


def test_progress_in_a_pipe_is_plain_timestamped_lines(tmp_path, text_files, run_marker):
    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, "gated_echo.py", text_files(30), mini_batch_size=1, arguments=["--gate", str(gate)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchinfer", "run", str(spec), "--output", str(tmp_path / "out"),
         "--progress-interval", "0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, MARKER: run_marker},
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(proc.stderr), daemon=True)
    reader.start()

    def progress_lines() -> list[str]:
        return [line for line in list(seen) if "mini-batches" in line and not line.startswith("batchinfer")]

    # the workers wait at the gate: the job stays running until three periodic lines came, however long that takes
    wait_until(lambda: len(progress_lines()) >= 3, proc, "three progress lines")
    gate.touch()
    assert proc.wait(timeout=60) == 0
    reader.join(timeout=60)
    text = "".join(seen)
    assert "\x1b[" not in text
    lines = [line.rstrip("\n") for line in progress_lines()]
    assert ": 0/" in lines[0]  # nothing done while the gate was shut
    assert lines[-1].endswith("0/2 workers busy") and " 30/30 mini-batches" in lines[-1]
    assert all(line[:4].isdigit() and "T" in line[:11] for line in lines)  # an ISO timestamp first


def test_quiet_prints_nothing_on_success(job, text_files):
    run = job("echo_names.py", "--quiet", inputs={"path": str(text_files(3))})
    assert run.code == 0 and run.stderr == "" and run.stdout == ""


def test_failed_job_names_the_file_to_open(job, text_files):
    run = job("returns.py", inputs={"path": str(text_files(2))}, arguments=["--mode", "none"], run_max_try=1)
    assert run.code == 1
    assert "first error: mini-batch" in run.stderr
    assert f"see {run.output_dir / 'logs' / 'errors.jsonl'}" in run.stderr
    assert "errors.jsonl" in run.log("readme.txt") and "worker-N.log" in run.log("readme.txt")


# ------------------------------------------------------------------ stdout


def test_output_dash_streams_rows_to_stdout_and_nothing_else(tmp_path, text_files, batchinfer):
    spec = write_spec(tmp_path, data=text_files(12), mini_batch_size=5)
    logs = tmp_path / "logs-here"
    run = batchinfer("run", str(spec), "--output", "-", "--logs", str(logs))
    assert run.code == 0, run.stderr
    assert sorted(run.stdout.splitlines()) == [f"f{i:03d}.txt {i}" for i in range(12)]
    summary = json.loads((logs / "summary.json").read_text())
    assert summary["items_succeeded"] == 12 and summary["output_file"] == "-"
    assert f"logs: {logs / 'logs'}" in run.stderr
    assert not (logs / "parallel_run_step.txt").exists()


def test_closed_pipe_ends_the_job_quietly(tmp_path, text_files, run_marker):
    data = text_files(10)
    for i in range(10):
        (data / f"late{i:03d}.txt").write_text(f"{100 + i}\n")
    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, "gated_echo.py", data, mini_batch_size=1,
                      arguments=["--gate", str(gate), "--held", "late"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchinfer", "run", str(spec), "--output", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, MARKER: run_marker},
    )
    rows = [proc.stdout.readline() for _ in range(3)]  # as '| head -3' does, then it goes away
    proc.stdout.close()
    gate.touch()  # the late rows are written only now, to a pipe nobody reads
    _, stderr = proc.communicate(timeout=60)
    assert all(row == f"{row.split()[0]} {int(row[1:4])}\n" for row in rows)  # in completion order
    assert proc.returncode == 141  # like any program whose reader went away
    assert "Traceback" not in stderr and "Error" not in stderr
    # the run_marker fixture then checks that no worker outlived the job


def test_json_prints_the_summary_on_stdout(job, text_files):
    run = job("echo_names.py", "--json", inputs={"path": str(text_files(4))})
    assert run.code == 0
    assert json.loads(run.stdout) == run.summary


def test_output_dash_and_json_together_is_a_usage_error(tmp_path, text_files, batchinfer):
    spec = write_spec(tmp_path, data=text_files(2))
    assert_one_line_error(batchinfer("run", str(spec), "--output", "-", "--json"), "both write to stdout")


# ------------------------------------------------------------------ validate, plan, status, init


def test_validate_checks_without_running(tmp_path, text_files, batchinfer):
    marker = tmp_path / "imported"
    spec = write_spec(tmp_path, "import_side_effect.py", text_files(3))
    run = batchinfer("validate", str(spec), env={"IMPORT_MARKER": str(marker)})
    assert run.code == 0, run.stderr
    assert "is valid" in run.stderr and run.stdout == ""
    assert not marker.exists()
    broken = write_spec(tmp_path, "no_run.py", tmp_path / "data")
    assert_one_line_error(batchinfer("validate", str(broken)), "does not define run()")


def test_plan_lists_mini_batches_without_importing_the_script(tmp_path, text_files, batchinfer):
    marker = tmp_path / "imported"
    spec = write_spec(tmp_path, "import_side_effect.py", text_files(23), mini_batch_size=5)
    run = batchinfer("plan", str(spec), "--json", env={"IMPORT_MARKER": str(marker)})
    assert run.code == 0, run.stderr
    info = json.loads(run.stdout)
    assert (info["files"], info["mini_batches"], info["items"]) == (23, 5, 23)
    assert info["items_per_mini_batch"] == {"min": 3, "median": 5, "max": 5}
    assert info["first_mini_batches"][0]["first"].endswith("f000.txt")
    table = batchinfer("plan", str(spec), "--first", "2", env={"IMPORT_MARKER": str(marker)})
    assert "23 files, 5 mini-batches, 23 items" in table.stdout
    assert len([line for line in table.stdout.splitlines() if line.strip().startswith(("0 ", "1 "))]) == 2
    assert not marker.exists()


def test_status_of_a_running_then_finished_job(tmp_path, text_files, run_marker, batchinfer):
    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, "gated_echo.py", text_files(60), mini_batch_size=1, arguments=["--gate", str(gate)])
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchinfer", "run", str(spec), "--output", str(out)],
        env={**os.environ, MARKER: run_marker}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    # the workers wait at the gate: the job is running until the test opens it
    wait_until((out / ".batchinfer" / "status.json").exists, proc, "status.json")
    running = batchinfer("status", str(out), "--json")
    assert running.code == 0, running.stderr
    doc = json.loads(running.stdout)
    assert doc["state"] == "running" and doc["pid"] == proc.pid and doc["workers"] == 2
    line = batchinfer("status", str(out))
    assert "running (pid" in line.stdout and "mini-batches" in line.stdout
    watcher = subprocess.Popen(
        [sys.executable, "-m", "batchinfer", "status", str(out), "--watch", "--interval", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, MARKER: run_marker},
    )
    first = watcher.stdout.readline()  # printed while the job still waits at the gate
    assert "running (pid" in first, watcher.stderr.read()
    gate.touch()
    assert proc.wait(timeout=60) == 0
    rest, _ = watcher.communicate(timeout=60)
    assert watcher.returncode == 0
    assert rest.splitlines()[-1].startswith("job: succeeded: 60/60 items succeeded")


def test_status_of_something_else_is_an_error(tmp_path, batchinfer):
    assert_one_line_error(batchinfer("status", str(tmp_path)), "holds no batchinfer job")


def test_init_writes_a_starter_job_that_runs_as_it_is(tmp_path, batchinfer):
    made = batchinfer("init", str(tmp_path / "starter"))
    assert made.code == 0, made.stderr
    assert "now run: batchinfer run" in made.stderr
    out = tmp_path / "starter-out"
    run = batchinfer("run", str(tmp_path / "starter" / "job.yaml"), "--output", str(out), output=out)
    assert run.code == 0, run.stderr
    assert sorted(run.rows()) == ["hello.txt: 2 words", "lorem.txt: 5 words", "numbers.txt: 3 words"]
    again = batchinfer("init", str(tmp_path / "starter"))
    assert_one_line_error(again, "already exists")


# ------------------------------------------------------------------ options


def test_processes_and_log_level_options(job, text_files):
    run = job("echo_names.py", "--processes", "3", "--log-level", "debug", inputs={"path": str(text_files(9))},
              mini_batch_size=1)
    assert run.code == 0, run.stderr
    assert run.summary["workers"] == 3
    assert "DEBUG" in run.log("worker-2.log")


def test_every_command_has_help_with_examples(batchinfer):
    for command in ("run", "validate", "plan", "status", "init", "convert"):
        helped = batchinfer(command, "--help")
        assert helped.code == 0 and "Example" in helped.stdout, command
