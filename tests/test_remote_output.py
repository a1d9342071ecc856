"""The output folder on an object store (moto's S3 server, Azurite; file:// too): every row exactly
once, with no local state at all, a SIGKILLed coordinator resumed from another directory."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchinfer.segments import JOURNAL, SEGMENTS, decode_segment, encode_segment, segment_name
from tests.conftest import MARKER, SCRIPTS, assert_one_line_error


class Folder:
    """The output folder on a store (or file://), read back through fsspec as another machine would."""

    def __init__(self, url: str, fs: Any, root: str, storage_options: dict[str, Any],
                 env: dict[str, str] | None = None) -> None:
        self.url, self.fs, self.root, self.storage_options = url, fs, root, storage_options
        self.env = env or {}  # the SDK's environment variables: credentials for `batchinfer status URL`

    def read(self, rel: str) -> bytes:
        self.fs.invalidate_cache()
        return self.fs.cat_file(f"{self.root}/{rel}")

    def exists(self, rel: str) -> bool:
        self.fs.invalidate_cache()
        return self.fs.exists(f"{self.root}/{rel}")

    def rows(self, name: str = "parallel_run_step.txt") -> list[str]:
        return self.read(name).decode().splitlines()

    def summary(self) -> dict[str, Any]:
        return json.loads(self.read("summary.json"))

    def segments(self) -> list[str]:
        self.fs.invalidate_cache()
        try:
            return sorted(p.rsplit("/", 1)[-1] for p in self.fs.find(f"{self.root}/{SEGMENTS}"))
        except FileNotFoundError:
            return []

    def committed(self) -> int:
        """Mini-batches the store holds as committed: journal lines in its segments (and base)."""
        lines = self.read(JOURNAL).count(b"\n") if self.exists(".batchinfer/base.json") else 0
        for name in self.segments():
            try:
                _, pieces = decode_segment(self.read(f"{SEGMENTS}/{name}"))
            except FileNotFoundError:
                continue
            lines += sum(data.count(b"\n") for file, _, data in pieces if file == JOURNAL)
        return lines

    def put(self, rel: str, data: bytes) -> None:
        self.fs.pipe_file(f"{self.root}/{rel}", data)


@pytest.fixture
def folder(store):
    """A fresh folder in a fresh bucket of each store."""
    bucket = store.new_bucket()
    return Folder(store.url(bucket, "out"), store.fs(), f"{bucket}/out", store.storage_options, store.env)


@pytest.fixture
def file_folder(tmp_path):
    """A file:// folder: a remote folder that is a mount of another machine's disk."""
    import fsspec

    root = tmp_path / "mount" / "out"
    return Folder(f"file://{root}", fsspec.filesystem("file"), str(root), {})


def write_spec(tmp_path: Path, folder: Folder, script: str, data: Path, name: str = "remote", **keys: Any) -> Path:
    spec = {"name": name, "entry_script": script, "source_directory": str(SCRIPTS),
            "inputs": [{"path": str(data)}], "mini_batch_size": 1, "process_count_per_node": 2,
            "run_invocation_timeout": 60, "output": {"path": folder.url, "storage_options": folder.storage_options},
            **keys}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def files(root: Path, names: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (root / name).write_text(f"{i}\n")
    return root


def run_in(batchinfer, tmp_path: Path, where: str, *args: str, env: dict[str, str] | None = None):
    """Run from the working directory ``where`` with its own TMPDIR (so a run's staging folder is seen)."""
    cwd = tmp_path / where
    (cwd / "tmp").mkdir(parents=True, exist_ok=True)
    return batchinfer(*args, cwd=cwd, env={"TMPDIR": str(cwd / "tmp"), **(env or {})})


def no_staging_left(tmp_path: Path, where: str) -> bool:
    return not any((tmp_path / where / "tmp").iterdir())


def test_rows_summary_and_logs_end_up_in_the_store_and_nothing_stays_local(tmp_path, folder, batchinfer):
    data = files(tmp_path / "data", [f"f{i:03d}.txt" for i in range(40)])
    spec = write_spec(tmp_path, folder, "echo_names.py", data)
    run = run_in(batchinfer, tmp_path, "a", "run", str(spec))
    assert run.code == 0, run.stderr
    assert sorted(folder.rows()) == sorted(f"f{i:03d}.txt {i}" for i in range(40))
    summary = folder.summary()
    assert summary["items_succeeded"] == 40 and summary["status"] == "succeeded"
    assert summary["output_dir"] == folder.url and summary["output_file"] == folder.url + "/parallel_run_step.txt"
    assert summary["log_dir"] == folder.url + "/logs"
    assert b"succeeded" in folder.read("logs/job.log") and folder.exists("logs/worker-0.log")
    assert folder.segments() == [] and not folder.exists(".batchinfer/lease.json")
    assert no_staging_left(tmp_path, "a")
    assert folder.url + "/parallel_run_step.txt" in run.stderr and "batchinfer-out-" not in run.stderr + run.stdout
    secrets = [v for v in _strings(folder.storage_options) if len(v) > 8 and "://" not in v]
    assert secrets
    for path in folder.fs.find(folder.root):  # no credential in any object batchinfer wrote
        content = folder.fs.cat_file(path)
        assert not any(secret.encode() in content for secret in secrets), path


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, str):
        parts = [p.partition("=")[2] for p in value.split(";") if "Key=" in p]  # a connection string's key
        return parts or [value]
    return []


def test_file_url_is_a_remote_folder_too(tmp_path, file_folder, batchinfer):
    data = files(tmp_path / "data", [f"f{i:03d}.txt" for i in range(12)])
    spec = write_spec(tmp_path, file_folder, "echo_names.py", data)
    run = run_in(batchinfer, tmp_path, "a", "run", str(spec))
    assert run.code == 0, run.stderr
    assert sorted(file_folder.rows()) == sorted(f"f{i:03d}.txt {i}" for i in range(12))
    assert file_folder.summary()["output_dir"] == file_folder.url and no_staging_left(tmp_path, "a")


def _start(spec: Path, cwd: Path, run_marker: str) -> subprocess.Popen:
    (cwd / "tmp").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, MARKER: run_marker, "TMPDIR": str(cwd / "tmp")}
    return subprocess.Popen([sys.executable, "-m", "batchinfer", "run", str(spec), "--quiet"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_committed(folder: Folder, k: int, proc: subprocess.Popen) -> int:
    deadline = time.monotonic() + 300  # a safety net only: the machine may be busy
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if (committed := folder.committed()) >= k:
            return committed
        time.sleep(0.1)
    raise AssertionError(f"the store never held {k} committed mini-batches")


@pytest.mark.parametrize("k", [1, 10])
def test_coordinator_killed_then_rerun_from_another_directory_gives_every_row_once(
        tmp_path, folder, batchinfer, run_marker, k):
    # the f* files are scored at once; the h* ones wait for the gate, which opens only after the kill
    names = [f"f{i:03d}.txt" for i in range(10)] + [f"h{i:03d}.txt" for i in range(10)]
    data = files(tmp_path / "data", names)
    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, folder, "gated_echo.py", data, arguments=["--gate", str(gate), "--held", "h"])
    proc = _start(spec, tmp_path / "first", run_marker)
    committed = _wait_for_committed(folder, k, proc)
    proc.kill()  # SIGKILL to the coordinator only: no last segment, no summary, no lease released
    proc.communicate()
    assert folder.exists(".batchinfer/lease.json") and not folder.exists("summary.json")
    gate.touch()
    shutil.rmtree(tmp_path / "first")  # a fresh machine: nothing of the first run is left locally
    again = run_in(batchinfer, tmp_path, "second", "run", str(spec))
    assert again.code == 0, again.stderr
    rows = folder.rows()
    assert sorted(rows) == sorted(f"{name} {i}" for i, name in enumerate(names)), rows
    summary = folder.summary()
    assert summary["items_succeeded"] == 20 and summary["items_total"] == 20
    assert summary["mini_batches_succeeded"] == 20 and summary["mini_batches_total"] == 20
    assert summary["mini_batches_resumed"] >= committed
    assert folder.segments() == [] and no_staging_left(tmp_path, "second")


def _finished_with_failures(tmp_path: Path, folder: Folder, batchinfer) -> tuple[Path, Path]:
    data = files(tmp_path / "data", ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt"])
    for bad in ("b.txt", "e.txt"):
        (data / bad).write_text("bad\n")
    spec = write_spec(tmp_path, folder, "fail_on_bad_content.py", data)
    first = run_in(batchinfer, tmp_path, "a", "run", str(spec))
    assert first.code == 0, first.stderr
    assert sorted(folder.rows()) == ["a.txt 0", "c.txt 2", "d.txt 3"]
    assert folder.summary()["items_failed"] == 2
    assert folder.summary()["failed_items_file"] == folder.url + "/logs/failed_items.txt"
    for fixed in ("b.txt", "e.txt"):  # the user fixes the files
        (data / fixed).write_text("fixed\n")
    return spec, data


ZOMBIES = {
    # a run whose lease was taken over goes on writing: its segment names another predecessor
    "another predecessor": lambda seq, sent: ({"seq": seq + 1, "run": "zombie", "prev": [seq, "other"]}, sent),
    # or starts where the record no longer ends
    "a wrong offset": lambda seq, sent: ({"seq": seq + 1, "run": "zombie", "prev": None}, sent - 3),
    # or follows a gap
    "after a gap": lambda seq, sent: ({"seq": seq + 2, "run": "zombie", "prev": None}, sent),
}


@pytest.mark.parametrize("zombie", list(ZOMBIES))
def test_a_segment_that_does_not_continue_the_record_is_ignored_and_removed(tmp_path, folder, batchinfer, zombie):
    spec, data = _finished_with_failures(tmp_path, folder, batchinfer)
    base = json.loads(folder.read(".batchinfer/base.json"))
    header, offset = ZOMBIES[zombie](base["seq"], base["files"]["parallel_run_step.txt"])
    if header["prev"] is None:
        header["prev"] = [base["seq"], base["run"]]
    journal_end = base["files"][JOURNAL]
    line = json.dumps({"v": 2, "id": 1, "digest": "", "end": offset + 9, "items": 1, "succeeded": 1}).encode() + b"\n"
    header["pieces"] = [{"file": "parallel_run_step.txt", "offset": offset, "length": 9},
                        {"file": JOURNAL, "offset": journal_end, "length": len(line)}]
    name = segment_name(header["seq"], "zombie")
    folder.put(name, encode_segment(header, [b"ZOMBIE!!\n", line]))
    again = run_in(batchinfer, tmp_path, "b", "run", str(spec), "--retry-failed")
    assert again.code == 0, again.stderr
    assert sorted(folder.rows()) == ["a.txt 0", "b.txt fixed", "c.txt 2", "d.txt 3", "e.txt fixed"]
    assert folder.segments() == []
    assert folder.summary()["items_failed"] == 0 and folder.summary()["items_succeeded"] == 5


def test_retry_failed_of_a_parquet_job_restores_its_parts(tmp_path, folder, batchinfer):
    import pyarrow.parquet as pq

    data = files(tmp_path / "data", ["a.txt", "b.txt", "c.txt"])
    (data / "b.txt").write_text("bad\n")
    spec = write_spec(tmp_path, folder, "fail_on_bad_content.py", data, append_row_format="parquet")
    assert run_in(batchinfer, tmp_path, "a", "run", str(spec)).code == 0
    (data / "b.txt").write_text("fixed\n")
    again = run_in(batchinfer, tmp_path, "b", "run", str(spec), "--retry-failed")
    assert again.code == 0, again.stderr
    with folder.fs.open(f"{folder.root}/parallel_run_step.txt", "rb") as f:
        assert sorted(pq.read_table(f).column("result").to_pylist()) == ["a.txt 0", "b.txt fixed", "c.txt 2"]
    assert folder.summary()["items_failed"] == 0 and folder.segments() == []


def test_a_store_that_fails_mid_run_stops_the_job_with_one_line_and_a_rerun_resumes(
        tmp_path, file_folder, batchinfer, run_marker):
    names = [f"f{i:03d}.txt" for i in range(4)] + [f"h{i:03d}.txt" for i in range(4)]
    data = files(tmp_path / "data", names)
    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, file_folder, "gated_echo.py", data, arguments=["--gate", str(gate), "--held", "h"])
    proc = _start(spec, tmp_path / "first", run_marker)
    _wait_for_committed(file_folder, 4, proc)
    segments = Path(file_folder.root) / SEGMENTS
    segments.rename(segments.with_name("kept"))
    segments.write_text("the store refuses every write here now")
    gate.touch()
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2, stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    assert file_folder.url in stderr and "batchinfer-out-" not in stderr
    assert no_staging_left(tmp_path, "first")
    segments.unlink()
    segments.with_name("kept").rename(segments)  # the store is back
    again = run_in(batchinfer, tmp_path, "second", "run", str(spec))
    assert again.code == 0, again.stderr
    assert sorted(file_folder.rows()) == sorted(f"{name} {i}" for i, name in enumerate(names))
    assert file_folder.summary()["mini_batches_resumed"] >= 4


def test_reuse_and_restart_on_a_remote_folder(tmp_path, folder, batchinfer):
    data = files(tmp_path / "data", [f"f{i:03d}.txt" for i in range(8)])
    spec = write_spec(tmp_path, folder, "echo_names.py", data)
    assert run_in(batchinfer, tmp_path, "a", "run", str(spec)).code == 0
    finished_at = folder.summary()["finished_at"]
    reused = run_in(batchinfer, tmp_path, "b", "run", str(spec))
    assert reused.code == 0 and "reused" in reused.stderr, reused.stderr
    assert folder.summary()["finished_at"] == finished_at and no_staging_left(tmp_path, "b")
    restarted = run_in(batchinfer, tmp_path, "c", "run", str(spec), "--restart")
    assert restarted.code == 0, restarted.stderr
    assert sorted(folder.rows()) == sorted(f"f{i:03d}.txt {i}" for i in range(8))  # scored again, not appended
    assert folder.summary()["mini_batches_resumed"] == 0 and folder.segments() == []


def test_parquet_rows_end_up_in_the_store(tmp_path, folder, batchinfer):
    import pyarrow.parquet as pq

    data = files(tmp_path / "data", [f"f{i:03d}.txt" for i in range(10)])
    spec = write_spec(tmp_path, folder, "echo_names.py", data, append_row_format="parquet",
                      append_row_file_name="rows.parquet")
    run = run_in(batchinfer, tmp_path, "a", "run", str(spec))
    assert run.code == 0, run.stderr
    with folder.fs.open(f"{folder.root}/rows.parquet", "rb") as f:
        table = pq.read_table(f)
    assert sorted(table.column("result").to_pylist()) == sorted(f"f{i:03d}.txt {i}" for i in range(10))
    assert folder.segments() == [] and folder.exists(".batchinfer/parts.pack")
    # the parts are the record: --restart is not needed to run it again, and reuse keeps the file
    assert run_in(batchinfer, tmp_path, "b", "run", str(spec)).code == 0


def test_summary_only_files_written_through_output_dir_end_up_in_the_store(tmp_path, folder, batchinfer):
    data = files(tmp_path / "data", [f"f{i:03d}.txt" for i in range(6)])
    spec = write_spec(tmp_path, folder, "summary_only.py", data, output_action="summary_only")
    run = run_in(batchinfer, tmp_path, "a", "run", str(spec))
    assert run.code == 0, run.stderr
    for i in range(6):
        assert folder.read(f"f{i:03d}.txt.out") == f"f{i:03d}.txt".encode()
    assert folder.summary()["output_file"] is None and folder.segments() == []


def test_object_writes_stay_about_one_segment_a_second(tmp_path, s3_server, batchinfer):
    from tests.stores import Store

    store = Store("s3", s3_server)
    bucket = store.new_bucket()
    folder = Folder(store.url(bucket, "out"), store.fs(), f"{bucket}/out", store.storage_options)
    data = files(tmp_path / "data", [f"f{i:04d}.txt" for i in range(2000)])
    spec = write_spec(tmp_path, folder, "echo_names.py", data)
    run = run_in(batchinfer, tmp_path, "a", "run", str(spec))
    assert run.code == 0, run.stderr
    summary = folder.summary()
    assert summary["mini_batches_succeeded"] == 2000 and len(folder.rows()) == 2000
    # elapsed as the run measured it; +2: the first segment and the last, shipped at the end
    assert summary["store_writes"]["segments"] <= math.ceil(summary["elapsed_s"]) + 2, summary


def test_a_missing_bucket_is_one_line_before_anything_runs(tmp_path, store, batchinfer):
    data = files(tmp_path / "data", ["a.txt"])
    folder = Folder(store.url("no-such-bucket-here", "out"), store.fs(), "no-such-bucket-here/out",
                    store.storage_options)
    spec = write_spec(tmp_path, folder, "init_fails.py", data)  # never started: its init() would fail loudly
    run = run_in(batchinfer, tmp_path, "a", "run", str(spec))
    assert_one_line_error(run, "no-such-bucket-here")
    assert no_staging_left(tmp_path, "a")


def test_refused_credentials_are_one_line_without_the_secret(tmp_path, azurite, batchinfer):
    bucket = azurite.new_bucket()
    wrong = azurite.connection_string(key="V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk=")
    folder = Folder(f"az://{bucket}/out", azurite.fs(), f"{bucket}/out", {"connection_string": wrong})
    spec = write_spec(tmp_path, folder, "init_fails.py", files(tmp_path / "data", ["a.txt"]))
    run = run_in(batchinfer, tmp_path, "a", "run", str(spec))
    assert_one_line_error(run, f"az://{bucket}/out")
    assert "V3JvbmdLZXlX" not in run.stderr


MEMORY_RUN = """
import sys, fsspec, batchinfer
summary = batchinfer.run(sys.argv[1])
rows = fsspec.filesystem("memory").cat_file("/bi-memory-test/out/parallel_run_step.txt").decode()
print(summary.output_dir, summary.items_succeeded, sorted(rows.splitlines()))
"""


def test_memory_url_works_within_one_process(tmp_path, run_marker):
    # in a process of its own: the Python API's run reaps its caller's other children (pytest's Azurite)
    data = files(tmp_path / "data", [f"f{i:03d}.txt" for i in range(5)])
    folder = Folder("memory://bi-memory-test/out", None, "/bi-memory-test/out", {})
    spec = write_spec(tmp_path, folder, "echo_names.py", data)
    proc = subprocess.run([sys.executable, "-c", MEMORY_RUN, str(spec)], capture_output=True, text=True,
                          env={**os.environ, MARKER: run_marker}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = sorted(f"f{i:03d}.txt {i}" for i in range(5))
    assert proc.stdout.strip() == f"{folder.url} 5 {rows}"


def test_a_pipeline_with_its_output_on_a_store_is_one_line(tmp_path, batchinfer):
    from tests.test_azure_pipeline import mnist

    run = batchinfer("run", str(mnist(tmp_path)), "--output", "s3://some-bucket/out")
    assert_one_line_error(run, "s3://some-bucket/out", "needs a local output folder")


def test_sigterm_leaves_the_summary_and_logs_in_the_store_and_a_rerun_completes(tmp_path, folder, batchinfer,
                                                                               run_marker):
    names = [f"f{i:03d}.txt" for i in range(6)] + [f"h{i:03d}.txt" for i in range(6)]
    data = files(tmp_path / "data", names)
    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, folder, "gated_echo.py", data, arguments=["--gate", str(gate), "--held", "h"])
    proc = _start(spec, tmp_path / "first", run_marker)
    _wait_for_committed(folder, 6, proc)
    proc.terminate()
    proc.terminate()  # the second one: stop at once, without waiting for the held mini-batches
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr
    summary = folder.summary()
    assert summary["status"] == "interrupted" and summary["items_succeeded"] == 6
    assert folder.exists("logs/job.log") and not folder.exists(".batchinfer/lease.json")
    assert no_staging_left(tmp_path, "first")
    gate.touch()
    again = run_in(batchinfer, tmp_path, "second", "run", str(spec))
    assert again.code == 0, again.stderr
    assert sorted(folder.rows()) == sorted(f"{name} {i}" for i, name in enumerate(names))
    assert folder.summary()["mini_batches_resumed"] == 6


def test_a_folder_holding_other_objects_is_refused_before_anything_runs(tmp_path, folder, batchinfer):
    folder.put("results.csv", b"someone else's\n")
    spec = write_spec(tmp_path, folder, "init_fails.py", files(tmp_path / "data", ["a.txt"]))
    run = run_in(batchinfer, tmp_path, "a", "run", str(spec))
    assert_one_line_error(run, folder.url, "is not empty", "results.csv")
    assert folder.read("results.csv") == b"someone else's\n" and not folder.exists(".batchinfer/lease.json")


# ---------------------------------------------------------------- the lease (batchinfer.lease) of a real run


def _held_run(tmp_path: Path, folder: Folder, run_marker: str, n: int = 6) -> tuple[subprocess.Popen, Path]:
    """A real run of 2n files, held with its n f* files committed in the store and its h* ones at the gate."""
    names = [f"f{i:03d}.txt" for i in range(n)] + [f"h{i:03d}.txt" for i in range(n)]
    data = files(tmp_path / "data", names)
    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, folder, "gated_echo.py", data, arguments=["--gate", str(gate), "--held", "h"])
    proc = _start(spec, tmp_path / "first", run_marker)
    _wait_for_committed(folder, n, proc)
    return proc, spec


