"""Faults lose nothing: hung and dead workers, a killed coordinator, Ctrl-C, resume, reuse, retry.

Real processes and real signals throughout; every test checks that each row
appears exactly once and (through the ``run_marker`` fixture) that no worker
process outlives the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import MARKER, SCRIPTS, _processes_with


def write_spec(tmp_path: Path, script: str, data: Path, **keys) -> Path:
    spec = {"entry_script": script, "source_directory": str(SCRIPTS), "inputs": {"path": str(data)},
            "process_count_per_node": 2, **keys}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def start(spec: Path, out: Path, marker: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """Start ``batchinfer run`` in the background, in its own process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "batchinfer", "run", str(spec), "--output", str(out), *args],
        env={**os.environ, MARKER: marker, **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def journal_lines(out: Path) -> int:
    path = out / ".batchinfer" / "journal.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def wait_for_commits(out: Path, count: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while journal_lines(out) < count:
        assert proc.poll() is None, f"the job ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.02)


def assert_exactly_once(out: Path, expected: list[str]) -> None:
    data = (out / "parallel_run_step.txt").read_bytes()
    assert data.endswith(b"\n"), "a partial last line"
    rows = data.decode().splitlines()
    assert len(rows) == len(set(rows)), "duplicate rows"
    assert sorted(rows) == sorted(expected)


def wait_for_stderr(proc: subprocess.Popen, text: str, timeout: float = 60) -> str:
    """Read the command's stderr line by line until a line holds ``text``; return what was read."""
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline, f"no {text!r} on stderr: {seen}"
        line = proc.stderr.readline()
        assert line, f"stderr closed before {text!r}: {seen}"
        seen += line
    return seen


def workers_gone(marker: str, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while _processes_with(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# ------------------------------------------------------------------ hung and dead workers


def test_run_that_hangs_is_timed_out_and_its_item_fails(job, tmp_path, text_files):
    data = text_files(6)
    (data / "f002-hang.txt").write_text("x")
    # the timeout must also cover a worker's start on a loaded machine: 5s, not 1s
    run = job("hang_on.py", inputs={"path": str(data)}, mini_batch_size=1, run_invocation_timeout=5, run_max_try=2)
    assert run.code == 0, run.stderr
    summary = run.summary
    assert (summary["items_succeeded"], summary["items_failed"]) == (6, 1)
    timeouts = [e for e in run.errors() if e["kind"] == "timeout"]
    assert len(timeouts) == 2 and all(e["items"][0].endswith("f002-hang.txt") for e in timeouts)
    assert "run_invocation_timeout" in timeouts[0]["message"]
    logs = run.log("worker-0.log") + run.log("worker-1.log")
    assert "most recent call first" in logs and "hang_on.py" in logs  # the hung worker's stack
    assert run.log("failed_items.txt").strip().endswith("f002-hang.txt")


def test_timeouts_are_not_bisected(job, tmp_path, text_files):
    data = text_files(3)
    (data / "f001-hang.txt").write_text("x")
    run = job("hang_on.py", inputs={"path": str(data)}, mini_batch_size=4, run_invocation_timeout=5, run_max_try=1)
    assert run.summary["items_failed"] == 4
    assert [e["kind"] for e in run.errors()] == ["timeout"]


def test_init_that_hangs_is_treated_as_a_failed_init(job, text_files):
    data = text_files(2)
    run = job("init_hangs.py", inputs={"path": str(data)}, process_count_per_node=1, run_invocation_timeout=1)
    assert run.code == 1
    assert "init() did not finish within 1s" in run.stderr
    assert not (run.output_dir / ".batchinfer" / "tmp").exists()  # the killed worker's folder is gone too


def test_worker_killed_mid_run_is_replaced_and_rows_appear_once(job, tmp_path, text_files):
    data = text_files(30)
    for i in (4, 17, 25):
        (data / f"f{i:03d}.txt").rename(data / f"f{i:03d}-kill.txt")
    state = tmp_path / "state"
    state.mkdir()
    run = job("kill_once.py", inputs={"path": str(data)}, mini_batch_size=3, arguments=["--state", str(state)])
    assert run.code == 0, run.stderr
    assert_exactly_once(run.output_dir, [p.name for p in data.iterdir()])
    died = [e for e in run.errors() if e["kind"] == "worker_died"]
    assert len(died) == 3 and all("SIGKILL" in e["message"] for e in died)
    assert run.summary["items_failed"] == 0 and run.summary["tries"] == 13


# ------------------------------------------------------------------ a killed coordinator, resume


@pytest.mark.parametrize("commits_before_kill", [1, 6, 14])
def test_coordinator_killed_then_rerun_gives_every_row_once(tmp_path, text_files, run_marker, batchinfer,
                                                            commits_before_kill):
    data = text_files(60)
    spec = write_spec(tmp_path, "slow_echo.py", data, mini_batch_size=3)
    out = tmp_path / "out"
    proc = start(spec, out, run_marker)
    wait_for_commits(out, commits_before_kill, proc)
    proc.kill()  # SIGKILL to the coordinator only
    proc.wait()
    assert workers_gone(run_marker), "workers outlived their coordinator"
    again = batchinfer("run", str(spec), "--output", str(out), output=out)
    assert again.code == 0, again.stderr
    assert_exactly_once(out, [f"f{i:03d}.txt {i}" for i in range(60)])
    summary = again.summary
    assert summary["items_succeeded"] == 60 and summary["mini_batches_total"] == 20
    assert summary["mini_batches_resumed"] >= commits_before_kill


def test_partial_tail_is_cut_off_on_resume(tmp_path, text_files, batchinfer):
    data = text_files(9)
    spec = write_spec(tmp_path, "echo_names.py", data, mini_batch_size=3, process_count_per_node=1)
    out = tmp_path / "out"
    assert batchinfer("run", str(spec), "--output", str(out)).code == 0
    # make it look like a crash: forget the last commit and leave half a row behind it
    journal = out / ".batchinfer" / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    with open(out / "parallel_run_step.txt", "a") as f:
        f.write("f999.txt half a ro")
    (out / "summary.json").unlink()
    again = batchinfer("run", str(spec), "--output", str(out), output=out)
    assert again.code == 0, again.stderr
    assert_exactly_once(out, [f"f{i:03d}.txt {i}" for i in range(9)])
    assert again.summary["mini_batches_resumed"] == 2


def test_sigint_stops_with_130_and_a_rerun_completes(tmp_path, text_files, run_marker, batchinfer):
    data = text_files(80)
    spec = write_spec(tmp_path, "slow_echo.py", data, mini_batch_size=2)
    out = tmp_path / "out"
    proc = start(spec, out, run_marker, env={"SLOW_ECHO_S": "0.05"})
    wait_for_commits(out, 3, proc)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole process group
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopping" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["items_succeeded"] < 80
    assert workers_gone(run_marker)
    again = batchinfer("run", str(spec), "--output", str(out), output=out)
    assert again.code == 0, again.stderr
    assert_exactly_once(out, [f"f{i:03d}.txt {i}" for i in range(80)])


def test_sigterm_stops_with_143(tmp_path, text_files, run_marker):
    data = text_files(80)
    spec = write_spec(tmp_path, "slow_echo.py", data, mini_batch_size=2)
    out = tmp_path / "out"
    proc = start(spec, out, run_marker, env={"SLOW_ECHO_S": "0.05"})
    wait_for_commits(out, 2, proc)
    proc.terminate()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"


def test_second_ctrl_c_stops_at_once(tmp_path, text_files, run_marker, batchinfer):
    data = text_files(6)
    (data / "f003-hang.txt").write_text("x")
    spec = write_spec(tmp_path, "hang_on.py", data, mini_batch_size=1, process_count_per_node=1,
                      run_invocation_timeout=300)
    out = tmp_path / "out"
    proc = start(spec, out, run_marker)
    wait_for_commits(out, 3, proc)  # f000-f002 done; f003-hang is running and never returns
    os.killpg(proc.pid, signal.SIGINT)
    wait_for_stderr(proc, "stopping: letting running mini-batches finish")
    assert proc.poll() is None  # still waiting for the hung mini-batch (grace period)
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert workers_gone(run_marker)
    rows = (out / "parallel_run_step.txt").read_text().splitlines()
    assert rows == ["f000.txt", "f001.txt", "f002.txt"]


# ------------------------------------------------------------------ reuse, changes, corrupt inputs, retry


def test_changed_script_on_the_same_output_needs_restart(tmp_path, text_files, batchinfer):
    text_files(4)
    source = tmp_path / "src"
    source.mkdir()
    (source / "score.py").write_text((SCRIPTS / "echo_names.py").read_text())
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"entry_script": "score.py", "source_directory": "src", "inputs": {"path": "data"}}))
    out = tmp_path / "out"
    assert batchinfer("run", str(spec), "--output", str(out)).code == 0
    (source / "score.py").write_text((SCRIPTS / "echo_names.py").read_text().replace('f"{os', 'f"v2 {os'))
    changed = batchinfer("run", str(spec), "--output", str(out))
    assert changed.code == 2 and "holds a different job" in changed.stderr and "--restart" in changed.stderr
    restarted = batchinfer("run", str(spec), "--output", str(out), "--restart", output=out)
    assert restarted.code == 0
    assert all(row.startswith("v2 ") for row in restarted.rows()) and len(restarted.rows()) == 4


