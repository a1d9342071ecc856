"""``backend: ray``'s session: addresses that are not a Ray GCS are one line within seconds, Ray
Client addresses are refused, the caller's environment is left as it was, what other nodes cannot
see is refused (or warned of), and the script's folder is shipped without the run's own folders.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import yaml
from conftest import MARKER, REPO, SCRIPTS, Run, assert_one_line_error

if importlib.util.find_spec("ray") is None:
    pytest.skip("backend ray needs the 'ray' extra", allow_module_level=True)
pytestmark = pytest.mark.xdist_group("ray")

RAY_SETTINGS = ("RAY_USAGE_STATS_ENABLED", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE",
                "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@pytest.fixture
def spec_file(tmp_path, text_files):
    """``spec_file(**keys)``: a backend ray spec over 3 text files (echo_names.py), written to job.yaml."""

    def write(**keys) -> str:
        spec = {"entry_script": "echo_names.py", "source_directory": str(SCRIPTS),
                "inputs": {"type": "file", "path": str(text_files(3))}, "backend": "ray", "node_count": 1,
                "process_count_per_node": 1, "num_cpus_per_process": 0.5, **keys}
        path = tmp_path / "job.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return str(path)

    return write


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(("listener", "says"), [
    ("http", "not as a Ray GCS (an HTTP server"),
    ("closed", "nothing answers there"),
])
def test_an_address_that_is_not_a_ray_gcs_is_one_line_naming_it(listener, says, http_files, spec_file,
                                                                  batchinfer, tmp_path):
    # an HTTP server stands for the dashboard's port too: Ray would retry there for minutes
    address = http_files.url.removeprefix("http://") if listener == "http" else f"127.0.0.1:{_closed_port()}"
    run = batchinfer("run", spec_file(ray_address=address), "--output", str(tmp_path / "out"),
                     env={"RAY_USAGE_STATS_ENABLED": "0"}, timeout=60)
    assert_one_line_error(run, f"cannot connect to the Ray cluster at {address}", says)
    assert "GCS at address" not in run.stderr  # none of Ray's C++ lines


@pytest.mark.parametrize("command", ["run", "validate", "plan"])
def test_a_ray_client_address_is_refused_in_one_line(command, spec_file, batchinfer):
    run = batchinfer(command, spec_file(ray_address="ray://127.0.0.1:10001"))
    assert_one_line_error(run, "Ray Client addresses are not supported yet", "ray_address: auto or host:6379")


@pytest.mark.parametrize("location", ["url", "path"])
@pytest.mark.parametrize("what", ["models", "side_inputs"])
def test_on_several_nodes_models_and_side_inputs_say_why_they_are_refused(what, location, http_files,
                                                                         spec_file, batchinfer):
    (http_files.root / "clf.bin").write_text("weights")
    path = f"{http_files.url}/clf.bin" if location == "url" else str(http_files.root / "clf.bin")
    run = batchinfer("validate", spec_file(node_count=2, inputs={"path": f"{http_files.url}/clf.bin"},
                                           **{what: {"m": path}}))
    if location == "url":
        assert_one_line_error(run, "cache of this machine only", "BATCHINFER_CACHE_DIR", "shared_filesystem: true")
    else:
        assert_one_line_error(run, "read from this machine", "shared_filesystem: true")


def test_on_several_nodes_without_a_shared_filesystem_files_written_by_the_script_are_warned_of(
        http_files, spec_file, batchinfer):
    (http_files.root / "a.txt").write_text("a")
    run = batchinfer("validate", spec_file(node_count=2, inputs={"path": f"{http_files.url}/a.txt"}))
    assert run.code == 0, run.stderr
    warned = [line for line in run.stderr.splitlines() if "output_dir()" in line]
    assert len(warned) == 1 and "stay on the node that wrote them" in warned[0], run.stderr
    shared = batchinfer("validate", spec_file(node_count=2, shared_filesystem=True))
    assert shared.code == 0 and "output_dir()" not in shared.stderr, shared.stderr


def test_the_python_api_leaves_the_callers_environment_as_it_was(spec_file, tmp_path, run_marker):
    # a Ray of batchinfer's own (token auth with a random token); one setting the caller chose
    code = f"""