def _let_go(proc: subprocess.Popen, tmp_path: Path) -> str:
    """Open the gate; the run's stderr once it ended (it must have succeeded)."""
    (tmp_path / "gate").touch()
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    return stderr


def test_status_from_another_directory_shows_a_held_remote_run_running_with_its_progress(
        tmp_path, folder, batchinfer, run_marker):
    proc, _ = _held_run(tmp_path, folder, run_marker)
    elsewhere = tmp_path / "another-machine"
    elsewhere.mkdir()
    deadline = time.monotonic() + 300  # a safety net only: the lease carries the status from its next renewal
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "the status never showed the progress"
        run = batchinfer("status", folder.url, "--json", cwd=elsewhere, env=folder.env)
        assert run.code == 0, run.stderr
        doc = json.loads(run.stdout)
        if doc.get("mini_batches_done") == 6:
            break
        time.sleep(0.2)
    assert doc["state"] == "running" and doc["pid"] == proc.pid and doc["items_done"] == 6
    assert doc["job"] == "remote" and doc["workers"] == 2 and doc["lease"]["pid"] == proc.pid
    line = batchinfer("status", folder.url, cwd=elsewhere, env=folder.env)
    assert line.code == 0, line.stderr
    assert line.stdout.startswith(f"remote: running (pid {proc.pid} on ") and ": 6/" in line.stdout, line.stdout
    _let_go(proc, tmp_path)
    done = batchinfer("status", folder.url, cwd=elsewhere, env=folder.env)
    assert done.stdout.startswith("remote: succeeded: 12/12 items succeeded"), done.stdout


