"""The output folder is batchinfer's and the user's: one run at a time, and only what batchinfer
wrote is ever removed or overwritten.

Each class is a table: concurrent runs (a first run held at a known point inside run()),
runs killed while holding the folder, user files beside batchinfer's, folders of someone
else's, damaged or forged state files, folders batchinfer cannot write, the modes of
``.batchinfer/``, and what ``--output -`` leaves in its temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from background import wait_until
from conftest import MARKER, SCRIPTS, _processes_with, assert_one_line_error

HOST = socket.gethostname()
N_FILES = 10  # f000.txt .. f009.txt, and f010-hold.txt where a run can be held


def write_spec(tmp_path: Path, data: Path, script: str = "hold.py", **keys) -> Path:
    spec = {"entry_script": script, "source_directory": str(SCRIPTS), "inputs": {"path": str(data)},
            "process_count_per_node": 2, "mini_batch_size": 1, "run_invocation_timeout": 600, **keys}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def data(text_files) -> Path:
    folder = text_files(N_FILES)
    (folder / "f010-hold.txt").write_text("10\n")
    return folder


def expected_rows(data: Path) -> list[str]:
    return sorted(p.name for p in data.iterdir())


def assert_rows_once(out: Path, data: Path, name: str = "parallel_run_step.txt") -> None:
    raw = (out / name).read_bytes()
    assert raw.endswith(b"\n"), "a partial last line"
    rows = raw.decode().splitlines()
    assert len(rows) == len(set(rows)), "duplicate rows"
    assert sorted(rows) == expected_rows(data)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its content."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}



# ------------------------------------------------------------------ one run at a time


@dataclass
class Held:
    """A ``batchinfer run`` held inside run() (on f010-hold.txt) until :meth:`release`."""

    proc: subprocess.Popen
    spec: Path
    out: Path
    release_file: Path
    stderr: Path

    def release(self) -> int:
        self.release_file.touch()
        code = self.proc.wait(timeout=120)
        return code


@pytest.fixture
def held_run(tmp_path, data, run_marker):
    """``held_run(*args, **spec_keys) -> Held``: start a run and return once it is inside run()."""
    started: list[Held] = []

    def start(*args: str, **keys) -> Held:
        spec = write_spec(tmp_path, data, **keys)
        out = tmp_path / "out"
        marker, release, stderr = tmp_path / "held", tmp_path / "release", tmp_path / "held-stderr.txt"
        with open(stderr, "w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "batchinfer", "run", str(spec), "--output", str(out), *args],
                env={**os.environ, MARKER: run_marker, "HOLD_MARKER": str(marker), "HOLD_RELEASE": str(release)},
                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, cwd=tmp_path,
            )
        held = Held(proc, spec, out, release, stderr)
        started.append(held)
        wait_until(marker.exists, proc, "run() on f010-hold.txt")
        return held

    yield start
    for held in started:
        held.release_file.touch()
        try:
            held.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            held.proc.kill()
            held.proc.wait()


SECOND_RUNS = {
    "the same job": ["--output", "{out}"],
    "--restart": ["--output", "{out}", "--restart"],
    "--retry-failed": ["--output", "{out}", "--retry-failed"],
    "allow_reuse false": ["--output", "{out}", "--set", "allow_reuse=false"],
    "another job": ["--output", "{out}", "--set", "mini_batch_size=2"],
    "--output - with --logs on that folder": ["--output", "-", "--logs", "{out}"],
}


@pytest.mark.parametrize("args", SECOND_RUNS.values(), ids=SECOND_RUNS.keys())
def test_a_second_run_into_a_held_folder_stops_at_once_naming_the_first(held_run, data, batchinfer, args):
    held = held_run()
    second = batchinfer("run", str(held.spec), *[a.replace("{out}", str(held.out)) for a in args])
    assert_one_line_error(second, "is in use by another batchinfer run", f"pid {held.proc.pid} on {HOST}, started ",
                          f"batchinfer status {held.out}")
    assert held.release() == 0, held.stderr.read_text()
    assert_rows_once(held.out, data)
    assert json.loads((held.out / "summary.json").read_text())["items_succeeded"] == N_FILES + 1


def test_status_names_the_run_that_holds_the_folder(held_run, batchinfer):
    held = held_run()
    line = batchinfer("status", str(held.out))
    assert line.code == 0, line.stderr
    assert line.stdout.startswith(f"job: running (pid {held.proc.pid} on {HOST}, started "), line.stdout
    doc = json.loads(batchinfer("status", str(held.out), "--json").stdout)
    assert doc["state"] == "running" and doc["pid"] == held.proc.pid
    assert doc["lock"]["host"] == HOST and "run" in doc["lock"]["command"]
    assert held.release() == 0
    assert batchinfer("status", str(held.out)).stdout.startswith("job: succeeded: 11/11 items succeeded")


@pytest.mark.parametrize("content", [b"{", b'{"pid": "x", "host": 5}', b"\x00" * 100, b""])
def test_a_held_folder_with_a_forged_lock_file_is_still_held(held_run, batchinfer, content):
    """The content is only for the message: a forged one changes the message, never who may run."""
    held = held_run()
    (held.out / ".batchinfer" / "lock").write_bytes(content)
    second = batchinfer("run", str(held.spec), "--output", str(held.out))
    assert_one_line_error(second, "is in use by another batchinfer run (its lock file does not say which)")
    status = batchinfer("status", str(held.out))
    assert status.code == 0 and status.stdout.startswith("job: running (pid "), status.stdout + status.stderr
    assert held.release() == 0


def test_only_the_coordinator_holds_the_lock(held_run, run_marker):
    """Workers, the fork server and the resource tracker must not inherit it, or a killed
    coordinator's lock would live on in them."""
    held = held_run()
    lock = str(held.out / ".batchinfer" / "lock")
    processes = _processes_with(run_marker)
    assert len(processes) >= 3  # the coordinator, the fork server, workers
    holders = set()
    for proc in processes:
        try:
            if any(f.path == lock for f in proc.open_files()):
                holders.add(proc.pid)
        except Exception:  # noqa: BLE001 - a process that ended meanwhile holds nothing
            continue
    assert holders == {held.proc.pid}


