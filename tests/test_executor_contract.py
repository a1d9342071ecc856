"""The executor contract: one table of faults, run as real jobs on both backends, with the same assertions.

Each case is a script that misbehaves in one way (``run()`` raises, returns short or the wrong
type, hangs past ``run_invocation_timeout``, calls ``os._exit``, segfaults, is SIGKILLed, runs out
of memory; the same for ``init()``), or a process case of the hardening issue (a ``run()`` holding
the GIL when the coordinator is SIGKILLed, processes the script starts, far more workers than
work). Every case runs once on the local executor and once on the Ray executor (the session's
two-node test cluster) and checks the exit code, that each item's row is written exactly once or
the item is counted failed exactly once (``summary.json``, ``errors.jsonl``, ``failed_items.txt``),
and that nothing is left running: the ``run_marker`` leak guard for what the command started on
this machine, :meth:`RayCluster.wait_no_actors` for the cluster.

The hanging cases have a short timeout (5 s), but no assertion depends on timing: a hang is an
hour's sleep, and a coordinator is killed once the workers have written their marker files.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from background import alive, all_gone, holders_of, start, wait_for_files
from conftest import SCRIPTS, _processes_with

# the ray cases join tests/test_ray.py's xdist group: `pytest -n 2 --dist loadgroup` starts one test cluster
BACKENDS = ["local", pytest.param("ray", marks=pytest.mark.xdist_group("ray"))]
# run_invocation_timeout of the cases that hang (the others have 60 s, never reached). It also bounds a
# worker's start and init() (a replacement's too): 2 s was too short for a Ray actor's start on a loaded
# machine (load 39 on 2 cores: "init() did not finish within 2s"), so 5 s, as tests/test_faults.py says
TIMEOUT_S = 5
GONE_WITHIN_S = 10.0
FILES = 6  # f000.txt ... f005.txt; f002 is the bad one
BAD = "f002-bad.txt"


# ------------------------------------------------------------------ the backends


@dataclass
class Backend:
    """How a job runs on one backend: the spec keys and environment it needs, and its leak check."""

    name: str
    keys: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    cluster: Any = None

    def left_running(self) -> list[str]:
        """Ray actors still alive on the cluster after ``GONE_WITHIN_S`` (the local leak guard is ``run_marker``)."""
        return self.cluster.wait_no_actors(GONE_WITHIN_S) if self.cluster is not None else []

    def processes(self, marker: str) -> list[psutil.Process]:
        """The processes a running job has now: the command's own (by marker) and the cluster's actors."""
        found = _processes_with(marker)
        return found + (self.cluster.actor_processes() if self.cluster is not None else [])


@pytest.fixture
def backend(request) -> Backend:
    """The backend of this case; for ``ray`` the session's two-node cluster (started on first use)."""
    if request.param == "local":
        yield Backend("local")
        return
    if importlib.util.find_spec("ray") is None:  # not imported here: tests/raycluster.py sets its environment first
        pytest.skip("backend ray needs the ray package: pip install 'batchinfer[ray]'")
    cluster = request.getfixturevalue("ray_cluster")
    keys = {"backend": "ray", "ray_address": cluster.address, "num_cpus_per_process": 0.5,
            "shared_filesystem": True}
    yield Backend("ray", keys, dict(cluster.env), cluster)
    cluster.wait_no_actors(GONE_WITHIN_S)  # whatever a failed case left must not reach the next one


def data_with_a_bad_file(text_files) -> Path:
    data = text_files(FILES)
    (data / "f002.txt").rename(data / BAD)
    return data


def timeout_of(fault: str) -> float:
    """A short run_invocation_timeout where the case hangs, else one no healthy call comes near."""
    return TIMEOUT_S if fault == "hang" else 60


def assert_rows_once(out: Path, expected: list[str]) -> None:
    data = (out / "parallel_run_step.txt").read_bytes()
    rows = data.decode().splitlines()
    assert not data or data.endswith(b"\n"), "a partial last line"
    assert len(rows) == len(set(rows)), f"duplicate rows: {rows}"
    assert sorted(rows) == sorted(expected)


def worker_logs(out: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((out / "logs").glob("worker-*.log")))


# ------------------------------------------------------------------ run() misbehaves on one item


@dataclass(frozen=True)
class RunFault:
    """``contract_run.py --fault <fault>`` on f002-bad.txt (one item per mini-batch, run_max_try 2)."""

    fault: str
    kinds: list[str]  # errors.jsonl: one line per failed try of the bad item, in order
    words: str  # in every errors.jsonl message
    tries: int  # summary: every try of every mini-batch counted once
    once: bool = False  # it misbehaves on the first try only: the retry succeeds
    in_worker_log: str = ""  # what the worker's log shows (it reaches worker-N.log on both backends)
    listed: bool = True  # failed_items.txt names the item (not for a short return: which one is missing is unknown)

    @property
    def id(self) -> str:
        return self.fault + ("-once" if self.once else "")


