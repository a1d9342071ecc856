"""Shared fixtures: write a job spec, run the real ``batchinfer`` command, read its output.

Every run is a real subprocess with real worker processes. Each test run is
tagged with an environment marker so that the leak guard can find any
process it left behind (workers inherit the environment).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "scripts"
MARKER = "BATCHINFER_TEST_RUN"
# the interpreter of the oldest supported versions (pandas 1.5.3, numpy 1.26, mltable): tests/install.sh
# makes it, .ci/run exports it; tests that compare with Microsoft's mltable run their reference there
OLD_PYTHON = Path(os.environ.get("BATCHINFER_OLD_PYTHON", REPO / ".venv-old" / "bin" / "python"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test of a tests/test_azure*.py file is an Azure-compatibility test (marker ``azure``):
    CI runs those a second time in .venv-old, except the ones marked ``tensorflow``."""
    for item in items:
        if item.path.name.startswith("test_azure"):
            item.add_marker(pytest.mark.azure)


@dataclass
class Run:
    """A finished ``batchinfer`` command."""

    code: int
    stdout: str
    stderr: str
    output_dir: Path | None

    @property
    def summary(self) -> dict[str, Any]:
        assert self.output_dir is not None
        return json.loads((self.output_dir / "summary.json").read_text())

    def rows(self, name: str = "parallel_run_step.txt") -> list[str]:
        assert self.output_dir is not None
        return (self.output_dir / name).read_text().splitlines()

    def log(self, name: str) -> str:
        assert self.output_dir is not None
        return (self.output_dir / "logs" / name).read_text()

    def errors(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log("errors.jsonl").splitlines()]


# Tests run as root here, and root reads and writes any file whatever its mode. Run as root
# without the two capabilities that bypass file permissions, a command meets chmod 000 as any
# user would (the files the tests make are root's own, so their owner bits decide).
OBEY_PERMISSIONS = (
    ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
)


def _processes_with(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(MARKER) == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture
def run_marker():
    """A marker put in the environment of every command this test runs; no process may outlive the test."""
    marker = uuid.uuid4().hex
    yield marker
    assert_none_left(marker)


def assert_none_left(marker: str) -> None:
    """No process tagged with ``marker`` is left (given 10 s to exit); any left is killed, and named."""
    deadline = time.monotonic() + 10
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    described = [_describe(p) for p in left]
    for proc in left:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    assert not left, f"processes left behind: {described}"


def _describe(proc: psutil.Process) -> str:
    """A leftover process for the failure message (it may have become a zombie meanwhile)."""
    try:
        return f"{proc.pid} {proc.cmdline()}"
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return f"{proc.pid} (exited meanwhile)"


@pytest.fixture
def batchinfer(run_marker, tmp_path):
    """Run the real command line: ``batchinfer(*args, cwd=..., env=...) -> Run``."""

    def invoke(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
               output: Path | None = None, timeout: float = 180, input: str | None = None,
               obey_permissions: bool = False) -> Run:
        environment = {**os.environ, MARKER: run_marker, **(env or {})}
        environment.pop("COLUMNS", None)
        proc = subprocess.run(
            [*(OBEY_PERMISSIONS if obey_permissions else []), sys.executable, "-m", "batchinfer", *args],
            cwd=cwd or tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr, output)

    return invoke


@pytest.fixture
def job(tmp_path, batchinfer):
    """Write a job spec around a script of tests/scripts and run it: ``job(script, **keys) -> Run``.

    ``extra_args`` go to the command line; the output folder is ``tmp_path/out`` unless given;
    ``env`` is added to the command's environment (``ray_cluster.env`` for a ``backend: ray`` job).
    """

    def make_and_run(script: str, *extra_args: str, spec_name: str = "job.yaml",
                     env: dict[str, str] | None = None, **keys: Any) -> Run:
        spec = {"entry_script": script, "source_directory": str(SCRIPTS), **keys}
        spec.setdefault("process_count_per_node", 2)
        spec.setdefault("run_invocation_timeout", 60)
        path = tmp_path / spec_name
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        output = tmp_path / "out"
        if "--output" not in extra_args:
            extra_args = ("--output", str(output), *extra_args)
        else:
            output = Path(extra_args[extra_args.index("--output") + 1])
        return batchinfer("run", str(path), *extra_args, output=output, env=env)

    return make_and_run


@pytest.fixture
def text_files(tmp_path):
    """``text_files(n, folder='data')``: n small files f000.txt... each holding its number."""

    def make(n: int, folder: str = "data") -> Path:
        root = tmp_path / folder
        root.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / f"f{i:03d}.txt").write_text(f"{i}\n")
        return root

    return make


