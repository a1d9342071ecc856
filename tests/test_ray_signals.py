"""Ctrl-C and SIGTERM on ``backend: ray`` with a Ray instance of batchinfer's own, at every moment of
a run: while the instance starts (``ray.init`` takes seconds) and mid-run; and what a run through the
Python API leaves in its caller's process (the caller's signal handlers, no Ray instance), whether
it succeeds or fails after the backend was prepared.

Signals are sent when a marker shows the phase (the instance's processes exist, a run() started),
never after a guessed delay.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import MARKER, REPO, SCRIPTS

if importlib.util.find_spec("ray") is None:
    pytest.skip("backend ray needs the 'ray' extra", allow_module_level=True)
pytestmark = pytest.mark.xdist_group("ray")

ROWS = "parallel_run_step.txt"
N = 12


@pytest.fixture
def own_ray_job(tmp_path, text_files, run_marker):
    """``own_ray_job(**keys)``: a spec over N text files on a Ray instance of batchinfer's own (no
    ray_address), run() waiting for a GO file (tests/scripts/ray_faults.py); ``(spec, out, faults, env)``."""

    def make(**keys) -> tuple[Path, Path, Path, dict[str, str]]:
        return _own_ray_job(tmp_path, text_files, run_marker, keys)

    return make


def _own_ray_job(tmp_path, text_files, run_marker, keys):
    faults = tmp_path / "faults"
    faults.mkdir()
    spec = {
        "entry_script": "ray_faults.py", "source_directory": str(SCRIPTS),
        "inputs": {"type": "file", "path": str(text_files(N))}, "mini_batch_size": 1,
        "output_action": "append_row", "backend": "ray", "node_count": 1, "num_cpus_per_process": 0.5,
        "run_invocation_timeout": 60,
        "environment_variables": {"FAULTS_DIR": str(faults), "GO_FILE": str(tmp_path / "go")},
        **keys,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**os.environ, MARKER: run_marker, "RAY_AUTH_TOKEN": "", "RAY_AUTH_MODE": ""}
    env.pop("COLUMNS", None)
    return path, tmp_path / "out", faults, env


def _start(spec: Path, out: Path, env: dict[str, str]) -> subprocess.Popen:
    """``batchinfer run`` in its own process group, as a terminal starts it."""
    return subprocess.Popen([sys.executable, "-m", "batchinfer", "run", str(spec), "--output", str(out)],
                            cwd=spec.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait(what: str, done, proc: subprocess.Popen, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while not done():
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} within {within_s}s"
        time.sleep(0.02)


def _instance_started(proc: subprocess.Popen) -> bool:
    """The coordinator started its own Ray instance's processes (ray.init is still under way)."""
    try:
        return any(child.name().startswith(("gcs_server", "raylet"))
                   for child in psutil.Process(proc.pid).children(recursive=True))
    except psutil.Error:
        return False


def _send(proc: subprocess.Popen, signum: int, to_group: bool) -> None:
    if to_group:  # Ctrl-C in a terminal: the whole foreground process group
        os.killpg(proc.pid, signum)
    else:  # a supervisor's SIGTERM: the coordinator alone
        proc.send_signal(signum)


def _stderr_until(proc: subprocess.Popen, text: str) -> str:
    seen = ""
    while text not in seen:
        line = proc.stderr.readline()
        assert line, f"stderr closed before {text!r}: {seen}"
        seen += line
    return seen


def _rerun_completes_once(spec: Path, out: Path, env: dict[str, str]) -> dict:
    (spec.parent / "go").touch()
    proc = _start(spec, out, env)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    rows = (out / ROWS).read_text().splitlines()
    assert sorted(rows) == [f"f{i:03d}.txt" for i in range(N)]
    return json.loads((out / "summary.json").read_text())


def _stopped(proc: subprocess.Popen, signum: int, out: Path) -> tuple[str, dict | None]:
    """The run ended with the signal's code, no traceback, no row on stdout; its stderr and summary (if any)."""
    stdout, stderr = proc.communicate(timeout=120)
    code = 130 if signum == signal.SIGINT else 143
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and stdout == ""
    if not (out / "summary.json").exists():
        return stderr, None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["exit_code"] == code  # resumable
    return stderr, summary