RUN_FAULTS = [
    RunFault("raise", ["exception"] * 2, "run() raised ValueError: cannot score f002-bad.txt", tries=7),
    # a short return is a result, not a failed try: not retried, the missing item counted failed
    RunFault("short", ["short_return"], "returned 0 results for 1 items", tries=6, listed=False),
    RunFault("wrong_type", ["wrong_type"] * 2, "must return a list, tuple, numpy array or pandas DataFrame", tries=7),
    RunFault("hang", ["timeout"] * 2, f"run_invocation_timeout ({TIMEOUT_S}s)", tries=7,
             in_worker_log="most recent call first"),  # the hung worker's stack, dumped before it is killed
    RunFault("exit", ["worker_died"] * 2, "died", tries=7),
    RunFault("segfault", ["worker_died"] * 2, "died", tries=7, in_worker_log="Segmentation fault"),
    RunFault("sigkill", ["worker_died"], "died", tries=7, once=True),
    RunFault("memory", ["out_of_memory"] * 2, "MemoryError: cannot allocate the buffers for f002-bad.txt", tries=7),
]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("case", RUN_FAULTS, ids=lambda c: c.id)
def test_a_run_that_misbehaves_costs_its_item_at_most(job, text_files, tmp_path, backend, case):
    data = data_with_a_bad_file(text_files)
    arguments = ["--fault", case.fault]
    if case.once:
        (tmp_path / "once").mkdir()
        arguments += ["--once", str(tmp_path / "once")]
    run = job("contract_run.py", inputs={"path": str(data)}, arguments=arguments, mini_batch_size=1,
              process_count_per_node=2, run_max_try=2, run_invocation_timeout=timeout_of(case.fault),
              env=backend.env, **backend.keys)

    assert run.code == 0, run.stderr  # error_threshold -1: a failed item never fails the job
    assert "Traceback" not in run.stderr
    good = sorted(p.name for p in data.iterdir() if p.name != BAD)
    assert_rows_once(run.output_dir, good + [BAD] if case.once else good)
    summary = run.summary
    failed = 0 if case.once else 1
    assert (summary["items_succeeded"], summary["items_failed"], summary["items_total"]) == (FILES - failed, failed,
                                                                                            FILES)
    assert summary["tries"] == case.tries
    errors = run.errors()
    assert [e["kind"] for e in errors] == case.kinds
    assert [e["try"] for e in errors] == list(range(1, len(case.kinds) + 1))
    for error in errors:
        assert error["items"] == [str(data / BAD)] and case.words in error["message"], error
    failed_items = run.log("failed_items.txt").splitlines()
    assert failed_items == ([str(data / BAD)] if case.listed and not case.once else [])
    if case.in_worker_log:
        assert case.in_worker_log in worker_logs(run.output_dir)
    assert backend.left_running() == []


# ------------------------------------------------------------------ init() misbehaves


@dataclass(frozen=True)
class InitFault:
    """``contract_init.py --fault <fault>``: in every worker while the job is broken, or in the first worker only."""

    fault: str
    words: str  # in the job's one-line failure on stderr (and summary.json's reason)
    once: bool = False


INIT_FAULTS = [
    InitFault("raise", "init() raised RuntimeError: model file is missing: /nowhere/model.bin"),
    InitFault("raise", "", once=True),
    InitFault("hang", f"init() did not finish within {TIMEOUT_S}s (run_invocation_timeout)"),
    InitFault("exit", "died during init()"),
    InitFault("segfault", "died during init()"),
]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("case", INIT_FAULTS, ids=lambda c: c.fault + ("-once" if c.once else "-always"))
def test_an_init_that_misbehaves_fails_the_job_and_loses_nothing(job, text_files, tmp_path, backend, case):
    data = text_files(FILES)
    state = tmp_path / "state"
    state.mkdir()
    (state / "broken").touch()
    arguments = ["--fault", case.fault, "--when", "once" if case.once else "while_broken", "--state", str(state)]
    # one worker: the job gives up after 3 failed starts in a row (3 per worker), each a new actor on ray
    keys = dict(inputs={"path": str(data)}, arguments=arguments, mini_batch_size=1, process_count_per_node=1,
                run_max_try=2, run_invocation_timeout=timeout_of(case.fault), **backend.keys)
    expected = [f"f{i:03d}.txt" for i in range(FILES)]
    run = job("contract_init.py", env=backend.env, **keys)

    if case.once:  # the worker that failed is replaced and the job goes on
        assert run.code == 0, run.stderr
        assert_rows_once(run.output_dir, expected)
        assert run.summary["tries"] == FILES and run.summary["workers_started"] >= 2
        assert run.errors() == [] and run.log("failed_items.txt") == ""
        assert backend.left_running() == []
        return

    assert run.code == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert "failed to start" in run.stderr and case.words in run.stderr
    summary = run.summary
    assert summary["status"] == "failed" and case.words in summary["reason"]
    # nothing lost: no item was tried, so none is counted failed; the rerun does them all
    assert (summary["items_succeeded"], summary["items_failed"], summary["tries"]) == (0, 0, 0)
    assert run.errors() == [] and run.log("failed_items.txt") == ""
    assert run.rows() == []
    assert backend.left_running() == []

    (state / "broken").unlink()  # the user fixes the model file
    again = job("contract_init.py", env=backend.env, **keys)
    assert again.code == 0, again.stderr
    assert_rows_once(again.output_dir, expected)
    assert (again.summary["items_succeeded"], again.summary["items_failed"]) == (FILES, 0)
    assert backend.left_running() == []