def test_a_second_run_of_a_held_remote_folder_is_one_line_naming_the_holder(tmp_path, folder, batchinfer,
                                                                            run_marker):
    proc, spec = _held_run(tmp_path, folder, run_marker)
    segments = folder.segments()
    second = run_in(batchinfer, tmp_path, "second", "run", str(spec))
    assert_one_line_error(second, folder.url, "in use by another batchinfer run", f"pid {proc.pid} on ")
    assert no_staging_left(tmp_path, "second") and folder.segments() == segments
    _let_go(proc, tmp_path)  # the first run was not disturbed
    assert sorted(folder.rows()) == sorted([f"f{i:03d}.txt {i}" for i in range(6)] +
                                           [f"h{i:03d}.txt {i + 6}" for i in range(6)])
    assert not folder.exists(".batchinfer/lease.json")


def _lease_doc(host: str, renewed_s_ago: float) -> bytes:
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    return json.dumps({
        "format": 1, "run_id": "cd" * 16, "pid": 4242, "host": host,
        "started_at": (now - timedelta(seconds=renewed_s_ago + 60)).isoformat(),
        "renewed_at": (now - timedelta(seconds=renewed_s_ago)).isoformat(),
        "ttl_s": 30.0, "command": "batchinfer run job.yaml", "pid_space": None, "status": None,
    }).encode()


