"""No process outlives a job, whatever the script does, and workers start only when there is work.

The cases that both backends must pass are in tests/test_executor_contract.py: workers die with a
SIGKILLed coordinator even while run() or init() holds the GIL; what the script starts is gone when
the job ends by itself (succeeded, failed) and never holds the command's stdout/stderr. These are
the local executor's own:

- the script's children die with a SIGKILLed coordinator;
- what the script starts (children, double-forked daemons) is gone after Ctrl-C and a closed
  stdout too, and no helper process of batchinfer's holds the command's stdout/stderr
  (a reader of ``batchinfer run ... | cat`` gets its EOF);
- a worker whose run() ran out of memory (or called sys.exit) is replaced;
- no more workers start than there are mini-batches.

Every wait is on something observable (a marker file, a pid gone), with a generous deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from background import alive, all_gone, holders_of, pipe_inode, start, wait_for_files
from conftest import MARKER, SCRIPTS, _processes_with

DEADLINE_S = 10.0  # generous: every wait below ends as soon as what it waits for is seen


def write_spec(tmp_path: Path, script: str, data: Path, **keys) -> Path:
    spec = {"entry_script": script, "source_directory": str(SCRIPTS), "inputs": {"path": str(data)},
            "process_count_per_node": 2, "mini_batch_size": 1, "run_invocation_timeout": 600, **keys}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# ------------------------------------------------------------------ item 10: a SIGKILLed coordinator


def test_what_the_script_started_dies_with_a_sigkilled_coordinator(tmp_path, text_files, run_marker):
    """The fork server kills everything below it when the coordinator dies: the script's children too.

    Only a double-forked daemon escapes a SIGKILLed coordinator (it was re-parented to the
    coordinator, then to init): this test kills those itself, as the README says.
    """
    state, gate = tmp_path / "state", tmp_path / "gate"
    state.mkdir()
    spec = write_spec(tmp_path, "spawns.py", text_files(4),
                      arguments=["--state", str(state), "--gate", str(gate), "--where", "run"])
    proc = start(spec, run_marker, "--output", str(tmp_path / "out"))
    pairs = [f.read_text().split() for f in wait_for_files(state, 2, proc)]
    children, daemons = [int(child) for child, _ in pairs], [int(daemon) for _, daemon in pairs]
    proc.kill()  # SIGKILL to the coordinator only
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    try:
        assert all_gone(children) == [], "the script's children outlived their SIGKILLed coordinator"
    finally:
        for pid in daemons:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ------------------------------------------------------------------ item 11: what the script starts


ENDINGS = [
    # (where the script starts its processes, how the job ends, expected exit code); the jobs that
    # end by themselves (succeeded, failed) are cases of tests/test_executor_contract.py, on both backends
    ("init", "ctrl_c", 130),
    ("run", "closed_pipe", 141),
]


@pytest.mark.parametrize("where, ending, code", ENDINGS)
def test_nothing_the_script_starts_outlives_the_job_or_holds_its_output(
        tmp_path, text_files, run_marker, where, ending, code):
    state, gate = tmp_path / "state", tmp_path / "gate"
    state.mkdir()
    arguments = ["--state", str(state), "--gate", str(gate), "--where", where,
                 "--end", "fail" if ending == "failed" else "ok"]
    spec = write_spec(tmp_path, "spawns.py", text_files(4), arguments=arguments)
    output = ["--output", "-"] if ending == "closed_pipe" else ["--output", str(tmp_path / "out"), "--json"]
    proc = start(spec, run_marker, *output)
    spawned = [int(pid) for f in wait_for_files(state, 2, proc) for pid in f.read_text().split()]
    assert len(spawned) == 4 and all(alive(pid) for pid in spawned)

    # while the job runs: nothing but the coordinator holds its stdout or stderr
    others = [p.pid for p in _processes_with(run_marker) if p.pid != proc.pid]
    assert holders_of({pipe_inode(proc.pid, 1), pipe_inode(proc.pid, 2)}, others) == []

    if ending == "ctrl_c":
        os.kill(proc.pid, signal.SIGINT)  # the coordinator only: the script's processes never see it
    elif ending == "closed_pipe":
        proc.stdout.close()  # the reader goes away before the first row
        gate.touch()
    else:
        gate.touch()
    # read both pipes to EOF: a process that still held them would make this wait forever
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("no EOF on the command's stdout/stderr: something still holds them")
    assert proc.returncode == code, stderr.decode()
    assert b"Traceback" not in stderr
    if ending in ("succeeded", "failed"):
        assert json.loads(stdout)["status"] == ending
    assert all_gone(spawned) == [], "processes started by the script outlived the job"


# ------------------------------------------------------------------ item 12: a worker that cannot go on


BREAKS = [
    # (mode, kind in errors.jsonl, words of its message, worker replaced)
    ("memory", "out_of_memory", "run() raised MemoryError: cannot allocate", True),
    ("alloc", "out_of_memory", "run() raised MemoryError", True),
    ("exit", "worker_died", "run() called sys.exit(3)", True),
    ("interrupt", "exception", "run() raised KeyboardInterrupt", False),
    ("recursion", "exception", "run() raised RecursionError", False),
]


@pytest.mark.parametrize("mode, kind, words, replaced", BREAKS)
def test_a_worker_left_unusable_is_replaced_and_only_the_bad_item_fails(job, text_files, mode, kind, words, replaced):
    data = text_files(30)
    (data / "f010.txt").rename(data / "f010-bad.txt")
    run = job("breaks_worker.py", inputs={"path": str(data)}, arguments=["--mode", mode], mini_batch_size=1,
              process_count_per_node=1, run_max_try=2)
    assert run.code == 0, run.stderr
    summary = run.summary
    assert (summary["items_succeeded"], summary["items_failed"]) == (29, 1)
    assert run.log("failed_items.txt").strip().endswith("f010-bad.txt")
    errors = run.errors()
    assert [e["kind"] for e in errors] == [kind, kind]
    assert all(words in e["message"] and e["items"][0].endswith("f010-bad.txt") for e in errors)
    if replaced:
        assert all("replaced" in e["message"] for e in errors)
        assert summary["workers_started"] >= 2
    else:
        assert summary["workers_started"] == 1


def test_a_mini_batch_that_runs_out_of_memory_is_bisected_like_a_worker_death(job, text_files):
    data = text_files(8)
    (data / "f005.txt").rename(data / "f005-bad.txt")
    run = job("breaks_worker.py", inputs={"path": str(data)}, arguments=["--mode", "memory"], mini_batch_size=8,
              process_count_per_node=1, run_max_try=1)
    assert run.code == 0, run.stderr
    assert (run.summary["items_succeeded"], run.summary["items_failed"]) == (7, 1)
    assert run.log("failed_items.txt").strip().endswith("f005-bad.txt")
    assert {e["kind"] for e in run.errors()} == {"out_of_memory"}


# ------------------------------------------------------------------ item 13: workers on demand


@pytest.mark.parametrize("requested, files, most, warned", [(1000, 6, 6, True), (2, 6, 2, False), (4, 1, 1, False)])
def test_no_more_workers_start_than_there_are_mini_batches(job, text_files, requested, files, most, warned):
    run = job("echo_names.py", inputs={"path": str(text_files(files))}, mini_batch_size=1,
              process_count_per_node=requested)
    assert run.code == 0, run.stderr
    logs = sorted(p.name for p in (run.output_dir / "logs").glob("worker-*.log"))
    assert 1 <= len(logs) <= most
    assert run.summary["workers_started"] == len(logs)
    assert run.summary["workers"] == requested
    cores = os.cpu_count()
    if warned:
        assert f"warning: {requested} worker processes on {cores} cores" in run.stderr
    else:
        assert "warning" not in run.stderr


@pytest.mark.parametrize("closed", [">&-", "2>&-", "--quiet 2>&-", ">&- 2>&-", "<&- >&- 2>&-"])
def test_a_job_runs_with_stdout_or_stderr_closed(tmp_path, text_files, run_marker, closed):
    """A guard for the helpers' start with /dev/null as stdout/stderr: a closed descriptor stays closed, no crash."""
    spec = write_spec(tmp_path, "echo_names.py", text_files(3))
    out = tmp_path / "out"
    proc = subprocess.run(["bash", "-c", f"{sys.executable} -m batchinfer run {spec} --output {out} {closed}"],
                          env={**os.environ, MARKER: run_marker}, timeout=120)
    assert proc.returncode == 0
    assert sorted((out / "parallel_run_step.txt").read_text().splitlines()) == [f"f{i:03d}.txt {i}" for i in range(3)]