def test_a_run_killed_while_holding_the_folder_never_blocks_the_next(held_run, data, batchinfer):
    held = held_run()
    held.proc.kill()  # SIGKILL: nothing of batchinfer's runs in the coordinator to let the lock go
    held.proc.wait()
    again = batchinfer("run", str(held.spec), "--output", str(held.out))  # at once: no waiting for the workers
    assert again.code == 0, again.stderr
    assert_rows_once(held.out, data)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


STALE_LOCKS = {
    "a dead pid on this host": lambda: json.dumps({"pid": _dead_pid(), "host": HOST, "started_at": "2020-01-01",
                                                   "command": "batchinfer run job.yaml"}).encode(),
    "a live pid on another host": lambda: json.dumps({"pid": 1, "host": "elsewhere.example",
                                                      "started_at": "2020-01-01", "command": "x"}).encode(),
    "not JSON": lambda: b"\x00\xff{garbage",
    "wrong types": lambda: b'{"pid": "1", "host": 5}',
    "empty": lambda: b"",
}


@pytest.mark.parametrize("content", STALE_LOCKS.values(), ids=STALE_LOCKS.keys())
def test_a_stale_lock_file_does_not_block(tmp_path, data, batchinfer, content):
    """The kernel's lock decides, never the file's content (that is only for messages)."""
    spec = write_spec(tmp_path, data)
    out = tmp_path / "out"
    (out / ".batchinfer").mkdir(parents=True)
    (out / ".batchinfer" / "lock").write_bytes(content())  # a folder where a run died before writing anything
    first = batchinfer("run", str(spec), "--output", str(out))
    assert first.code == 0, first.stderr
    (out / ".batchinfer" / "lock").write_bytes(content())  # and one of a finished job
    again = batchinfer("run", str(spec), "--output", str(out), "--restart")
    assert again.code == 0, again.stderr
    assert_rows_once(out, data)


# ------------------------------------------------------------------ batchinfer removes only what it wrote


USER_FILES = {  # the user's files in a batchinfer output folder, after its first run
    "logs/app.log": b"the user's log\n",
    "notes.txt": b"the user's notes\n",
    ".batchinfer/mine.txt": b"the user's file among batchinfer's state\n",
    "results/keep.csv": b"a,b\n1,2\n",
}
SECOND_ACTIONS = {  # how the job is run again: (arguments, spec keys, make it look unfinished first)
    "--restart": (["--restart"], {}, False),
    "allow_reuse false": ([], {"allow_reuse": False}, False),
    "resume": ([], {}, True),
    "reuse": ([], {}, False),
    "--retry-failed": (["--retry-failed"], {}, False),
}