def test_changed_inputs_of_a_finished_job_need_restart(tmp_path, text_files, batchinfer):
    data = text_files(4)
    spec = write_spec(tmp_path, "echo_names.py", data)
    out = tmp_path / "out"
    assert batchinfer("run", str(spec), "--output", str(out)).code == 0
    (data / "f100.txt").write_text("100\n")
    changed = batchinfer("run", str(spec), "--output", str(out))
    assert changed.code == 2 and "inputs changed" in changed.stderr


def write_pngs(folder: Path, count: int) -> None:
    folder.mkdir()
    for i in range(count):
        Image.new("L", (28, 28), color=i * 5).save(folder / f"img_{i:02d}.png")


def test_one_corrupt_image_in_a_mini_batch_of_50_costs_one_item_and_retry_failed_fixes_it(tmp_path, batchinfer):
    images = tmp_path / "images"
    write_pngs(images, 50)
    (images / "img_23.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    spec = write_spec(tmp_path, "image_sizes.py", images, mini_batch_size=50, run_max_try=2)
    out = tmp_path / "out"
    run = batchinfer("run", str(spec), "--output", str(out), output=out)
    assert run.code == 0, run.stderr
    assert len(run.rows()) == 49
    assert run.summary["items_failed"] == 1
    assert run.log("failed_items.txt") == f"{images / 'img_23.png'}\n"
    assert "cannot identify image file" in run.errors()[0]["message"]

    Image.new("L", (28, 28), color=115).save(images / "img_23.png")  # the user fixes the file
    retried = batchinfer("run", str(spec), "--output", str(out), "--retry-failed", output=out)
    assert retried.code == 0, retried.stderr
    assert_exactly_once(out, [f"img_{i:02d}.png: 28x28 {i * 5:.1f}" for i in range(50)])
    summary = retried.summary
    assert (summary["items_succeeded"], summary["items_failed"], summary["items_total"]) == (50, 0, 50)
    assert summary["mini_batches_failed"] == 0
    assert retried.log("failed_items.txt") == ""
    # and a plain rerun now reuses the finished job
    assert "reused" in batchinfer("run", str(spec), "--output", str(out)).stderr


def test_retry_failed_needs_a_finished_job(tmp_path, text_files, batchinfer):
    spec = write_spec(tmp_path, "echo_names.py", text_files(2))
    run = batchinfer("run", str(spec), "--output", str(tmp_path / "out"), "--retry-failed")
    assert run.code == 2 and "--retry-failed needs a finished job" in run.stderr


# ------------------------------------------------------------------ stress


@pytest.mark.slow
def test_stress_coordinator_killed_at_20_random_moments(tmp_path, text_files, run_marker, batchinfer):
    """20 SIGKILLs, each after a random number (1-4) of new commits: moments defined by progress, not time.

    300 mini-batches of one item; a run commits what it waited for plus the few that were in
    flight when it was killed (run() sleeps, so no machine runs it faster than 40 mini-batches
    a second), far from 300 after 20 runs: if a run ever finished first, the test says so.
    """
    import random

    rng = random.Random(20261125)
    data = text_files(300)
    spec = write_spec(tmp_path, "slow_echo.py", data, mini_batch_size=1)
    out = tmp_path / "out"
    for _ in range(20):
        proc = start(spec, out, run_marker, env={"SLOW_ECHO_S": "0.05"})
        wait_for_commits(out, journal_lines(out) + rng.randint(1, 4), proc)  # fails if the job ended first
        proc.kill()
        proc.wait()
        assert workers_gone(run_marker)
    final = batchinfer("run", str(spec), "--output", str(out), output=out, env={"SLOW_ECHO_S": "0.01"})
    assert final.code == 0, final.stderr
    assert_exactly_once(out, [f"f{i:03d}.txt {i}" for i in range(300)])
    assert final.summary["items_succeeded"] == 300 and final.summary["items_total"] == 300
    assert final.summary["mini_batches_resumed"] >= 20


def test_a_failing_row_in_a_table_slice_costs_a_small_slice(tmp_path, job):
    import pandas as pd

    pd.DataFrame({"id": [f"r{i:05d}" for i in range(256)], "x": range(256)}).to_csv(tmp_path / "t.csv", index=False)
    run = job("fail_on_id.py", inputs={"type": "tabular", "path": "t.csv"}, arguments=["--bad", "r00100"],
              mini_batch_size="1MB", run_max_try=1)
    assert run.code == 0, run.stderr
    summary = run.summary
    assert summary["items_failed"] == 8  # 256 rows bisected down to 256/32
    assert summary["items_succeeded"] == 248 and len(run.rows()) == 248
    assert run.log("failed_items.txt").strip() == f"{tmp_path / 't.csv'} rows 96-104"