@pytest.mark.parametrize(("renewed_s_ago", "taken"), [(3, False), (300, True)])
def test_a_lease_left_by_a_run_on_another_machine_is_taken_over_only_once_expired(
        tmp_path, folder, batchinfer, renewed_s_ago, taken):
    data = files(tmp_path / "data", [f"f{i:03d}.txt" for i in range(4)])
    spec = write_spec(tmp_path, folder, "echo_names.py", data)
    folder.put(".batchinfer/lease.json", _lease_doc("another-machine.example", renewed_s_ago))
    run = run_in(batchinfer, tmp_path, "a", "run", str(spec))
    if taken:
        assert run.code == 0, run.stderr
        assert sorted(folder.rows()) == sorted(f"f{i:03d}.txt {i}" for i in range(4))
        assert not folder.exists(".batchinfer/lease.json")
    else:
        assert_one_line_error(run, folder.url, "pid 4242 on another-machine.example")
        assert not folder.exists("summary.json") and folder.segments() == []
        assert json.loads(folder.read(".batchinfer/lease.json"))["run_id"] == "cd" * 16


def test_a_run_whose_lease_was_taken_over_stops_and_commits_nothing_more(tmp_path, folder, run_marker):
    proc, _ = _held_run(tmp_path, folder, run_marker)
    segments = folder.segments()
    # another run took the folder over (as after this one stalled past the lease's TTL)
    folder.put(".batchinfer/lease.json", _lease_doc("another-machine.example", 0))
    _, stderr = proc.communicate(timeout=300)  # it notices at its next renewal, and stops by itself
    assert proc.returncode == 2, stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    assert folder.url in stderr and "another batchinfer run took over" in stderr and "pid 4242" in stderr, stderr
    assert folder.segments() == segments and not folder.exists("summary.json")  # nothing after the takeover
    assert json.loads(folder.read(".batchinfer/lease.json"))["run_id"] == "cd" * 16  # the new holder's, kept
    assert no_staging_left(tmp_path, "first")