@pytest.mark.parametrize("action", SECOND_ACTIONS.values(), ids=SECOND_ACTIONS.keys())
def test_user_files_in_the_output_folder_survive(tmp_path, data, batchinfer, action):
    args, keys, unfinished = action
    spec = write_spec(tmp_path, data, **keys)
    out = tmp_path / "out"
    assert batchinfer("run", str(spec), "--output", str(out)).code == 0
    for name, content in USER_FILES.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(content)
    if unfinished:
        (out / "summary.json").unlink()
    again = batchinfer("run", str(spec), "--output", str(out), *args)
    assert again.code == 0, again.stderr
    assert_rows_once(out, data)
    for name, content in USER_FILES.items():
        assert (out / name).read_bytes() == content, name


def test_files_the_script_wrote_survive_restart(tmp_path, data, batchinfer):
    """A summary_only script writes its results beside batchinfer's files: they are not batchinfer's."""
    spec = write_spec(tmp_path, data, "summary_only.py", output_action="summary_only")
    out = tmp_path / "out"
    assert batchinfer("run", str(spec), "--output", str(out)).code == 0
    assert (out / "f001.txt.out").exists()
    again = batchinfer("run", str(spec), "--output", str(out), "--restart", "--set", "mini_batch_size=2")
    assert again.code == 0, again.stderr
    assert (out / "f001.txt.out").read_text() == "f001.txt"  # written by the first run's script, kept


FOREIGN = {  # a folder of the user's, holding this file -> extra spec keys
    "summary.json": {},
    "parallel_run_step.txt": {},
    "logs/job.log": {},
    "scores.txt": {"append_row_file_name": "scores.txt"},
    "notes.txt": {},
    ".hidden": {},
    "sub/deep.txt": {},
}
FOREIGN_RUNS = {
    "first run": ["--output", "{out}"],
    "--restart": ["--output", "{out}", "--restart"],
    "--output - --logs": ["--output", "-", "--logs", "{out}"],
}


@pytest.mark.parametrize("args", FOREIGN_RUNS.values(), ids=FOREIGN_RUNS.keys())
@pytest.mark.parametrize("name", FOREIGN)
def test_a_non_empty_folder_that_is_not_batchinfers_is_refused_and_left_as_it_is(tmp_path, data, batchinfer,
                                                                                  name, args):
    spec = write_spec(tmp_path, data, **FOREIGN[name])
    out = tmp_path / "out"
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_text("the user's\n")
    before = snapshot(out)
    run = batchinfer("run", str(spec), *[a.replace("{out}", str(out)) for a in args])
    assert_one_line_error(run, f"output {out} is not empty", "not a batchinfer output folder", "--output")
    assert snapshot(out) == before
    assert not (out / ".batchinfer").exists()  # nothing was changed, not even a lock taken


CONFLICTS = {  # a file of the user's at a name a later run of the job would write -> that run's arguments
    "logs/worker-3.log": ["--restart", "--processes", "4"],
    "scores.txt": ["--restart", "--set", "append_row_file_name=scores.txt"],
    "logs/worker-2.log": ["--processes", "3"],  # resumed: the job has not finished
}


@pytest.mark.parametrize("name", CONFLICTS)
def test_a_user_file_where_batchinfer_would_write_is_refused_not_overwritten(tmp_path, data, batchinfer, name):
    spec = write_spec(tmp_path, data)
    out = tmp_path / "out"
    assert batchinfer("run", str(spec), "--output", str(out)).code == 0
    (out / "summary.json").unlink()  # unfinished: the next run resumes (or restarts)
    (out / name).write_text("the user's\n")
    before = snapshot(out)
    run = batchinfer("run", str(spec), "--output", str(out), *CONFLICTS[name])
    assert_one_line_error(run, f"holds {name}, which batchinfer did not write")
    assert {k: v for k, v in snapshot(out).items() if not k.startswith(".batchinfer/")} == {
        k: v for k, v in before.items() if not k.startswith(".batchinfer/")}  # nothing cleared before refusing


# ------------------------------------------------------------------ what batchinfer reads back is data