def test_rows_to_a_closed_stdout_is_a_mistake_not_a_silent_loss(tmp_path, text_files, run_marker):
    spec = write_spec(tmp_path, "echo_names.py", text_files(3))
    proc = subprocess.run(["bash", "-c", f"{sys.executable} -m batchinfer run {spec} --output - >&-"],
                          env={**os.environ, MARKER: run_marker}, timeout=120, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("batchinfer: error: stdout is closed") and proc.stderr.count("\n") == 1


def test_a_job_runs_under_a_long_tmpdir(batchinfer, text_files, tmp_path):
    """multiprocessing puts the fork server's socket under TMPDIR; an AF_UNIX path holds at most 107
    bytes, so a long TMPDIR (a CI runner's, a deep home folder) once stopped every job with a traceback."""
    data = text_files(4)
    long_tmp = tmp_path / ("t" * 100)
    long_tmp.mkdir()
    spec = tmp_path / "job.yaml"
    spec.write_text(f"entry_script: echo_names.py\nsource_directory: {SCRIPTS}\ninputs: {{path: {data}}}\n"
                    "mini_batch_size: 1\nprocess_count_per_node: 2\n")
    run = batchinfer("run", str(spec), "--output", str(tmp_path / "out"), env={"TMPDIR": str(long_tmp)},
                     output=tmp_path / "out")
    assert run.code == 0, run.stderr
    assert len(run.rows()) == 4