# ---------------------------------------------------------------- a first run killed before it ever finished


def _killed_first_run(tmp_path: Path, folder: Folder, run_marker: str) -> tuple[Path, list[str], Path]:
    """A first run SIGKILLed once the store holds a committed mini-batch, its log files uploaded
    meanwhile (as the uploader does every 30 s): the folder has never seen a finish()."""
    names = [f"f{i:03d}.txt" for i in range(4)] + [f"h{i:03d}.txt" for i in range(4)]
    data = files(tmp_path / "data", names)
    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, folder, "gated_echo.py", data, arguments=["--gate", str(gate), "--held", "h"])
    proc = _start(spec, tmp_path / "first", run_marker)
    _wait_for_committed(folder, 1, proc)
    proc.kill()
    proc.communicate()
    folder.put("logs/job.log", b"the first run's log, uploaded by its 30 s tick\n")
    gate.touch()
    return spec, names, gate


def test_a_killed_first_run_with_its_logs_uploaded_is_resumed(tmp_path, folder, batchinfer, run_marker):
    spec, names, _ = _killed_first_run(tmp_path, folder, run_marker)
    assert folder.exists(".batchinfer/job.json") and folder.exists(".batchinfer/manifest.json")
    again = run_in(batchinfer, tmp_path, "second", "run", str(spec))
    assert again.code == 0, again.stderr
    assert sorted(folder.rows()) == sorted(f"{name} {i}" for i, name in enumerate(names))
    assert folder.summary()["mini_batches_resumed"] >= 1 and folder.segments() == []