GOOD_JOB = {"format": 2, "fingerprint": "0123456789abcdef", "name": "job", "version": "0.1.0"}
DAMAGED_STATE = {  # file under .batchinfer/ -> (content, fragment of the error, does --restart mend it)
    "job.json not JSON": ("job.json", b"{", "job.json is damaged", True),
    "job.json not UTF-8": ("job.json", b'{"fingerprint": "\xff"}', "job.json is damaged", True),
    "job.json a list": ("job.json", b"[1, 2]", "job.json is damaged", True),
    "job.json wrong types": ("job.json", b'{"fingerprint": 5, "name": "job"}', "fingerprint", True),
    "job.json format a string": ("job.json", json.dumps({**GOOD_JOB, "format": "2"}).encode(), "format", True),
    "job.json a newer format": ("job.json", json.dumps({**GOOD_JOB, "format": 99}).encode(), "newer batchinfer", False),
    "job.json a folder": ("job.json", None, ".batchinfer/job.json", False),
    "manifest escaping the folder": ("manifest.json", b'{"format": 1, "files": ["../victim.txt"], "trees": []}',
                                     "manifest.json is damaged", False),
    "manifest naming a user folder as a tree": ("manifest.json", b'{"format": 1, "files": [], "trees": ["logs"]}',
                                                "manifest.json is damaged", False),
    "manifest wrong types": ("manifest.json", b'{"format": 1, "files": "logs/job.log", "trees": []}',
                             "manifest.json is damaged", False),
    "manifest a newer format": ("manifest.json", b'{"format": 7, "files": [], "trees": []}', "newer batchinfer",
                                False),
}


@pytest.mark.parametrize("case", DAMAGED_STATE.values(), ids=DAMAGED_STATE.keys())
def test_a_damaged_or_forged_state_file_is_one_line_naming_it(tmp_path, data, batchinfer, case):
    name, content, fragment, restart_mends = case
    spec = write_spec(tmp_path, data)
    out = tmp_path / "out"
    assert batchinfer("run", str(spec), "--output", str(out)).code == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("not batchinfer's\n")
    path = out / ".batchinfer" / name
    if content is None:
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes(content)
    assert_one_line_error(batchinfer("run", str(spec), "--output", str(out)), fragment)
    restarted = batchinfer("run", str(spec), "--output", str(out), "--restart")
    if restart_mends:
        assert restarted.code == 0, restarted.stderr
        assert_rows_once(out, data)
    else:
        assert_one_line_error(restarted, fragment)
    assert victim.read_text() == "not batchinfer's\n"
    status = batchinfer("status", str(out))
    assert "Traceback" not in status.stderr and len((status.stdout + status.stderr).splitlines()) == 1


BAD_SUMMARIES = {  # summary.json -> replaced by; each is treated as absent: the job is resumed
    "exit_code 99": lambda s: {**s, "exit_code": 99},
    "exit_code a string": lambda s: {**s, "exit_code": "0"},
    "exit_code a bool": lambda s: {**s, "exit_code": True},
    "status a number": lambda s: {**s, "status": 5},
    "finished_at a number": lambda s: {**s, "finished_at": 5},
    "a list": lambda s: [s],
    "not JSON": lambda s: "{",
}


@pytest.mark.parametrize("forge", BAD_SUMMARIES.values(), ids=BAD_SUMMARIES.keys())
def test_a_damaged_summary_is_treated_as_absent(tmp_path, data, batchinfer, forge):
    spec = write_spec(tmp_path, data)
    out = tmp_path / "out"
    assert batchinfer("run", str(spec), "--output", str(out)).code == 0
    forged = forge(json.loads((out / "summary.json").read_text()))
    (out / "summary.json").write_text(forged if isinstance(forged, str) else json.dumps(forged))
    status = batchinfer("status", str(out))
    assert status.code == 0 and "Traceback" not in status.stderr, status.stderr
    again = batchinfer("run", str(spec), "--output", str(out))
    assert again.code == 0, again.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["exit_code"] == 0 and summary["mini_batches_resumed"] == 11
    assert_rows_once(out, data)


BAD_STATUS = {  # .batchinfer/status.json of a job that stopped -> forged content
    "pid a string": {"state": "running", "pid": "x"},
    "counts strings": {"job": "job", "state": "running", "pid": "SELF", "workers": 2, "started_at": "2099",
                       "elapsed_s": 1, "mini_batches_done": "a", "mini_batches_total": 1, "listing_done": True,
                       "items_done": "a", "items_failed": 0, "busy_workers": 0},
    "a list": [1],
    "not JSON": "{",
}