import json, os, sys
import batchinfer
names = {RAY_SETTINGS!r}
before = {{n: os.environ.get(n) for n in names}}
batchinfer.run({spec_file()!r}, output={str(tmp_path / "out")!r})
import ray
from ray._private import ray_constants
after = {{n: os.environ.get(n) for n in names}}
print(json.dumps({{"before": before, "after": after, "initialized": ray.is_initialized(),
                  "clusters": ray_constants.ENABLE_RAY_CLUSTER}}))
"""
    env = {key: value for key, value in os.environ.items() if key not in RAY_SETTINGS}
    env.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "HOME": str(tmp_path / "home"),
                "PYTHONPATH": str(REPO), MARKER: run_marker})
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["after"] == seen["before"] == {**dict.fromkeys(RAY_SETTINGS), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
    assert seen["initialized"] is False and seen["clusters"] is True
    assert Run(0, "", "", tmp_path / "out").summary["items_succeeded"] == 3
    assert not (tmp_path / "home" / ".ray").exists()  # no token file written under the home folder


def test_the_folder_shipped_to_other_nodes_leaves_out_the_runs_own_folders(tmp_path, http_files, ray_cluster,
                                                                         batchinfer):
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(SCRIPTS / "lists_cwd.py", source)
    (source / "helper.txt").write_text("shipped")
    # an earlier run's output (its state folder says so), Git, caches, a virtual environment: not shipped
    for folder in ("old-out/.batchinfer", ".git", "__pycache__", ".venv-old", "data"):
        (source / folder).mkdir(parents=True)
        (source / folder / "big.bin").write_bytes(b"x" * 1024)
    for i in range(4):
        (http_files.root / f"s{i}.txt").write_text(f"{i}")
    spec = {"entry_script": "lists_cwd.py", "source_directory": str(source),
            "inputs": {"type": "file", "path": [f"{http_files.url}/s{i}.txt" for i in range(4)]},
            "mini_batch_size": 1, "backend": "ray", "ray_address": ray_cluster.address, "node_count": 2,
            "process_count_per_node": 1, "num_cpus_per_process": 0.5}
    path = source / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    run = batchinfer("run", str(path), "--output", str(source / "out"), cwd=source, env=ray_cluster.env,
                     output=source / "out")
    assert run.code == 0, run.stderr
    listings = {row.split()[1] for row in run.rows()}
    assert listings == {"data,helper.txt,job.yaml,lists_cwd.py"}, listings
    assert ray_cluster.wait_no_actors() == []


def test_a_script_folder_ray_cannot_ship_has_its_own_message(tmp_path, http_files, ray_cluster, batchinfer):
    # a file Ray cannot read stands for any packing failure (over 500 MiB is another): not "cannot connect"
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(SCRIPTS / "lists_cwd.py", source)
    (source / "private.bin").write_text("x")
    (source / "private.bin").chmod(0)
    (http_files.root / "p.txt").write_text("p")
    spec = {"entry_script": "lists_cwd.py", "source_directory": str(source),
            "inputs": {"type": "file", "path": [f"{http_files.url}/p.txt"]}, "backend": "ray",
            "ray_address": ray_cluster.address, "node_count": 2, "process_count_per_node": 1,
            "num_cpus_per_process": 0.5}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    run = batchinfer("run", str(path), "--output", str(tmp_path / "out"), env=ray_cluster.env, obey_permissions=True)
    lines = [line for line in run.stderr.splitlines() if "output_dir()" not in line]  # the warning of item 7
    assert_one_line_error(Run(run.code, run.stdout, "\n".join(lines), None),
                          f"Ray could not ship the script's folder {source}", "Permission denied", "500 MiB")