def test_a_changed_job_does_not_adopt_the_segments_of_a_killed_first_run(tmp_path, folder, batchinfer,
                                                                         run_marker):
    spec, _, gate = _killed_first_run(tmp_path, folder, run_marker)
    doc = yaml.safe_load(spec.read_text())
    doc["arguments"] = ["--gate", str(gate), "--held", "h", "--changed"]
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    again = run_in(batchinfer, tmp_path, "second", "run", str(spec))
    assert again.code == 2 and "Traceback" not in again.stderr, again.stderr
    error = again.stderr.strip().splitlines()[-1]  # after the warning that the dead run's lease was taken over
    assert error.startswith("batchinfer: error: ") and "holds a different job" in error and "--restart" in error
    assert folder.segments() != [] and not folder.exists("summary.json")


@pytest.mark.parametrize("left", ["segment", "lease"])
def test_what_a_run_left_without_job_json_is_told_apart_from_foreign_objects(tmp_path, folder, batchinfer, left):
    """Segments with no job.json (left by an older release): refused unless --restart; a lease is proof enough
    that the other objects are batchinfer's."""
    data = files(tmp_path / "data", [f"f{i:03d}.txt" for i in range(3)])
    spec = write_spec(tmp_path, folder, "echo_names.py", data)
    folder.put("logs/job.log", b"an old log\n")
    if left == "segment":
        folder.put(segment_name(1, "old"), encode_segment({"seq": 1, "run": "old", "prev": [0, ""], "pieces": []}, []))
        refused = run_in(batchinfer, tmp_path, "a", "run", str(spec))
        assert_one_line_error(refused, folder.url, "--restart")
        run = run_in(batchinfer, tmp_path, "b", "run", str(spec), "--restart")
    else:
        folder.put(".batchinfer/lease.json", _lease_doc("elsewhere", 300))
        run = run_in(batchinfer, tmp_path, "b", "run", str(spec))
    assert run.code == 0, run.stderr
    assert sorted(folder.rows()) == sorted(f"f{i:03d}.txt {i}" for i in range(3)) and folder.segments() == []