# ------------------------------------------------------------------ process cases of the hardening issue


def write_spec(tmp_path: Path, backend: Backend, script: str, data: Path, **keys: Any) -> Path:
    spec = {"entry_script": script, "source_directory": str(SCRIPTS), "inputs": {"path": str(data)},
            "process_count_per_node": 2, "mini_batch_size": 1, "run_invocation_timeout": 60,
            **keys, **backend.keys}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("where, how", [("run", "regex"), ("init", "regex"), ("run", "sleep")])
def test_nothing_outlives_a_sigkilled_coordinator_even_a_worker_holding_the_gil(
        tmp_path, text_files, run_marker, backend, where, how):
    markers = tmp_path / "markers"
    markers.mkdir()
    spec = write_spec(tmp_path, backend, "holds_gil.py", text_files(2),
                      arguments=["--marker", str(markers), "--where", where, "--how", how])
    proc = start(spec, run_marker, "--output", str(tmp_path / "out"), env=backend.env)
    workers = [int(p.name) for p in wait_for_files(markers, 2, proc)]
    running = [p.pid for p in backend.processes(run_marker) if p.pid != proc.pid]  # helpers, workers, actors
    assert set(workers) <= set(running)
    proc.kill()  # SIGKILL to the coordinator only
    proc.wait()  # not communicate(): a survivor holding its pipes would make that wait forever
    proc.stdout.close()
    proc.stderr.close()
    left = all_gone(running)
    assert left == [], f"outlived their SIGKILLed coordinator: {[psutil.Process(p).cmdline() for p in left]}"
    assert backend.left_running() == []


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("where, end, code", [("init", "ok", 0), ("run", "ok", 0), ("run", "fail", 1)])
def test_what_the_script_starts_is_gone_after_the_job_and_never_holds_its_output(
        tmp_path, text_files, run_marker, backend, where, end, code):
    """spawns.py starts ``sleep`` as a child and as a double-forked daemon in each worker, then waits for a gate."""
    state, gate = tmp_path / "state", tmp_path / "gate"
    state.mkdir()
    spec = write_spec(tmp_path, backend, "spawns.py", text_files(4),
                      arguments=["--state", str(state), "--gate", str(gate), "--where", where, "--end", end])
    proc = start(spec, run_marker, "--output", str(tmp_path / "out"), "--json", env=backend.env)
    spawned = [int(pid) for f in wait_for_files(state, 2, proc) for pid in f.read_text().split()]
    assert len(spawned) == 4 and all(alive(pid) for pid in spawned)

    # while the job runs: nothing but the coordinator holds its stdout or stderr
    others = [p.pid for p in backend.processes(run_marker) if p.pid != proc.pid]
    pipes = {os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in (1, 2)}
    assert holders_of(pipes, others + spawned) == []

    gate.touch()
    try:
        try:  # both pipes to EOF: a process that still held them would make this wait forever
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("no EOF on the command's stdout/stderr: something still holds them")
        assert proc.returncode == code, stderr.decode()
        assert b"Traceback" not in stderr
        summary = json.loads(stdout)
        assert summary["status"] == ("succeeded" if end == "ok" else "failed")
        assert (summary["items_succeeded"], summary["items_failed"]) == ((4, 0) if end == "ok" else (0, 4))
        assert all_gone(spawned) == [], "processes started by the script outlived the job"
        assert backend.left_running() == []
    finally:  # a survivor of a failed case (an actor's child has no run_marker to find it by) goes here
        for pid in spawned:
            with contextlib.suppress(psutil.Error):
                survivor = psutil.Process(pid)
                if survivor.cmdline() == ["sleep", "1000"]:  # spawns.py's, not a process that took its pid since
                    survivor.kill()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_no_more_workers_start_than_there_is_work(job, text_files, backend):
    # a tenth of a CPU each: the Ray executor reserves all 8 up front (a placement group), and 8 x 0.1 fit on
    # one node of the test cluster; what this case checks is that no more than 3 of them start
    keys = {**backend.keys, "num_cpus_per_process": 0.1}
    run = job("echo_names.py", inputs={"path": str(text_files(3))}, mini_batch_size=1, process_count_per_node=8,
              env=backend.env, **keys)
    assert run.code == 0, run.stderr
    assert_rows_once(run.output_dir, [f"f{i:03d}.txt {i}" for i in range(3)])
    summary = run.summary
    assert summary["workers"] == 8
    assert 1 <= summary["workers_started"] <= 3
    assert len(list((run.output_dir / "logs").glob("worker-*.log"))) == summary["workers_started"]
    assert backend.left_running() == []