def assert_one_line_error(run: Run, *fragments: str) -> None:
    """A user mistake: exit 2, one line on stderr naming the problem, no traceback, nothing on stdout."""
    assert run.code == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("batchinfer: error: "), run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---------------------------------------------------------------- object-store servers (tests/stores.py)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1, for the whole session (a fresh bucket per test: ``s3_server.new_bucket()``)."""
    from tests.stores import S3Server

    server = S3Server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """Azurite's Blob service on 127.0.0.1, for the whole session (``azurite.new_bucket()``: a fresh container).

    Skipped, with the reason, only where Node.js is missing: tests/install.sh installs Azurite itself.
    """
    from tests.stores import AzuriteServer, azurite_command

    command = azurite_command()
    if command is None:
        if shutil.which("node") is None:
            pytest.skip("Azurite needs Node.js, which this machine does not have")
        pytest.fail("azurite-blob is not installed: run tests/install.sh (it installs azurite@3.35 into .tools/)")
    server = AzuriteServer.start(command, tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_server():
    """gcp-storage-emulator on 127.0.0.1, for the whole session (``gcs_server.new_bucket()``); jobs run
    against it need ``gcs_server.env`` (see tests/stores.py)."""
    from tests.stores import GcsServer

    server = GcsServer.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def http_files(tmp_path_factory):
    """A plain HTTP server on 127.0.0.1 serving one folder (``http_files.root``; URL ``http_files.url``)."""
    from tests.stores import HttpServer

    server = HttpServer.start(tmp_path_factory.mktemp("http"))
    yield server
    server.stop()


@pytest.fixture(params=["s3", "azurite"])
def store(request):
    """Each real object store in turn: ``store.url(bucket, path)``, ``store.storage_options``, ``store.fs()``."""
    from tests.stores import Store

    server = request.getfixturevalue("s3_server" if request.param == "s3" else "azurite")
    return Store(request.param, server)


# ---------------------------------------------------------------- a Ray cluster of two nodes (tests/raycluster.py)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real two-node Ray cluster on 127.0.0.1 for the whole session (each node: 1 CPU, 1 logical GPU).

    Jobs reach it with ``ray_address: ray_cluster.address`` and ``env=ray_cluster.env``; give actors
    fractional CPUs (``num_cpus_per_process: 0.5``) so that two fit on a node. After a test,
    ``ray_cluster.wait_no_actors()`` must be empty: no job leaves an actor running.
    """
    from tests.raycluster import RayCluster

    cluster = RayCluster.start(nodes=2)
    yield cluster
    cluster.stop()


# ---------------------------------------------------------------- a real Chromium (tests/browser.py)


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium through playwright, one per session (per xdist worker): ``browser.open_report(path)``.

    Skipped, with the reason, only where no Chromium could be installed; with ``BATCHINFER_REQUIRE_BROWSER=1``
    (.ci/run sets it) a missing browser fails instead.
    """
    from tests.browser import browser_required, launch, why_not_available

    reason = why_not_available()
    if reason is not None:
        if browser_required():
            pytest.fail(f"the report's browser tests need a browser and CI requires them: {reason}")
        pytest.skip(reason)
    chromium = launch()
    yield chromium
    chromium.close()


# ---------------------------------------------------------------- the MNIST sample, run once


@pytest.fixture(scope="session")
def mnist_digits(tmp_path_factory) -> Run:
    """The README's first command, ``batchinfer run sample_data/mnist_job.yaml``, run once per session for
    tests/test_sample_mnist.py and the report's browser test of the sample's page; tests read its output
    folder (``.output_dir``) and must not change it.

    Under xdist the two tests may run on different workers (and ``xdist_group`` cannot be relied on to keep
    them together: with pytest 9.2 and pytest-xdist 3.8 ``--dist loadgroup`` does not group), so the first
    worker to ask runs the sample in the session's shared temporary folder, holding a lock, and writes its
    result next to it; the other waits for the lock and reads that result.
    """
    import fcntl

    pytest.importorskip("keras", reason="the sample needs the 'tensorflow' extra")
    shared = os.environ.get("PYTEST_XDIST_WORKER") is not None
    # under xdist, the parent of a worker's basetemp is the session's own folder, shared by its workers
    root = tmp_path_factory.getbasetemp().parent if shared else tmp_path_factory.mktemp("mnist")
    out, result = root / "mnist-digits", root / "mnist-digits.json"
    with open(root / "mnist-digits.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed
        if not result.exists():
            shutil.rmtree(out, ignore_errors=True)  # a run that did not finish (timed out) left a folder
            marker = uuid.uuid4().hex
            environment = {**os.environ, MARKER: marker}
            environment.pop("COLUMNS", None)
            proc = subprocess.run([sys.executable, "-m", "batchinfer", "run",
                                   str(REPO / "sample_data" / "mnist_job.yaml"), "--output", str(out)],
                                  cwd=root, env=environment, capture_output=True, text=True, timeout=600, check=False)
            assert_none_left(marker)
            result.write_text(json.dumps({"code": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}))
        ran = json.loads(result.read_text())
    return Run(ran["code"], ran["stdout"], ran["stderr"], out)