# ---------------------------------------------------------------- the script's own files (output_dir())


@pytest.fixture
def opened(request):
    """A memory:// RemoteFolder opened in this process (its lease taken), closed at the end."""
    import uuid

    from batchinfer.remote_output import RemoteFolder

    folder = RemoteFolder.open(f"memory://t-{uuid.uuid4().hex}/out", {}, "parallel_run_step.txt")
    yield folder
    folder.close()


def test_the_scripts_files_reach_the_store_before_the_segment_that_commits_them(opened, monkeypatch):
    written: list[str] = []
    for method, target in (("put_file", 1), ("pipe_file", 0)):  # (lpath, rpath), (path, data)
        real = getattr(opened.fs, method)
        monkeypatch.setattr(opened.fs, method, lambda *a, real=real, at=target, **k: (written.append(a[at]),
                                                                                        real(*a, **k))[1])
    (opened.staging / "scores").mkdir()
    (opened.staging / "scores" / "a.npy").write_bytes(b"scores of a")  # written by run() before it returned
    opened._thread = __import__("threading").Thread(target=opened._upload_loop, daemon=True)
    opened._thread.start()
    segment = segment_name(1, opened.run)
    opened._queue.put((segment, encode_segment({"seq": 1, "run": opened.run, "prev": [0, ""], "pieces": []}, [])))
    opened._stop_thread()
    assert [w.rsplit("/out/", 1)[1] for w in written if "lease" not in w] == ["scores/a.npy", segment]


@pytest.mark.parametrize("when", ["after the listing", "during the upload"])
def test_a_file_the_script_removes_while_it_is_uploaded_is_skipped(opened, monkeypatch, when):
    (opened.staging / "kept.txt").write_text("kept")
    (opened.staging / "scratch.tmp.part").write_text("the script's temporary file")
    if when == "after the listing":
        walk = opened._walk
        monkeypatch.setattr(opened, "_walk", lambda *a: (walk(*a), (opened.staging / "scratch.tmp.part").unlink())[0])
    else:
        real = opened.fs.put_file

        def put_file(src, dst, **kw):
            if src.endswith("scratch.tmp.part"):
                os.unlink(src)
            return real(src, dst, **kw)
        monkeypatch.setattr(opened.fs, "put_file", put_file)
    opened._upload_changed(user_files=True)  # no StorageError, no FileNotFoundError
    assert opened.fs.cat_file(f"{opened.root}/kept.txt") == b"kept"
    assert not opened.fs.exists(f"{opened.root}/scratch.tmp.part")


@pytest.mark.parametrize("how", ["_put", "_put_file"])
def test_file_url_objects_are_replaced_whole_never_rewritten_in_place(file_folder, how):
    """A kill while file:// rewrites journal.jsonl or the row file must leave the old one or the new one:
    the new bytes go to another file renamed over it, so a link to the old one keeps the old bytes."""
    from batchinfer.remote_output import RemoteFolder

    folder = RemoteFolder.open(file_folder.url, {}, "parallel_run_step.txt")
    try:
        target = Path(folder.root) / JOURNAL
        for content in (b"old lines\n", b"new, longer lines\n"):
            if how == "_put":
                folder._put(JOURNAL, content)
            else:
                (folder.staging / JOURNAL).parent.mkdir(parents=True, exist_ok=True)
                (folder.staging / JOURNAL).write_bytes(content)
                folder._put_file(JOURNAL)
            if content.startswith(b"old"):
                os.link(target, target.with_name("old-link"))
        assert target.read_bytes() == b"new, longer lines\n"
        assert target.with_name("old-link").read_bytes() == b"old lines\n"
        assert sorted(p.name for p in target.parent.iterdir()) == ["journal.jsonl", "lease.json", "old-link"]
    finally:
        folder.close()