@pytest.mark.parametrize(("signum", "to_group"), [(signal.SIGINT, True), (signal.SIGTERM, False)],
                         ids=["SIGINT-to-the-group", "SIGTERM-to-the-coordinator"])
def test_a_signal_while_the_instance_starts_or_mid_run_stops_with_its_code_and_a_rerun_completes_once(
        own_ray_job, signum, to_group):
    spec, out, faults, env = own_ray_job(process_count_per_node=1)  # 2 mini-batches in flight at most
    # 1. while batchinfer's own instance starts (its processes exist, ray.init is under way)
    proc = _start(spec, out, env)
    _wait("Ray instance process", lambda: _instance_started(proc), proc)
    _send(proc, signum, to_group)
    stderr, summary = _stopped(proc, signum, out)
    if summary is None:  # before anything was written: the code and one line
        assert len(stderr.splitlines()) == 1 and ("interrupted" in stderr or "SIGTERM" in stderr), stderr
    # 2. mid-run, in the same folder: run() calls are under way, none has returned
    proc = _start(spec, out, env)
    _wait("run() started", lambda: list(faults.glob("*.tried")), proc)
    _send(proc, signum, to_group)
    _stderr_until(proc, "stopping: letting running mini-batches finish")
    (spec.parent / "go").touch()  # the running mini-batches may finish (and commit) now
    _, summary = _stopped(proc, signum, out)
    assert summary is not None and summary["items_succeeded"] < N
    # 3. the rerun completes every row once; what was committed is not run again, and job.log says so
    resumed = _rerun_completes_once(spec, out, env)
    done = resumed["mini_batches_resumed"]
    assert done == summary["items_succeeded"]
    last = [line for line in (out / "logs" / "job.log").read_text().splitlines() if "already in the journal" in line]
    assert f", {done} mini-batches (or parts) already in the journal" in last[-1]
    # the run_marker fixture checks that no process of these runs (Ray's included) is left


CALLER = """
import json, os, signal, sys
import psutil
import batchinfer
from batchinfer.errors import BatchInferError

def mine(signum, frame):
    pass

signal.signal(signal.SIGTERM, mine)
signal.signal(signal.SIGINT, mine)
for overrides in ({"inputs": {"path": "/nonexistent"}}, {}):
    try:
        batchinfer.run(sys.argv[1], output=sys.argv[2], overrides=overrides)
        outcome = "succeeded"
    except BatchInferError as exc:
        outcome = type(exc).__name__
    import ray
    children = [p.name() for p in psutil.Process().children(recursive=True)]
    print(json.dumps({"outcome": outcome, "ray_initialized": ray.is_initialized(), "children": children,
                      "sigterm_mine": signal.getsignal(signal.SIGTERM) is mine,
                      "sigint_mine": signal.getsignal(signal.SIGINT) is mine}))
"""


def test_the_python_api_leaves_the_callers_handlers_and_no_ray_instance_after_a_failure_or_a_run(own_ray_job):
    spec, out, _, env = own_ray_job()
    (spec.parent / "go").touch()
    proc = subprocess.run([sys.executable, "-c", CALLER, str(spec), str(out)], cwd=spec.parent,
                          env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    after = [json.loads(line) for line in proc.stdout.splitlines()]
    clean = {"ray_initialized": False, "children": [], "sigterm_mine": True, "sigint_mine": True}
    # the inputs are refused after the backend prepared (our own instance started): it stops all the same
    assert after == [{"outcome": "InputError", **clean}, {"outcome": "succeeded", **clean}]
    status = json.loads((out / ".batchinfer" / "status.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    # the instance has os.cpu_count() CPUs, 0.5 per actor: not the spec's worker_count (os.cpu_count() per node)
    assert status["workers"] == summary["workers"] == 2 * os.cpu_count()
