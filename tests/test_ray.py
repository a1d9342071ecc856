"""``backend: ray`` on a real two-node Ray cluster (the ``ray_cluster`` session fixture) and on a Ray
instance of batchinfer's own: placement over nodes, faults (a killed actor, a hung run(), a lost
node, a killed coordinator), logs, and the sample's rows as on the local backend.

Every job here gives its actors half a CPU (each test node has one) and waits for markers the
script writes (tests/scripts/ray_faults.py), never for time to pass.
"""

from __future__ import annotations

import glob
import importlib.util
import ipaddress
import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest
import yaml
from conftest import MARKER, REPO, SCRIPTS, Run, _processes_with, assert_one_line_error

# not imported here: Ray reads its settings (the test cluster's token mode) when first imported
if importlib.util.find_spec("ray") is None:
    pytest.skip("backend ray needs the 'ray' extra", allow_module_level=True)
# one xdist worker runs them all: they share one cluster (.ci/run uses --dist loadgroup)
pytestmark = pytest.mark.xdist_group("ray")

ROWS = "parallel_run_step.txt"


@pytest.fixture
def ray_job(tmp_path, text_files, run_marker, ray_cluster):
    """``ray_job(script, n=..., own=False, **keys)``: a spec over n text files, backend ray on the
    test cluster (or, with ``own=True``, a Ray of batchinfer's own); ``.run()`` it or ``.start()`` it."""

    class Job:
        def __init__(self, script: str, n: int = 12, own: bool = False, **keys) -> None:
            self.faults = tmp_path / "faults"
            self.faults.mkdir(exist_ok=True)
            spec = {
                "entry_script": script, "source_directory": str(SCRIPTS),
                "inputs": {"type": "file", "path": str(text_files(n))}, "mini_batch_size": 1,
                "output_action": "append_row", "backend": "ray", "node_count": 1, "process_count_per_node": 2,
                "num_cpus_per_process": 0.5, "run_invocation_timeout": 60,
                "environment_variables": {"FAULTS_DIR": str(self.faults)},
            }
            if not own:
                spec["ray_address"] = ray_cluster.address
            env_vars = keys.pop("env", {})
            spec["environment_variables"].update(env_vars)
            spec.update(keys)
            spec = {key: value for key, value in spec.items() if value is not None}  # None: the key unset
            self.path = tmp_path / "job.yaml"
            self.path.write_text(yaml.safe_dump(spec, sort_keys=False))
            self.out = tmp_path / "out"
            self.env = {**os.environ, MARKER: run_marker}
            if own:  # no token of the cluster's: batchinfer makes its own
                self.env.update({"RAY_AUTH_TOKEN": "", "RAY_AUTH_MODE": ""})
            else:
                self.env.update(ray_cluster.env)
            self.env.pop("COLUMNS", None)

        def start(self, command: str = "run") -> subprocess.Popen:
            output = ["--output", str(self.out)] if command == "run" else []
            self.proc = subprocess.Popen([sys.executable, "-m", "batchinfer", command, str(self.path), *output],
                                    cwd=tmp_path, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            return self.proc

        def finish(self, proc: subprocess.Popen, timeout: float = 120) -> Run:
            stdout, stderr = proc.communicate(timeout=timeout)
            return Run(proc.returncode, stdout, stderr, self.out)

        def run(self, command: str = "run") -> Run:
            return self.finish(self.start(command))

        def hanging(self, within_s: float = 60) -> tuple[int, str]:
            """Wait for a first try that hangs (ray_faults.py): its actor's pid and node."""
            deadline = time.monotonic() + within_s
            while not (found := list(self.faults.glob("hanging.*"))):
                assert time.monotonic() < deadline, "no run() started hanging"
                time.sleep(0.05)
            return int(found[0].suffix[1:]), found[0].read_text()

    return Job


def once(run: Run, n: int) -> list[str]:
    """Every input file's row, exactly once."""
    rows = run.rows(ROWS)
    names = sorted(row.split()[0] for row in rows)
    assert names == [f"f{i:03d}.txt" for i in range(n)], rows
    return rows


def kinds(run: Run) -> list[str]:
    return [error["kind"] for error in run.errors()]


def node_folders(coordinator: int, within_s: float = 10.0) -> list[str]:
    """The node-local folders of the run whose coordinator had pid ``coordinator`` (every test node is
    on this machine) still there after ``within_s``: the job's last reads on the nodes may outlive the
    coordinator by the few seconds it waits for them on a busy machine."""
    pattern = os.path.join(tempfile.gettempdir(), f"batchinfer-ray-{coordinator}-*")
    deadline = time.monotonic() + within_s
    while (left := glob.glob(pattern)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_two_nodes_share_the_work_and_the_scripts_output_goes_to_the_worker_logs(ray_job, ray_cluster):
    job = ray_job("ray_node.py", node_count=2, process_count_per_node=1, shared_filesystem=True,
                  env={"WAIT_FOR_NODES": "2"})
    run = job.run()
    assert run.code == 0, run.stderr
    rows = once(run, 12)
    assert {row.split()[1] for row in rows} == {node.node_id for node in ray_cluster.nodes[:2]}
    assert run.stdout == ""
    logs = run.log("worker-0.log") + run.log("worker-1.log")
    assert logs.count("stdout line for 1 items") == 12 and logs.count("stderr line on ") == 12
    assert run.summary["workers_started"] == 2
    assert ray_cluster.wait_no_actors() == []
    assert node_folders(job.proc.pid) == []


# each test node has 1 CPU; the spec's own default (os.cpu_count() per node) is neither of these on every machine
@pytest.mark.parametrize(("cpus", "workers"), [(0.5, 4), (1, 2)])
def test_without_process_count_per_node_as_many_actors_as_each_node_holds(ray_job, ray_cluster, cpus, workers):
    run = ray_job("ray_node.py", node_count=2, process_count_per_node=None, num_cpus_per_process=cpus,
                  shared_filesystem=True, env={"WAIT_FOR_NODES": "2"}).run()
    assert run.code == 0, run.stderr
    once(run, 12)
    assert run.summary["workers"] == workers
    assert f": {workers} workers, output " in run.log("job.log")
    assert ray_cluster.wait_no_actors() == []


def test_inputs_at_a_url_need_no_shared_filesystem_the_scripts_folder_travels_with_the_job(
        ray_job, ray_cluster, s3_server, text_files, tmp_path):
    from tests.stores import Store, upload_tree

    store = Store("s3", s3_server)
    bucket = store.new_bucket()
    upload_tree(store.fs(), text_files(12, "up"), f"{bucket}/data")
    source = tmp_path / "src"  # a folder only this machine has: Ray ships it (runtime_env working_dir)
    source.mkdir()
    (source / "ray_node.py").write_text((SCRIPTS / "ray_node.py").read_text())
    run = ray_job("ray_node.py", node_count=2, process_count_per_node=1, source_directory=str(source),
                  inputs={"type": "file", "path": store.url(bucket, "data"), "storage_options": store.storage_options},
                  env={"WAIT_FOR_NODES": "2"}).run()
    assert run.code == 0, run.stderr
    rows = once(run, 12)
    assert len({row.split()[1] for row in rows}) == 2


@pytest.mark.parametrize(("keys", "hint"), [
    ({}, "shared_filesystem: true"),
    ({"models": {"m": str(SCRIPTS)}, "shared_filesystem": False}, "model"),
])
@pytest.mark.parametrize("command", ["run", "validate", "plan"])
def test_several_nodes_refuse_what_only_this_machine_sees(ray_job, keys, hint, command):
    # nothing listens at ray_address: the spec is refused before any cluster is reached
    run = ray_job("ray_node.py", node_count=2, process_count_per_node=1, ray_address="127.0.0.1:1", **keys).run(command)
    assert_one_line_error(run, "other nodes", hint)


def test_nothing_listening_at_ray_address_is_one_line_naming_it(ray_job):
    run = ray_job("ray_node.py", ray_address="127.0.0.1:1").run()
    assert_one_line_error(run, "cannot connect to the Ray cluster at 127.0.0.1:1")


def test_too_few_nodes_is_one_line_naming_how_many_the_cluster_has(ray_job):
    run = ray_job("ray_node.py", node_count=3, process_count_per_node=1, shared_filesystem=True).run()
    assert_one_line_error(run, "node_count is 3 but the Ray cluster has 2 nodes")


def test_gpus_are_reserved_per_actor_and_visible_to_the_script(ray_job, ray_cluster):
    run = ray_job("ray_node.py", node_count=2, process_count_per_node=1, shared_filesystem=True,
                  num_gpus_per_process=1, env={"WAIT_FOR_NODES": "2"}).run()
    assert run.code == 0, run.stderr
    rows = once(run, 12)
    assert {row.split()[2] for row in rows} == {"0"}  # each node has one logical GPU: its id 0
    assert len({row.split()[1] for row in rows}) == 2


@pytest.mark.parametrize("fault", ["actor killed", "run() hangs"])
def test_a_killed_actor_or_a_hung_run_loses_no_row(ray_job, ray_cluster, fault):
    hangs = fault == "run() hangs"
    job = ray_job("ray_faults.py", env={"HANG_ON": "f003.txt"}, run_invocation_timeout=6 if hangs else 60)
    proc = job.start()
    pid, _ = job.hanging()
    if not hangs:
        assert pid in {p.pid for p in ray_cluster.actor_processes()}
        os.kill(pid, signal.SIGKILL)
    run = job.finish(proc)
    assert run.code == 0, run.stderr
    once(run, 12)
    assert kinds(run) == ["timeout" if hangs else "worker_died"]
    if hangs:  # faulthandler wrote the stack at the deadline, the coordinator fetched it
        worker = run.errors()[0]["worker"]
        assert "in _hang" in run.log(f"worker-{worker}.log")
    assert ray_cluster.wait_no_actors() == []
    assert node_folders(proc.pid) == []  # the killed actor's too (the task that read its log)


def test_what_an_actor_that_never_replied_wrote_reaches_its_log(ray_job, ray_cluster):
    job = ray_job("ray_faults.py", n=2, process_count_per_node=1, env={"HANG_IN_INIT": "1"})
    proc = job.start()
    job.hanging()  # init() printed its line, then hangs: the actor never replies
    proc.send_signal(signal.SIGTERM)
    stopped = job.finish(proc)
    assert stopped.code == 143, stopped.stderr
    assert sorted(p.name for p in (job.out / "logs").glob("worker-*.log")) == ["worker-0.log"]
    assert "init() on node " in stopped.log("worker-0.log")  # read on its node when it was killed
    assert ray_cluster.wait_no_actors() == []


@pytest.mark.parametrize(("how", "own"), [(signal.SIGKILL, False), (signal.SIGKILL, True), (signal.SIGTERM, False)])
def test_the_coordinator_stopped_leaves_nothing_running_and_a_rerun_completes(ray_job, ray_cluster, run_marker,
                                                                           how, own):
    job = ray_job("ray_faults.py", env={"HANG_ON": "f003.txt"}, own=own)
    proc = job.start()
    job.hanging()
    proc.send_signal(how)
    stopped = job.finish(proc)
    if how == signal.SIGTERM:
        assert stopped.code == 143, stopped.stderr
    assert ray_cluster.wait_no_actors(10) == []
    if own:  # batchinfer's own Ray: not one of its processes is left (resuming is the other cases')
        deadline = time.monotonic() + 10
        while (left := _processes_with(run_marker)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert left == []
        return
    rerun = job.run()
    assert rerun.code == 0, rerun.stderr
    once(rerun, 12)


def test_a_lost_node_is_survived_exactly_once(ray_job, ray_cluster):
    node = ray_cluster.add_node()
    try:
        job = ray_job("ray_faults.py", node_count=3, process_count_per_node=1, shared_filesystem=True,
                      run_invocation_timeout=10, env={"HANG_ON_NODE": node.node_id})
        proc = job.start()
        _, where = job.hanging()
        assert where == node.node_id
        ray_cluster.remove_node(node)
        run = job.finish(proc)
    finally:
        if node in ray_cluster.nodes:
            ray_cluster.remove_node(node)
    assert run.code == 0, run.stderr
    once(run, 12)
    assert set(kinds(run)) <= {"worker_died"} and "worker_died" in kinds(run)
    assert ray_cluster.wait_no_actors() == []


def test_own_ray_instance_listens_on_loopback_only_and_goes_away(ray_job, run_marker, tmp_path):
    go = tmp_path / "go"
    job = ray_job("ray_faults.py", own=True, env={"GO_FILE": str(go)})
    proc = job.start()
    deadline = time.monotonic() + 60
    while not list(job.faults.glob("*.tried")):  # an actor runs: the instance is complete
        assert time.monotonic() < deadline and proc.poll() is None, "no actor started"
        time.sleep(0.05)
    listening = set()
    for found in _processes_with(run_marker):
        try:
            listening |= {c.laddr.ip for c in found.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            pass
    go.touch()
    run = job.finish(proc)
    assert run.code == 0, run.stderr
    once(run, 12)
    assert listening and all(_loopback(ip) for ip in listening), listening
    assert run.stdout == ""
    # the run_marker fixture then checks that no process of this run (Ray's included) is left


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback  # ::ffff:127.0.0.1 too


@pytest.mark.tensorflow
def test_the_mnist_sample_gives_the_same_rows_on_ray_as_locally(batchinfer, tmp_path):
    pytest.importorskip("keras", reason="the sample needs the 'tensorflow' extra")
    spec = str(REPO / "sample_data" / "mnist_job.yaml")
    rows = {}
    for backend in ("local", "ray"):
        out = tmp_path / backend
        run = batchinfer("run", spec, "--output", str(out), "--set", f"backend={backend}", output=out,
                         env={"RAY_AUTH_TOKEN": "", "RAY_AUTH_MODE": ""}, timeout=600)
        assert run.code == 0, run.stderr
        rows[backend] = sorted(run.rows(ROWS))
    assert len(rows["ray"]) == 1000 and rows["ray"] == rows["local"]