@pytest.mark.parametrize("content", BAD_STATUS.values(), ids=BAD_STATUS.keys())
def test_status_of_a_damaged_status_file_is_one_line(tmp_path, data, batchinfer, content):
    spec = write_spec(tmp_path, data)
    out = tmp_path / "out"
    assert batchinfer("run", str(spec), "--output", str(out)).code == 0
    (out / "summary.json").unlink()
    if isinstance(content, dict) and content.get("pid") == "SELF":
        content = {**content, "pid": os.getpid()}  # a live process
    (out / ".batchinfer" / "status.json").write_text(content if isinstance(content, str) else json.dumps(content))
    status = batchinfer("status", str(out))
    assert status.code == 0 and "Traceback" not in status.stderr, status.stderr
    assert status.stdout.startswith("job: stopped") and len(status.stdout.splitlines()) == 1


def test_a_folder_written_by_0_1_0_is_resumed_reused_and_restarted(tmp_path, data, batchinfer):
    """0.1.0 wrote job.json without a format, no manifest, no lock, with the umask's modes."""
    spec = write_spec(tmp_path, data)
    out = tmp_path / "out"
    assert batchinfer("run", str(spec), "--output", str(out)).code == 0
    state = out / ".batchinfer"
    job = json.loads((state / "job.json").read_text())
    (state / "job.json").write_text(json.dumps({"fingerprint": job["fingerprint"], "name": "job", "version": "0.1.0"}))
    for name in ("manifest.json", "lock"):
        (state / name).unlink()
    for path in [state, *state.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (out / "logs" / "app.log").write_text("the user's\n")
    reused = batchinfer("run", str(spec), "--output", str(out))
    assert reused.code == 0 and "reused the finished job" in reused.stderr, reused.stderr
    (out / "summary.json").unlink()
    resumed = batchinfer("run", str(spec), "--output", str(out))
    assert resumed.code == 0, resumed.stderr
    assert json.loads((out / "summary.json").read_text())["mini_batches_resumed"] == 11
    assert json.loads((state / "job.json").read_text())["format"] == 2  # migrated
    restarted = batchinfer("run", str(spec), "--output", str(out), "--restart")
    assert restarted.code == 0, restarted.stderr
    assert_rows_once(out, data)
    assert (out / "logs" / "app.log").read_text() == "the user's\n"


# ------------------------------------------------------------------ a folder batchinfer cannot write


@pytest.fixture
def immutable():
    """``immutable(path)``: make ``path`` read-only even for root (chattr +i); undone after the test."""
    made: list[Path] = []

    def make(path: Path) -> None:
        if not shutil.which("chattr"):
            pytest.skip("chattr is not installed: no way to make a folder read-only for root here")
        proc = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"chattr +i does not work here: {proc.stderr.strip()}")
        made.append(path)

    yield make
    for path in reversed(made):
        subprocess.run(["chattr", "-i", str(path)], check=False)


def _read_only_empty(tmp_path, immutable):
    (tmp_path / "out").mkdir()
    immutable(tmp_path / "out")
    return ["--output", str(tmp_path / "out")]


def _parent_read_only(tmp_path, immutable):
    (tmp_path / "parent").mkdir()
    immutable(tmp_path / "parent")
    return ["--output", str(tmp_path / "parent" / "out")]


def _parent_is_a_file(tmp_path, immutable):
    (tmp_path / "parent").write_text("a file\n")
    return ["--output", str(tmp_path / "parent" / "out")]


def _path_is_a_file(tmp_path, immutable):
    (tmp_path / "out").write_text("a file\n")
    return ["--output", str(tmp_path / "out")]


def _name_too_long(tmp_path, immutable):
    return ["--output", str(tmp_path / ("x" * 300))]


def _logs_read_only(tmp_path, immutable):
    (tmp_path / "logs-here").mkdir()
    immutable(tmp_path / "logs-here")
    return ["--output", "-", "--logs", str(tmp_path / "logs-here")]


def _logs_is_a_file(tmp_path, immutable):
    (tmp_path / "logs-here").write_text("a file\n")
    return ["--output", "-", "--logs", str(tmp_path / "logs-here")]


UNWRITABLE = {
    "read-only folder": _read_only_empty,
    "read-only parent": _parent_read_only,
    "parent is a file": _parent_is_a_file,
    "path is a file": _path_is_a_file,
    "name too long": _name_too_long,
    "--logs read-only": _logs_read_only,
    "--logs is a file": _logs_is_a_file,
}