TORN = {
    "base.json torn": (".batchinfer/base.json", lambda old: old[: len(old) // 2]),
    "base.json without files": (".batchinfer/base.json", lambda old: b'{"format": 1, "seq": 2}'),
    "base.json not an object": (".batchinfer/base.json", lambda old: b"[1, 2]"),
}


@pytest.mark.parametrize("torn", list(TORN))
def test_a_torn_base_is_one_line(tmp_path, file_folder, batchinfer, torn):
    spec, _ = _finished_with_failures(tmp_path, file_folder, batchinfer)
    rel, tear = TORN[torn]
    file_folder.put(rel, tear(file_folder.read(rel)))
    again = run_in(batchinfer, tmp_path, "b", "run", str(spec), "--retry-failed")
    assert_one_line_error(again, file_folder.url, rel, "--restart")


def test_a_torn_parts_pack_is_one_line(tmp_path, file_folder, batchinfer):
    data = files(tmp_path / "data", ["a.txt", "b.txt"])
    (data / "b.txt").write_text("bad\n")
    spec = write_spec(tmp_path, file_folder, "fail_on_bad_content.py", data, append_row_format="parquet")
    assert run_in(batchinfer, tmp_path, "a", "run", str(spec)).code == 0
    pack = file_folder.read(".batchinfer/parts.pack")
    file_folder.put(".batchinfer/parts.pack", pack[:-5])
    again = run_in(batchinfer, tmp_path, "b", "run", str(spec), "--retry-failed")
    assert_one_line_error(again, file_folder.url, ".batchinfer/parts.pack", "--restart")


def test_a_killed_retry_failed_then_a_plain_rerun_folds_in_what_the_retry_committed(
        tmp_path, folder, batchinfer, run_marker):
    data = files(tmp_path / "data", ["a.txt", "bad1.txt", "bad2-hold.txt"])
    spec = write_spec(tmp_path, folder, "hold.py", data)
    first = run_in(batchinfer, tmp_path, "a", "run", str(spec), env={"HOLD_FAIL": "1"})
    assert first.code == 0 and folder.summary()["items_failed"] == 2, first.stderr
    base_lines = folder.committed()
    # the retry (the inputs fixed: they no longer fail) commits bad1, then holds on bad2-hold: SIGKILLed there
    marker, release = tmp_path / "held", tmp_path / "release"
    cwd = tmp_path / "retry"
    (cwd / "tmp").mkdir(parents=True)
    env = {**os.environ, MARKER: run_marker, "TMPDIR": str(cwd / "tmp"), "HOLD_MARKER": str(marker),
           "HOLD_RELEASE": str(release)}
    proc = subprocess.Popen([sys.executable, "-m", "batchinfer", "run", str(spec), "--retry-failed", "--quiet"],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_committed(folder, base_lines + 1, proc)
    proc.kill()
    proc.communicate()
    release.touch()
    again = run_in(batchinfer, tmp_path, "b", "run", str(spec),
                   env={"HOLD_MARKER": str(marker), "HOLD_RELEASE": str(release)})
    assert again.code == 0, again.stderr
    assert "reused" not in again.stderr  # not the first run's summary (2 failed): the retry's commit folded in
    assert sorted(folder.rows()) == ["a.txt", "bad1.txt"]  # a plain rerun does not retry bad2-hold's failure
    summary = folder.summary()
    assert summary["items_failed"] == 1 and summary["items_succeeded"] == 2 and folder.segments() == []


def test_a_restore_fetches_its_segments_concurrently_and_applies_them_in_order(opened, monkeypatch):
    import threading

    lines = [json.dumps({"v": 2, "id": i, "end": 0}).encode() + b"\n" for i in range(3)]
    prev, at = [0, ""], 0
    for seq, line in enumerate(lines, 1):
        header = {"seq": seq, "run": f"r{seq}", "prev": prev,
                  "pieces": [{"file": JOURNAL, "offset": at, "length": len(line)}]}
        opened.fs.pipe_file(f"{opened.root}/{segment_name(seq, f'r{seq}')}", encode_segment(header, [line]))
        prev, at = [seq, f"r{seq}"], at + len(line)
    both = threading.Barrier(2, timeout=60)  # a safety net only: passes at once when two GETs are in flight
    get = opened._get

    def slow_get(rel):
        if rel.endswith(("r1.seg", "r2.seg")):
            both.wait()  # the first segment's GET returns only once the second one's has started
        return get(rel)
    monkeypatch.setattr(opened, "_get", slow_get)
    opened.restore_rows()
    assert (opened.staging / JOURNAL).read_bytes() == b"".join(lines) and opened.seq == 3


@pytest.mark.parametrize("output", ["file", "local"])
def test_status_of_a_folder_named_by_a_file_url_reads_it_as_its_run_wrote_it(batchinfer, tmp_path, output):
    """``file://`` output is a remote folder (a lease, no status.json); a local run's folder named with
    ``file://`` keeps its flock and status.json: ``status file://...`` reads each the way it was written."""
    data = tmp_path / "d"
    data.mkdir()
    for i in range(3):
        (data / f"f{i}.txt").write_text(f"{i}\n")
    job = tmp_path / "job.yaml"
    job.write_text(f"entry_script: echo_names.py\nsource_directory: {SCRIPTS}\ninputs: {{path: {data}}}\n"
                   "mini_batch_size: 1\nprocess_count_per_node: 1\n")
    folder = tmp_path / "out"
    run = batchinfer("run", str(job), "--output", f"file://{folder}" if output == "file" else str(folder))
    assert run.code == 0, run.stderr
    assert (folder / ".batchinfer" / "status.json").exists() == (output == "local")
    status = batchinfer("status", f"file://{folder}", "--json")
    assert status.code == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["state"] == "succeeded" and doc["items_succeeded"] == 3
    if output == "file":  # a run holding the folder now (its lease): running, though no status.json is there
        import fsspec

        from batchinfer.lease import Lease

        lease = Lease.acquire(fsspec.filesystem("file"), str(folder), url=f"file://{folder}", start=False)
        try:
            held = json.loads(batchinfer("status", f"file://{folder}", "--json").stdout)
        finally:
            lease.release()
        assert held["state"] == "running", held
