"""The executor registry and the worker runtime: a backend is imported only when a job uses it, a
missing Ray is one line before anything runs, node_id() names the node, and the script's life
(ScriptRuntime) works without any pipe or actor around it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from batchinfer import _runtime
from batchinfer.protocol import OUT_OF_MEMORY, WORKER_DIED, InitFailed, MiniBatch, Ready, WorkerConfig
from batchinfer.worker import ScriptRuntime
from conftest import MARKER, OLD_PYTHON, REPO, SCRIPTS, Run, assert_one_line_error


@pytest.mark.parametrize("command", ["run", "validate", "plan"])
def test_missing_ray_is_one_line_with_the_install_hint(tmp_path, text_files, run_marker, command):
    """.venv-old has no Ray: backend ray says which package to install, exit 2, before anything runs."""
    if not OLD_PYTHON.exists():
        pytest.skip(f"{OLD_PYTHON} (the oldest-versions environment, without Ray) is not installed")
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"entry_script": "echo_names.py", "source_directory": str(SCRIPTS),
                                    "inputs": str(text_files(2)), "backend": "ray"}))
    args = [str(spec), "--output", str(tmp_path / "out")] if command == "run" else [str(spec)]
    (tmp_path / "ray").mkdir()  # as Ray's session folder /tmp/ray, when run in /tmp: not the package
    proc = subprocess.run([str(OLD_PYTHON), "-m", "batchinfer", command, *args], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO), MARKER: run_marker},
                          capture_output=True, text=True, timeout=120)
    assert_one_line_error(Run(proc.returncode, proc.stdout, proc.stderr, None),
                          "backend 'ray' needs the ray package", "pip install 'batchinfer[ray]'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["run", "validate", "plan"])
def test_a_ray_that_fails_to_import_is_one_line_with_the_error_and_the_install_hint(
        tmp_path, text_files, run_marker, command):
    """Ray installed but broken (a library of its own missing): the error's first line, exit 2, no traceback."""
    fake = tmp_path / "site" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        'raise ImportError("libray_core.so: cannot open shared object file: No such file or directory\\n'
        'second line")\n')
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"entry_script": "echo_names.py", "source_directory": str(SCRIPTS),
                                    "inputs": str(text_files(2)), "backend": "ray"}))
    args = [str(spec), "--output", str(tmp_path / "out")] if command == "run" else [str(spec)]
    proc = subprocess.run([sys.executable, "-m", "batchinfer", command, *args], cwd=tmp_path, check=False,
                          env={**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}:{REPO}", MARKER: run_marker},
                          capture_output=True, text=True, timeout=120)
    assert_one_line_error(Run(proc.returncode, proc.stdout, proc.stderr, None),
                          "backend 'ray': import ray failed: ImportError: libray_core.so: cannot open shared object",
                          "pip install 'batchinfer[ray]'")
    assert "second line" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_local_backend_never_imports_ray(tmp_path, text_files, run_marker):
    """Ray is installed here, and neither the coordinator nor a worker of a local job imports it."""
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"entry_script": "ray_imported.py", "source_directory": str(SCRIPTS),
                                    "inputs": str(text_files(4)), "mini_batch_size": 1, "process_count_per_node": 2}))
    code = ("import sys, batchinfer; s = batchinfer.run(sys.argv[1], output=sys.argv[2]); "
            "print(s.exit_code, 'ray' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(spec), str(tmp_path / "out")],
                          env={**os.environ, MARKER: run_marker}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "False"]  # the coordinator
    rows = (tmp_path / "out" / "parallel_run_step.txt").read_text().splitlines()
    assert sorted(rows) == [f"f{i:03d}.txt False" for i in range(4)]  # every worker


@pytest.mark.parametrize(("node_count", "per_node", "nodes"), [(1, 2, [0]), (2, 1, [0, 1]), (2, 2, [0, 1])])
def test_node_id_is_the_host_and_the_local_node(job, text_files, node_count, per_node, nodes):
    run = job("node_ids.py", inputs={"path": str(text_files(8))}, node_count=node_count,
              process_count_per_node=per_node, mini_batch_size=1)
    assert run.code == 0, run.stderr
    # workers start on demand, one per mini-batch while none is idle: each node's first worker gets work
    assert {row.split()[1] for row in run.rows()} == {f"{socket.gethostname()}-{n}" for n in nodes}


@pytest.fixture
def runtime_of(tmp_path, monkeypatch):
    """``runtime_of(script) -> (ScriptRuntime, life file)``: the runtime in this process, whose
    working folder, environment, sys.path, sys.argv and helpers are put back after the test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(_runtime, "_context", None)
    made = []

    def make(script: str) -> tuple[ScriptRuntime, Path]:
        life = tmp_path / "life.txt"
        config = WorkerConfig(
            entry_path=str(SCRIPTS / script), source_directory=str(SCRIPTS), run_takes_context=False,
            arguments=("--out", "{batchinfer.output_dir}"), environment_variables={"LIFE_FILE": str(life)},
            models={}, side_inputs={}, output_dir=str(tmp_path / "out"), log_dir=str(tmp_path / "logs"),
            logging_level="INFO", row_format="txt", row_header=False, storage_options=({},),
            scratch_dir=str(tmp_path / "scratch"),
        )
        runtime = ScriptRuntime(config, 3, "node-a")
        made.append((runtime, Path(script).stem))
        return runtime, life

    yield make
    for runtime, module in made:
        runtime.close()
        sys.modules.pop(module, None)


def _files(tmp_path: Path, *names: str) -> tuple[str, ...]:
    for name in names:
        (tmp_path / name).write_text(name)
    return tuple(str(tmp_path / name) for name in names)


@pytest.mark.parametrize(
    ("last", "kind", "ends"),
    [("c.txt", None, False), ("oom.txt", OUT_OF_MEMORY, True), ("exit.txt", WORKER_DIED, True)],
)
def test_script_runtime_runs_a_script_without_any_wrapper(tmp_path, runtime_of, last, kind, ends):
    runtime, life = runtime_of("runtime_life.py")
    ready = runtime.start()
    assert isinstance(ready, Ready) and ready.worker == 3 and ready.pid == os.getpid()
    scratch = runtime.scratch
    queue = runtime.queue()
    queue.add([MiniBatch(0, 0, files=_files(tmp_path, "a.txt", "b.txt"), known_items=2),
               MiniBatch(1, 0, files=_files(tmp_path, last), known_items=1)])
    queue.close()
    outcomes = []
    while (got := queue.next()) is not None:
        outcomes.append(runtime.run(*got))
    runtime.close()
    assert [o.ok for o in outcomes] == [True, kind is None]
    assert outcomes[0].rows == b"a.txt\nb.txt\n" and outcomes[0].succeeded == 2 and outcomes[0].worker == 3
    assert outcomes[1].kind == kind and ScriptRuntime.ends_worker(outcomes[1]) is ends
    lines = life.read_text().splitlines()
    assert lines[0] == f"init {scratch} --out {tmp_path / 'out'} node-a"  # private folder, arguments, node
    # a try that ends the worker: nothing more runs there, and shutdown() is not called
    assert lines[1:] == ["run a.txt b.txt", *([] if ends else ["run c.txt", "shutdown"])]
    assert not os.path.exists(scratch)


def test_script_runtime_start_never_raises(runtime_of):
    runtime, _ = runtime_of("init_fails.py")
    failed = runtime.start()
    assert isinstance(failed, InitFailed)
    assert failed.message == "init() raised RuntimeError: model file is missing: /nowhere/model.bin"
    assert "Traceback" in failed.traceback