@pytest.mark.parametrize("make", UNWRITABLE.values(), ids=UNWRITABLE.keys())
def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path, data, batchinfer, immutable, make):
    spec = write_spec(tmp_path, data)
    args = make(tmp_path, immutable)
    folder = args[args.index("--logs") + 1] if "--logs" in args else args[1]
    assert_one_line_error(batchinfer("run", str(spec), *args), f"output {folder}")


@pytest.mark.parametrize("immutable_part", ["the folder", "logs", ".batchinfer", "logs/job.log"])
def test_a_finished_job_whose_folder_became_read_only_is_one_line(tmp_path, data, batchinfer, immutable,
                                                                  immutable_part):
    spec = write_spec(tmp_path, data)
    out = tmp_path / "out"
    assert batchinfer("run", str(spec), "--output", str(out)).code == 0
    immutable(out if immutable_part == "the folder" else out / immutable_part)
    assert_one_line_error(batchinfer("run", str(spec), "--output", str(out), "--restart"), f"output {out}")


# ------------------------------------------------------------------ .batchinfer/ is the owner's only


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
@pytest.mark.parametrize("fmt", ["txt", "parquet"])
def test_state_files_are_readable_by_the_owner_only(tmp_path, data, run_marker, umask, fmt):
    spec = write_spec(tmp_path, data, append_row_format=fmt)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "batchinfer", "run", str(spec), "--output", str(out)],
        env={**os.environ, MARKER: run_marker}, capture_output=True, text=True, timeout=180, cwd=tmp_path,
        preexec_fn=lambda: os.umask(umask),
    )
    assert proc.returncode == 0, proc.stderr
    state = out / ".batchinfer"
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.lstat().st_mode) for p in [state, *state.rglob("*")]}
    assert {".batchinfer/journal.jsonl", ".batchinfer/job.json", ".batchinfer/lock"} <= set(modes)
    assert modes == {name: 0o700 if (out / name).is_dir() else 0o600 for name in modes}


# ------------------------------------------------------------------ --output - and its temporary folder


STREAMS = {  # script keys, how the run ends -> (exit code, is the temporary folder kept)
    "succeeded": ({}, None, 0, False),
    "failed items within the thresholds": ({"HOLD_FAIL": "1"}, None, 0, True),
    "job failed": ({"HOLD_FAIL": "1"}, {"error_threshold": 0}, 1, True),
    "SIGTERM": ({}, "SIGTERM", 143, True),
    "Ctrl-C": ({}, "SIGINT", 130, True),
    "closed pipe": ({}, "head", 141, False),
}


@pytest.mark.parametrize("case", STREAMS.values(), ids=STREAMS.keys())
def test_the_temporary_folder_of_output_dash_is_removed_unless_something_failed(tmp_path, data, run_marker, case):
    env_extra, how, code, kept = case
    (data / "f004-bad.txt").write_text("bad\n")
    spec = write_spec(tmp_path, data, **(how if isinstance(how, dict) else {}))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, MARKER: run_marker, "TMPDIR": str(tmp), **env_extra}
    command = [sys.executable, "-m", "batchinfer", "run", str(spec), "--output", "-"]
    if how in ("SIGTERM", "SIGINT", "head"):
        marker, release = tmp_path / "held", tmp_path / "release"
        proc = subprocess.Popen(command, env={**env, "HOLD_MARKER": str(marker), "HOLD_RELEASE": str(release)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, cwd=tmp_path)
        try:
            wait_until(marker.exists, proc, "run() on f010-hold.txt")
            if how == "head":  # like '| head -1': read a row, go away, then let the held mini-batch commit
                proc.stdout.readline()
                proc.stdout.close()
            else:
                os.kill(proc.pid, getattr(signal, how))
            release.touch()
            stderr = proc.communicate(timeout=60)[1].decode()
        finally:
            release.touch()
            if proc.poll() is None:
                proc.kill()
        returncode = proc.returncode
    else:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
        returncode, stderr = done.returncode, done.stderr
    assert returncode == code, stderr
    assert "Traceback" not in stderr
    left = list(tmp.iterdir())
    if kept:
        assert len(left) == 1 and (left[0] / "summary.json").exists(), left
        assert f"kept the temporary folder {left[0]}" in stderr
    else:
        assert left == [] and "temporary folder" not in stderr.replace("removed with their temporary folder", "")
